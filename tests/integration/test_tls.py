"""TLS: implicit TLS (RFC 8314), STLS (RFC 2595), protocol versions and ciphers, STARTTLS command
injection, broken TLS clients, the cleartext-login policy, curl over both TLS modes."""

import os
import poplib
import shutil
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from buzontest import TIME_SCALE, DEMO_PASS, DEMO_USER, Closed, Pop3, make_message
from tlstest import TPop3, capa_names, client_context, sasl_mechs, start_fails, tls_server


def _wait_alive(srv):
    """The server still serves a full plain session, and a TLS one when it has a TLS port."""
    c = srv.login()
    c.stat()
    c.quit()
    if srv.tls_port:
        t = TPop3(srv.tls_port, context=client_context(srv.ca))
        assert t.greeting.startswith("+OK"), t.greeting
        t.login()
        t.quit()
        t.close()


# ---------------------------------------------------------------------------------------------
# implicit TLS


def test_implicit_tls_poplib(make_server):
    srv = tls_server(make_server)
    srv.deliver(make_message("tls-one", b"over TLS\n"))
    ctx = client_context(srv.ca)
    p = poplib.POP3_SSL("localhost", srv.tls_port, context=ctx, timeout=10)
    try:
        assert p.getwelcome().startswith(b"+OK")
        assert p.sock.version() in ("TLSv1.3", "TLSv1.2")
        p.user(DEMO_USER)
        p.pass_(DEMO_PASS)
        assert p.stat()[0] == 1
        resp, lines, _ = p.retr(1)
        assert b"over TLS" in lines
        p.quit()
    finally:
        p.close()


def test_implicit_tls_openssl_s_client(make_server):
    srv = tls_server(make_server)
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.tls_port, "-quiet",
                        "-CAfile", srv.ca, "-verify_return_error", "-servername", "localhost",
                        "-verify_hostname", "localhost"],
                       input=b"CAPA\r\nQUIT\r\n", capture_output=True, timeout=15)
    out = r.stdout.decode("latin-1")
    assert out.startswith("+OK"), "s_client stdout %r stderr %r" % (out, r.stderr[-2000:])
    assert "\r\n.\r\n" in out and out.rstrip().splitlines()[-1].startswith("+OK"), out


