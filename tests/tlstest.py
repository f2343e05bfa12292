"""TLS and SASL helpers for buzon's tests: a throw-away PKI made with the openssl CLI, a server
with TLS configured, a raw POP3 client that can speak TLS (implicit or after STLS) and bind a
chosen loopback source address, and client sides of SCRAM, PLAIN, LOGIN, CRAM-MD5 and APOP.

Standard library only (ssl, hashlib, hmac, base64, ctypes for the TLS exporter)."""

import atexit
import base64
import ctypes
import hashlib
import hmac
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from buzontest import IO_TIMEOUT, Closed, Pop3, free_port

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
SERVER_NAME = "localhost"

# ---------------------------------------------------------------------------------------------
# Test PKI (made once per process, copied into each server's directory)

_PKI_DIR = None
PKI_FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "rogue-client.pem",
             "rogue-client.key", "rogue-ca.pem", "client-email.pem", "client-email.key")


def _openssl(*args, cwd):
    r = subprocess.run([OPENSSL] + list(args), cwd=cwd, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr.decode(errors="replace")))


def _make_ca(d, name, cn):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", "3", "-sha256",
             "-subj", "/CN=" + cn,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d, name, ca, subj, ext):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr", "-subj", subj, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
             "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-sha256",
             "-extfile", name + ".ext", cwd=d)


def pki_dir():
    """Directory with ca.pem, server.pem/key (localhost, 127.0.0.1), client.pem/key (CN=demo) and a
    client certificate for CN=demo from an unrelated CA (rogue-client.pem/key)."""
    global _PKI_DIR
    if _PKI_DIR is not None:
        return _PKI_DIR
    d = tempfile.mkdtemp(prefix="buzon-pki-")
    atexit.register(shutil.rmtree, d, True)
    _make_ca(d, "ca", "buzon test CA")
    _make_ca(d, "rogue-ca", "rogue test CA")
    _make_leaf(d, "server", "ca", "/CN=localhost",
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    _make_leaf(d, "client", "ca", "/CN=demo", client_ext)
    _make_leaf(d, "rogue-client", "rogue-ca", "/CN=demo", client_ext)
    _make_leaf(d, "client-email", "ca", "/CN=demo", client_ext + "subjectAltName=email:mail@example.org\n")
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o644)
    os.chmod(d, 0o755)
    _PKI_DIR = d
    return d


def cert_der(pem_path):
    with open(pem_path) as f:
        pem = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    return ssl.PEM_cert_to_DER_cert(m.group(0))


# ---------------------------------------------------------------------------------------------
# A server with TLS


def install_pki(srv):
    """Copies the PKI into the server's directory, readable by the server's user. Returns paths."""
    src = pki_dir()
    dst = os.path.join(srv.base, "pki")
    os.makedirs(dst, exist_ok=True)
    paths = {}
    for name in PKI_FILES:
        p = os.path.join(dst, name)
        shutil.copyfile(os.path.join(src, name), p)
        os.chmod(p, 0o600 if name.endswith(".key") else 0o644)
        if srv.run_as:
            os.chown(p, srv._uid, srv._gid)
        paths[name] = p
    os.chmod(dst, 0o755)
    return paths


def tls_server(make_server, settings=None, implicit=True, client_ca=False, users=(("demo", "secret"),),
               scheme="PLAIN", start=True, workers=1):
    """A server with [tls] configured (cert, key, optionally client_ca), a plain listener (STLS) and,
    when implicit, an implicit-TLS listener on srv.tls_port. settings are merged over that (the
    [tls] section too, so a test can override min_version or point cert elsewhere). Users are
    added after the config is complete. srv.pki holds the PKI paths, srv.ca the CA file."""
    settings = {k: dict(v) for k, v in (settings or {}).items()}
    srv = make_server(settings=None, users=(), start=False, workers=workers)
    pki = install_pki(srv)
    srv.pki = pki
    srv.ca = pki["ca.pem"]
    tls = {"cert": pki["server.pem"], "key": pki["server.key"]}
    if client_ca:
        tls["client_ca"] = pki["ca.pem"]
    srv.settings["tls"] = tls
    srv.tls_port = None
    if implicit:
        srv.tls_port = free_port()
        srv.settings["pop3"]["listen_tls"] = "127.0.0.1:%d" % srv.tls_port
    for section, kv in settings.items():
        srv.settings.setdefault(section, {}).update(kv)
    srv.write_config()
    for u, p in users:
        srv.add_user(u, p, scheme=scheme)
    if start:
        start_tls_server(srv)
    return srv