@pytest.mark.parametrize("maximum,expect", [(ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
                                            (ssl.TLSVersion.TLSv1_2, "TLSv1.2")])
def test_implicit_tls_versions(make_server, maximum, expect):
    srv = tls_server(make_server, settings={"tls": {"min_version": "TLSv1.2"}})
    c = TPop3(srv.tls_port, context=client_context(srv.ca, maximum=maximum))
    assert c.sock.version() == expect
    assert c.greeting.startswith("+OK")
    c.login()
    c.quit()


def _expect_refused(port, ctx):
    """The TLS handshake must fail because of the server (an alert or a close), not our own config."""
    try:
        c = TPop3(port, context=ctx, timeout=5)
    except ssl.SSLError as e:
        if "NO_PROTOCOLS_AVAILABLE" in str(e) or "NO_CIPHERS_AVAILABLE" in str(e):
            pytest.skip("this client cannot offer the protocol at all: %s" % e)
        return str(e)
    except (ConnectionResetError, BrokenPipeError, Closed) as e:
        return str(e)
    v = c.sock.version()
    c.close()
    raise AssertionError("handshake with %s succeeded, should have been refused" % v)


def _old_tls_context(ca, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def test_tls11_refused(make_server):
    srv = tls_server(make_server)
    _expect_refused(srv.tls_port, _old_tls_context(srv.ca, ssl.TLSVersion.TLSv1_1))
    _wait_alive(srv)


def test_min_version_tls13_refuses_tls12(make_server):
    srv = tls_server(make_server, settings={"tls": {"min_version": "TLSv1.3"}})
    _expect_refused(srv.tls_port, client_context(srv.ca, maximum=ssl.TLSVersion.TLSv1_2))
    # and over STLS too
    c = TPop3(srv.port)
    c.ok("STLS")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        c.sock = client_context(srv.ca, maximum=ssl.TLSVersion.TLSv1_2).wrap_socket(
            c.sock, server_hostname="localhost")
    c.close()
    t = TPop3(srv.tls_port, context=client_context(srv.ca))
    assert t.sock.version() == "TLSv1.3"
    t.login()
    t.quit()


def test_ciphers_and_ciphersuites_config(make_server):
    srv = tls_server(make_server, settings={"tls": {
        "ciphers": "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"}})
    c = TPop3(srv.tls_port, context=client_context(srv.ca, maximum=ssl.TLSVersion.TLSv1_2))
    assert c.sock.cipher()[0] == "ECDHE-ECDSA-CHACHA20-POLY1305", c.sock.cipher()
    c.quit()
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    assert c.sock.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256", c.sock.cipher()
    c.quit()


def test_implicit_tls_capa_has_no_stls(make_server):
    srv = tls_server(make_server)
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    caps = c.capa()
    assert "STLS" not in capa_names(caps), caps
    assert "USER" in capa_names(caps), caps
    r = c.cmd("STLS")
    assert r.startswith("-ERR"), "STLS on the implicit-TLS port -> %r" % r
    # still usable
    c.login()
    c.quit()


# ---------------------------------------------------------------------------------------------
# STLS


def test_stls_poplib(make_server):
    srv = tls_server(make_server, implicit=False)
    srv.deliver(make_message("stls-one", b"after STLS\n"))
    p = poplib.POP3("127.0.0.1", srv.port, timeout=10)
    try:
        assert "STLS" in p.capa()
        p.stls(client_context(srv.ca), )
        assert isinstance(p.sock, ssl.SSLSocket)
        assert "STLS" not in p.capa()
        p.user(DEMO_USER)
        p.pass_(DEMO_PASS)
        resp, lines, _ = p.retr(1)
        assert b"after STLS" in lines
        p.quit()
    finally:
        p.close()


def test_stls_capa_before_and_after(make_server):
    srv = tls_server(make_server, implicit=False)
    c = TPop3(srv.port)
    before = c.capa()
    assert "STLS" in capa_names(before), before
    c.starttls(client_context(srv.ca))
    after = c.capa()
    assert "STLS" not in capa_names(after), after
    # RFC 2595 §4: a second STLS is refused
    assert c.cmd("STLS").startswith("-ERR")
    c.login()
    assert c.stat() == (0, 0)
    c.quit()


def test_stls_after_login_refused(make_server):
    srv = tls_server(make_server, implicit=False)
    c = TPop3(srv.port)
    c.login()
    r = c.cmd("STLS")
    assert r.startswith("-ERR"), "STLS in TRANSACTION -> %r" % r
    # still a working plaintext session
    assert c.stat() == (0, 0)
    c.quit()


def test_stls_without_tls_configured(server):
    c = server.connect()
    assert "STLS" not in capa_names(c.capa())
    r = c.cmd("STLS")
    assert r.startswith("-ERR"), r
    c.login()
    c.quit()


def test_stls_disabled_by_config(make_server):
    srv = tls_server(make_server, settings={"pop3": {"stls": "no"}})
    c = TPop3(srv.port)
    assert "STLS" not in capa_names(c.capa())
    assert c.cmd("STLS").startswith("-ERR")
    c.quit()
    # implicit TLS still works
    t = TPop3(srv.tls_port, context=client_context(srv.ca))
    t.login()
    t.quit()


def test_stls_injection_discarded(make_server):
    """CVE-2011-0411 class: commands pipelined behind STLS in the plaintext phase must be dropped."""
    srv = tls_server(make_server, implicit=False)
    c = TPop3(srv.port)
    c.send(b"STLS\r\nCAPA\r\n")
    r = c.readline()
    assert r.startswith("+OK"), r
    assert not c.buf, "plaintext after the STLS +OK: %r" % bytes(c.buf)
    # nothing else arrives in plaintext before our ClientHello
    c.sock.settimeout(0.5)
    try:
        extra = c.sock.recv(4096, socket.MSG_PEEK)
    except socket.timeout:
        extra = None
    c.sock.settimeout(10)
    assert extra is None, "server sent plaintext after STLS +OK: %r" % extra
    c.sock = client_context(srv.ca).wrap_socket(c.sock, server_hostname="localhost")
    c.send("NOOP\r\n")
    r = c.readline()
    assert r.startswith("-ERR"), ("first reply after the handshake must answer NOOP (-ERR in "
                                  "AUTHORIZATION), got %r: the injected CAPA was executed" % r)
    c.sock.settimeout(0.5)
    try:
        more = c.sock.recv(4096)
    except (socket.timeout, ssl.SSLWantReadError):
        more = b""
    c.sock.settimeout(10)
    assert not more and not c.buf, "unexpected data after the NOOP reply: %r" % (bytes(c.buf) + more)
    c.login()
    c.quit()


def test_stls_injection_with_credentials(make_server):
    """Injected USER/PASS behind STLS must not log the session in."""
    srv = tls_server(make_server, implicit=False)
    c = TPop3(srv.port)
    c.send(("STLS\r\nUSER %s\r\nPASS %s\r\n" % (DEMO_USER, DEMO_PASS)).encode())
    assert c.readline().startswith("+OK")
    c.sock = client_context(srv.ca).wrap_socket(c.sock, server_hostname="localhost")
    r = c.cmd("STAT")
    assert r.startswith("-ERR"), "STAT right after STLS must fail (not logged in), got %r" % r
    c.quit()


# ---------------------------------------------------------------------------------------------
# broken TLS clients


def _client_hello(ctx):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _login_when_free(srv, timeout=5.0):
    """Logs in over implicit TLS, retrying while the maildrop is still locked by a dying session."""
    deadline = time.monotonic() + timeout
    while True:
        c = TPop3(srv.tls_port, context=client_context(srv.ca))
        c.ok("USER " + DEMO_USER)
        r = c.cmd("PASS " + DEMO_PASS)
        if r.startswith("+OK"):
            return c
        c.close()
        assert r.startswith("-ERR [IN-USE]") and time.monotonic() < deadline, r
        time.sleep(0.1)


def test_drop_without_close_notify_after_login(make_server):
    srv = tls_server(make_server)
    srv.deliver(make_message("drop", b"x\n"))
    for mode in ("shutdown", "rst"):
        c = TPop3(srv.tls_port, context=client_context(srv.ca))
        c.login()
        c.ok("DELE 1")
        raw = c.sock
        if mode == "rst":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # close the TCP connection without a TLS close_notify
        fd = raw.detach()
        os.close(fd)
        # the session must end without committing the DELE, and the next client is served
        c2 = _login_when_free(srv)
        assert c2.stat()[0] == 1, "DELE of an aborted TLS session was applied (%s)" % mode
        c2.quit()
    _wait_alive(srv)


def test_drop_mid_handshake_and_garbage(make_server):
    srv = tls_server(make_server)
    ctx = client_context(srv.ca)
    hello = _client_hello(ctx)
    # 1. ClientHello, then drop before reading anything
    s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    s.sendall(hello)
    s.close()
    # 2. half a ClientHello, then drop
    s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    s.sendall(hello[: len(hello) // 2])
    s.close()
    # 3. garbage instead of a ClientHello: the server closes
    s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    s.sendall(b"USER demo\r\nPASS secret\r\n" + os.urandom(300))
    s.settimeout(5)
    got = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert b"+OK" not in got, "server answered POP3 in plaintext on the TLS port: %r" % got
    # 4. garbage after STLS
    c = Pop3(srv.port)
    c.ok("STLS")
    c.send(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 100)
    c.expect_closed(5)
    c.close()
    _wait_alive(srv)


def test_stalled_handshake_does_not_block_others(make_server):
    """One worker: a client that stops half-way through its handshake (ClientHello sent, never
    finishes) must not stop the worker from serving others."""
    srv = tls_server(make_server, workers=1)
    hello = _client_hello(client_context(srv.ca))
    stalled = []
    for port in (srv.tls_port, srv.port):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if port == srv.port:
            f = s.makefile("rb")
            assert f.readline().startswith(b"+OK")
            s.sendall(b"STLS\r\n")
            assert f.readline().startswith(b"+OK")
        s.sendall(hello)
        stalled.append(s)
    # also one that sent only a TCP connect and nothing at all
    s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    stalled.append(s)
    t0 = time.monotonic()
    _wait_alive(srv)
    assert time.monotonic() - t0 < 5, "serving others took %.1fs with stalled handshakes" % (time.monotonic() - t0)
    for s in stalled:
        s.close()
    _wait_alive(srv)


def test_tls_client_closes_properly(make_server):
    srv = tls_server(make_server)
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    c.login()
    c.send("QUIT\r\n")
    assert c.readline().startswith("+OK")
    c.expect_closed()
    c.sock.close()


# ---------------------------------------------------------------------------------------------
# cleartext policy


def test_cleartext_never_plain_connection(make_server):
    srv = tls_server(make_server, settings={"auth": {"cleartext": "never"}})
    c = TPop3(srv.port)
    caps = c.capa()
    assert "USER" not in capa_names(caps), caps
    mechs = sasl_mechs(caps) or []
    assert "PLAIN" not in mechs and "LOGIN" not in mechs, caps
    assert "STLS" in capa_names(caps)
    r = c.cmd("USER " + DEMO_USER)
    if r.startswith("+OK"):
        r = c.cmd("PASS " + DEMO_PASS)
    assert r.startswith("-ERR [AUTH]"), "USER/PASS without TLS under cleartext=never -> %r" % r
    assert c.cmd("STAT").startswith("-ERR")
    # after STLS the same connection may log in, and USER is announced
    c.starttls(client_context(srv.ca))
    caps = c.capa()
    assert "USER" in capa_names(caps), caps
    c.login()
    assert c.stat() == (0, 0)
    c.quit()


def test_cleartext_never_auth_plain_refused(make_server):
    srv = tls_server(make_server, settings={"auth": {"cleartext": "never"}})
    from tlstest import auth_login, auth_plain
    c = TPop3(srv.port)
    r = auth_plain(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("-ERR"), "AUTH PLAIN without TLS under cleartext=never -> %r" % r
    r = auth_login(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("-ERR"), "AUTH LOGIN without TLS under cleartext=never -> %r" % r
    assert c.cmd("STAT").startswith("-ERR")
    c.quit()
    t = TPop3(srv.tls_port, context=client_context(srv.ca))
    caps = t.capa()
    assert "USER" in capa_names(caps)
    mechs = sasl_mechs(caps) or []
    assert "PLAIN" in mechs and "LOGIN" in mechs, caps
    r = auth_plain(t, DEMO_USER, DEMO_PASS)
    assert r.startswith("+OK"), r
    t.quit()


@pytest.mark.parametrize("policy", ["always", "loopback"])
def test_cleartext_allowed_on_loopback(make_server, policy):
    srv = tls_server(make_server, settings={"auth": {"cleartext": policy}})
    c = TPop3(srv.port)
    caps = c.capa()
    assert "USER" in capa_names(caps), caps
    c.login()
    c.quit()
    # a second loopback address counts as loopback too
    c = TPop3(srv.port, source="127.0.0.2")
    c.login()
    c.quit()


def test_cleartext_never_without_tls_configured_still_starts(make_server):
    """With no TLS at all and cleartext=never, nothing can log in with a password; the server runs
    and says so rather than accepting plaintext."""
    srv = make_server(settings={"auth": {"cleartext": "never"}})
    c = srv.connect()
    assert "USER" not in capa_names(c.capa())
    r = c.cmd("USER " + DEMO_USER)
    if r.startswith("+OK"):
        r = c.cmd("PASS " + DEMO_PASS)
    assert r.startswith("-ERR [AUTH]"), r
    c.quit()


# ---------------------------------------------------------------------------------------------
# curl


def _curl():
    p = shutil.which("curl")
    if not p:
        pytest.skip("curl is not installed")
    return p


def test_curl_pop3s_and_stls(make_server):
    curl = _curl()
    srv = tls_server(make_server)
    msg = make_message("curl-tls", b"fetched by curl over TLS\n.dot line\n")
    srv.deliver(msg)
    from buzontest import retr_expected
    for url, extra in (("pop3s://localhost:%d/1" % srv.tls_port, ["-v"]),
                       ("pop3://localhost:%d/1" % srv.port, ["-v", "--ssl-reqd"])):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        r = subprocess.run([curl, "-sS", "--max-time", "20", "--cacert", srv.ca,
                            "--resolve", "localhost:%d:127.0.0.1" % port,
                            "-u", "%s:%s" % (DEMO_USER, DEMO_PASS)] + extra + [url],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, "curl %s exit %d: %s" % (url, r.returncode, r.stderr)
        assert r.stdout == retr_expected(msg), "curl %s got %r" % (url, r.stdout)
        assert b"SSL connection using TLSv1.3" in r.stderr, r.stderr[-3000:]


# ---------------------------------------------------------------------------------------------
# resumption, optional client certificates


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_session_resumption(make_server, maximum):
    srv = tls_server(make_server)
    ctx = client_context(srv.ca, maximum=maximum)
    c = TPop3(srv.tls_port, context=ctx)
    c.login()
    c.quit()  # reading replies lets the client take in a TLS 1.3 ticket
    sess = c.sock.session
    c.close()
    assert sess is not None
    raw = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
    try:
        assert s.session_reused, "TLS session (%s) not resumed" % s.version()
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"+OK")
    finally:
        s.close()


def test_client_ca_makes_certificates_optional(make_server):
    """With client_ca set, clients without a certificate still connect and log in as usual."""
    srv = tls_server(make_server, client_ca=True)
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    c.login()
    c.quit()
    c = TPop3(srv.port)
    c.starttls(client_context(srv.ca))
    c.login()
    c.quit()


def test_tls_config_errors_refuse_start(make_server):
    """A missing key file, or a key that does not match the certificate, stops the server at
    start with a message naming the problem, rather than running without TLS."""
    srv = tls_server(make_server, start=False)
    srv.settings["tls"]["key"] = srv.pki["client.key"]  # a key of another certificate
    srv.start(wait=False)
    try:
        srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("server started with a key that does not match the certificate")
    assert srv.proc.returncode != 0
    err = srv.stderr_text()
    assert "key" in err.lower(), err[-2000:]
    srv.proc = None
    srv.settings["tls"]["key"] = os.path.join(srv.base, "pki", "missing.key")
    srv.start(wait=False)
    try:
        srv.proc.wait(10)
    except subprocess.TimeoutExpired:
        raise AssertionError("server started with a missing key file")
    assert srv.proc.returncode != 0
    assert "missing.key" in srv.stderr_text(), srv.stderr_text()[-2000:]
    srv.proc = None


@pytest.mark.parametrize("change", [
    {"tls": {"min_version": "TLSv1.1"}},
    {"tls": {"min_version": "SSLv3"}},
    {"tls": {"ciphers": "NO-SUCH-CIPHER"}},
    {"tls": {"ciphersuites": "TLS_NO_SUCH_SUITE"}},
    {"tls": {"client_ca": "/nonexistent/ca.pem"}},
    {"tls": {"cert": None, "key": None}},  # listen_tls without any certificate
], ids=["tls11", "sslv3", "ciphers", "ciphersuites", "client_ca-missing", "listen_tls-without-cert"])
def test_bad_tls_config_refuses_start(make_server, change):
    srv = tls_server(make_server, start=False)
    for section, kv in change.items():
        srv.settings[section].update(kv)
    out = start_fails(srv)
    assert "buzon.conf" in out or "/" in out, out[-2000:]


def test_listen_tls_without_cert_never_serves_plaintext(make_server):
    """Even if the server were to start with listen_tls and no certificate, that port must never
    speak POP3 in plaintext."""
    srv = tls_server(make_server, start=False)
    srv.settings["tls"] = {}
    srv.start(wait=False)
    try:
        srv.proc.wait(0.5 * TIME_SCALE)
        srv.proc = None
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        s = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=3)
        s.settimeout(2)
        try:
            data = s.recv(100)
        except (socket.timeout, ConnectionResetError):
            data = b""
        s.close()
        assert not data.startswith(b"+OK"), "implicit-TLS port greets in plaintext: %r" % data
    except ConnectionRefusedError:
        pass


# ---------------------------------------------------------------------------------------------
# bulk data over TLS


def _big_message(mb, tag):
    import hashlib
    lines = []
    i = 0
    size = 0
    while size < mb << 20:
        h = hashlib.sha256(b"%d" % i).hexdigest()
        line = (("." if i % 7 == 0 else "") + h * 2 + "\n").encode()
        lines.append(line)
        size += len(line)
        i += 1
    return make_message(tag, b"".join(lines))


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "stls"])
def test_large_retr_over_tls_slow_reader(make_server, implicit):
    from buzontest import retr_expected
    srv = tls_server(make_server)
    big = _big_message(6, "big-%s" % implicit)
    small = make_message("small-after", b"tail\n")
    srv.deliver(big)
    srv.deliver(small)
    if implicit:
        c = TPop3(srv.tls_port, context=client_context(srv.ca))
    else:
        c = TPop3(srv.port)
        c.starttls(client_context(srv.ca))
    c.login()
    # pipeline two RETRs and QUIT, then let the server run into a full socket before reading
    c.send("RETR 1\r\nRETR 2\r\nQUIT\r\n")
    time.sleep(1.0)
    assert c.readline().startswith("+OK")
    from buzontest import undot
    got1 = undot(c.read_multi_wire())
    assert got1 == retr_expected(big), "message 1 differs over TLS (%d vs %d bytes)" % (len(got1), len(retr_expected(big)))
    assert c.readline().startswith("+OK")
    assert undot(c.read_multi_wire()) == retr_expected(small)
    assert c.readline().startswith("+OK"), "QUIT"
    c.expect_closed()
    c.close()


def test_many_pipelined_commands_over_tls(make_server):
    srv = tls_server(make_server)
    for i in range(20):
        srv.deliver(make_message("pipe-%d" % i, b"message %d\n" % i))
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    c.login()
    c.send("".join("RETR %d\r\nUIDL %d\r\nNOOP\r\n" % (i, i) for i in range(1, 21)))
    for i in range(1, 21):
        assert c.readline().startswith("+OK")
        body = c.read_multi_wire()
        assert b"message %d\r\n" % (i - 1) in body
        assert c.readline().startswith("+OK %d " % i)
        assert c.readline().startswith("+OK")
    c.quit()


def test_sigterm_with_open_tls_sessions(make_server):
    """SIGTERM while TLS sessions are logged in, mid-handshake and idle before the handshake: the
    server exits 0 promptly and the logged-in client sees its connection end."""
    srv = tls_server(make_server)
    srv.deliver(make_message("term", b"x\n"))
    live = TPop3(srv.tls_port, context=client_context(srv.ca))
    live.login()
    stls = TPop3(srv.port)
    stls.starttls(client_context(srv.ca))
    hello = _client_hello(client_context(srv.ca))
    half = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    half.sendall(hello)
    idle = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.stop()  # asserts exit 0 within 10 s and no sanitizer report
    assert time.monotonic() - t0 < 5, "SIGTERM took %.1fs" % (time.monotonic() - t0)
    live.expect_closed(5)
    for s in (live, stls):
        s.close()
    half.close()
    idle.close()
    # the DELE-less session changed nothing
    assert len(srv.files()) == 1


def test_cleartext_loopback_ipv6(make_server):
    from buzontest import have_ipv6
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")
    srv = make_server(ipv6=True, settings={"auth": {"cleartext": "loopback"}})
    c = Pop3(srv.port, host="::1")
    assert "USER" in capa_names(c.capa())
    c.login()
    c.quit()


def _plain_when_slot_free(srv, timeout=5.0):
    """A plain connection with a +OK greeting, retrying while closed connections still hold their
    pre-login slots (the server notices closes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = Pop3(srv.port)
            if c.greeting.startswith("+OK"):
                return c
            c.close()
        except (OSError, Closed):
            pass
        assert time.monotonic() < deadline, "no pre-login slot came free"
        time.sleep(0.05)


def test_prelogin_slots_released_after_tls_failures(make_server):
    """max_prelogin_per_ip = 3: every kind of failed or abandoned TLS connection must give its
    slot back, or a few broken clients lock their address out."""
    srv = tls_server(make_server, settings={"pop3": {"max_prelogin_per_ip": "3"}})
    ctx = client_context(srv.ca)
    hello = _client_hello(ctx)
    for round_ in range(3):
        for port, payload in ((srv.tls_port, hello), (srv.tls_port, hello[:20]),
                              (srv.tls_port, b"garbage\r\n" * 50), (srv.tls_port, b"")):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if payload:
                s.sendall(payload)
            if round_ == 1:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        # STLS then garbage, STLS then drop
        for payload in (b"\x16\x03\x01\x00\x05hello", b""):
            c = _plain_when_slot_free(srv)
            c.ok("STLS")
            if payload:
                c.send(payload)
            c.close()
        # a TLS client that completes the handshake and drops without close_notify
        try:
            TPop3(srv.tls_port, context=ctx).close()
        except (OSError, Closed):
            pass  # refused while earlier closes are still being noticed
    # all slots must come back: 3 simultaneous pre-login connections are allowed
    def three_ok():
        cs = []
        try:
            for _ in range(3):
                c = TPop3(srv.tls_port, context=ctx, timeout=3)
                cs.append(c)
                if not c.greeting.startswith("+OK"):
                    return False
            return True
        except (OSError, Closed):
            return False
        finally:
            for c in cs:
                c.close()
    from buzontest import wait_until
    assert wait_until(three_ok, timeout=5, interval=0.3), \
        "pre-login slots leaked by failed TLS connections:\n" + srv.stderr_text()[-3000:]


def test_prelogin_limit_counts_stalled_handshakes(make_server):
    srv = tls_server(make_server, settings={"pop3": {"max_prelogin_per_ip": "2"}})
    hold = [socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) for _ in range(2)]
    time.sleep(0.2)
    refused = False
    try:
        c = TPop3(srv.tls_port, context=client_context(srv.ca), timeout=5)
        refused = c.greeting.startswith("-ERR")
        c.close()
    except (OSError, Closed):
        refused = True
    assert refused, "a third pre-login connection from the address was served (limit 2)"
    # another address is not affected
    c = TPop3(srv.tls_port, context=client_context(srv.ca), source="127.0.0.2")
    c.login()
    c.quit()
    for s in hold:
        s.close()


def test_tls12_client_renegotiation(make_server):
    """A TLS 1.2 client asking to renegotiate: refused (no_renegotiation) or done, but the server
    keeps running and serving."""
    srv = tls_server(make_server)
    p = subprocess.Popen(["openssl", "s_client", "-tls1_2", "-crlf", "-connect", "127.0.0.1:%d" % srv.tls_port,
                          "-CAfile", srv.ca], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        p.stdin.write(b"CAPA\n")
        p.stdin.flush()
        time.sleep(0.3)
        p.stdin.write(b"R\n")
        p.stdin.flush()
        time.sleep(0.5)
        for action in (lambda: p.stdin.write(b"QUIT\n"), p.stdin.close):
            try:
                action()
            except (BrokenPipeError, ValueError):
                pass
        p.wait(10)
        out = p.stdout.read().decode("latin-1")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    assert "+OK Capability list follows" in out, out[-2000:]
    assert "RENEGOTIATING" in out, out[-2000:]
    _wait_alive(srv)