def start_tls_server(srv):
    srv.start()
    if getattr(srv, "tls_port", None):
        wait_tls_ready(srv)
    return srv


def wait_tls_ready(srv, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            c = TPop3(srv.tls_port, context=client_context(srv.ca), timeout=2)
            try:
                c.cmd("QUIT")
            finally:
                c.close()
            return
        except (OSError, Closed, AssertionError) as e:
            last = e
            if srv.proc.poll() is not None:
                break
        time.sleep(0.05)
    raise AssertionError("implicit TLS listener on %d not ready: %r\n%s" % (srv.tls_port, last,
                                                                         srv.stderr_text()[-3000:]))


# ---------------------------------------------------------------------------------------------
# Clients


def client_context(ca, minimum=None, maximum=None, cert=None, key=None):
    ctx = ssl.create_default_context(cafile=ca)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class TPop3(Pop3):
    """Pop3 that can bind a source address, start with implicit TLS, or switch to TLS after STLS."""

    def __init__(self, port, context=None, host="127.0.0.1", timeout=IO_TIMEOUT, read_greeting=True,
                 source=None, server_hostname=SERVER_NAME):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.buf = bytearray()
        try:
            self.sock.connect((host, port))
            if context is not None:
                self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
            self.greeting = self.readline() if read_greeting else None
        except BaseException:
            self.sock.close()
            raise

    def _fill(self):
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
            data = b""
        if not data:
            raise Closed("connection closed by server; unread: %r" % bytes(self.buf[:200]))
        self.buf += data

    def expect_closed(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("server did not close the connection; unread %r" % bytes(self.buf[:200]))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError, BrokenPipeError):
                return
            except socket.timeout:
                continue
            except ssl.SSLError:
                return
            if not data:
                return
            self.buf += data

    def starttls(self, context, server_hostname=SERVER_NAME):
        r = self.cmd("STLS")
        assert r.startswith("+OK"), "STLS -> %r" % r
        assert not self.buf, "plaintext after the STLS +OK: %r" % bytes(self.buf)
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        return r

    @property
    def tls(self):
        return isinstance(self.sock, ssl.SSLSocket)


def capa_names(caps):
    return {x.split()[0].upper() for x in caps if x.strip()}


def sasl_mechs(caps):
    """The mechanisms of the CAPA SASL line (None if there is no such line)."""
    lines = [x for x in caps if x.split() and x.split()[0].upper() == "SASL"]
    assert len(lines) <= 1, "several SASL lines: %r" % caps
    if not lines:
        return None
    return [m.upper() for m in lines[0].split()[1:]]


# ---------------------------------------------------------------------------------------------
# SASL client sides


def b64(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    return base64.b64decode(text.encode("ascii"), validate=True)


def challenge(line):
    """The decoded data of a '+ base64' continuation line (asserts its form)."""
    assert line.startswith("+ ") or line == "+", "expected a '+ ' challenge, got %r" % line
    return unb64(line[2:])


def plain_message(user, password, authzid=""):
    return (authzid + "\0" + user + "\0" + password).encode("utf-8")


def send_utf8(c, line):
    """Pop3.cmd() encodes str as latin-1; send UTF-8 text as bytes."""
    return c.cmd(line.encode("utf-8"))


def auth_plain(c, user, password, authzid="", initial=True):
    msg = b64(plain_message(user, password, authzid))
    if initial:
        return send_utf8(c, "AUTH PLAIN " + msg)
    r = c.cmd("AUTH PLAIN")
    assert r == "+ ", "AUTH PLAIN without initial response -> %r (expected an empty challenge '+ ')" % r
    return c.cmd(msg)


def auth_login(c, user, password):
    r = c.cmd("AUTH LOGIN")
    if not r.startswith("+"):
        return r
    assert challenge(r) == b"Username:", "LOGIN first challenge %r" % r
    r = c.cmd(b64(user))
    if not r.startswith("+"):
        return r
    assert challenge(r) == b"Password:", "LOGIN second challenge %r" % r
    return c.cmd(b64(password))


def auth_cram_md5(c, user, password):
    r = c.cmd("AUTH CRAM-MD5")
    if not r.startswith("+"):
        return r
    ch = challenge(r)
    assert re.fullmatch(rb"<[^<>]+@[^<>]+>", ch), "CRAM-MD5 challenge is not <...@...>: %r" % ch
    digest = hmac.new(password.encode("utf-8"), ch, hashlib.md5).hexdigest()
    return send_utf8(c, b64(user + " " + digest))


def apop_digest(greeting, password):
    m = re.search(r"(<[^<>]*@[^<>]*>)\s*$", greeting)
    assert m, "greeting has no RFC 1939 timestamp: %r" % greeting
    return hashlib.md5((m.group(1) + password).encode("utf-8")).hexdigest()


def saslname(name):
    return name.replace("=", "=3D").replace(",", "=2C")


class ScramResult:
    def __init__(self):
        self.server_first = None
        self.attrs = {}
        self.server_final = None
        self.final_reply = None  # the -ERR/+OK that ends the exchange
        self.ok = False


def scram(c, mech, user, password, cb_type=None, cb_data=b"", flag=None, authzid="", initial=True,
          check_nonce=True, cbind_override=None, nonce_override=None, proof_override=None):
    """Runs a SCRAM exchange over c. mech: SCRAM-SHA-1, SCRAM-SHA-256 or a -PLUS one.
    cb_type: channel-binding type name for -PLUS ("tls-exporter", "tls-server-end-point");
    flag: gs2 cbind flag override ("n", "y", or "p=..."). Returns a ScramResult; asserts the
    protocol form (server nonce extends ours, server signature matches) whenever the server goes on."""
    hname = "sha256" if "SHA-256" in mech.upper() else "sha1"
    H = lambda d: hashlib.new(hname, d).digest()  # noqa: E731
    HMAC = lambda k, d: hmac.new(k, d, hname).digest()  # noqa: E731
    res = ScramResult()
    if flag is None:
        flag = ("p=" + cb_type) if cb_type else "n"
    gs2 = flag + "," + ("a=" + saslname(authzid) if authzid else "") + ","
    cnonce = base64.b64encode(os.urandom(18)).decode().replace("=", "")
    cfb = "n=" + saslname(user) + ",r=" + cnonce
    cf = gs2 + cfb
    if initial:
        r = send_utf8(c, "AUTH %s %s" % (mech, b64(cf)))
    else:
        r = c.cmd("AUTH " + mech)
        if r != "+ ":
            res.final_reply = r
            return res
        r = send_utf8(c, b64(cf))
    if not r.startswith("+"):
        res.final_reply = r
        return res
    sf = challenge(r).decode("utf-8")
    res.server_first = sf
    attrs = dict(kv.split("=", 1) for kv in sf.split(","))
    res.attrs = attrs
    assert "m" not in attrs, "server-first has a mandatory extension: %r" % sf
    assert set(("r", "s", "i")) <= set(attrs), "server-first lacks r/s/i: %r" % sf
    snonce = attrs["r"]
    if check_nonce:
        assert snonce.startswith(cnonce) and len(snonce) > len(cnonce), \
            "server nonce does not extend the client nonce: %r" % sf
    assert re.fullmatch(r"[\x21-\x2b\x2d-\x7e]+", snonce), "server nonce not printable: %r" % snonce
    salt = base64.b64decode(attrs["s"], validate=True)
    assert len(salt) >= 8, "SCRAM salt of %d bytes" % len(salt)
    iters = int(attrs["i"])
    salted = hashlib.pbkdf2_hmac(hname, password.encode("utf-8"), salt, iters)
    client_key = HMAC(salted, b"Client Key")
    stored_key = H(client_key)
    server_key = HMAC(salted, b"Server Key")
    cbind = cbind_override if cbind_override is not None else gs2.encode() + (cb_data or b"")
    cwp = "c=" + b64(cbind) + ",r=" + (nonce_override if nonce_override is not None else snonce)
    authmsg = (cfb + "," + sf + "," + cwp).encode("utf-8")
    sig = HMAC(stored_key, authmsg)
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    if proof_override is not None:
        proof = proof_override
    r = c.cmd(b64(cwp + ",p=" + b64(proof)))
    if r.startswith("+"):
        fin = challenge(r).decode("utf-8")
        res.server_final = fin
        if fin.startswith("v="):
            expect = b64(HMAC(server_key, authmsg))
            assert fin == "v=" + expect, "server signature wrong: %r, expected v=%s" % (fin, expect)
            r = c.cmd("")
        else:
            assert fin.startswith("e="), "server-final is neither v= nor e=: %r" % fin
            r = c.cmd("*")
    res.final_reply = r
    res.ok = r.startswith("+OK")
    if res.ok:
        assert res.server_final is not None and res.server_final.startswith("v="), \
            "+OK without a verified server signature (v=) first: %r" % res.server_final
    return res


# ---------------------------------------------------------------------------------------------
# Channel bindings


def tls_server_end_point(ssock):
    """RFC 5929 tls-server-end-point for a SHA-256 signed server certificate."""
    return hashlib.sha256(ssock.getpeercert(binary_form=True)).digest()


def tls_exporter(ssock, length=32):
    """RFC 9266 tls-exporter data of an established ssl.SSLSocket, or None if it cannot be had.
    Python 3.11 has no API for it, so this reads the SSL* out of the _ssl object (whose layout is
    checked against the context pointer next to it first) and calls OpenSSL through ctypes."""
    try:
        import _ssl
        obj = ssock._sslobj
        if obj is None:
            return None
        base = id(obj)
        ptr = ctypes.sizeof(ctypes.c_void_p)
        head = 2 * ptr  # ob_refcnt, ob_type
        # PySSLSocket: PyObject_HEAD; PyObject *Socket; SSL *ssl; PySSLContext *ctx; ...
        if ctypes.c_void_p.from_address(base + head + 2 * ptr).value != id(ssock.context):
            return None
        sslp = ctypes.c_void_p.from_address(base + head + ptr).value
        lib = ctypes.CDLL(_ssl.__file__)
        f = lib.SSL_export_keying_material
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                      ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
        out = ctypes.create_string_buffer(length)
        label = b"EXPORTER-Channel-Binding"
        if f(sslp, out, length, label, len(label), None, 0, 0) != 1:
            return None
        return out.raw
    except Exception:
        return None


def start_fails(srv, timeout=10):
    """Starts srv expecting `buzon serve` to refuse to run; returns its output."""
    srv.start(wait=False)
    proc = srv.proc
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        srv.kill()
        raise AssertionError("server started with the bad configuration:\n" + render(srv))
    srv.proc = None
    assert proc.returncode != 0, "exit status 0 with a bad configuration"
    return srv.stderr_text()


def render(srv):
    with open(srv.conf) as f:
        return f.read()
