"""TLS: implicit TLS (RFC 8314), STLS (RFC 2595), protocol versions and ciphers, STARTTLS command
injection, broken TLS clients, the cleartext-login policy, curl over both TLS modes."""

import os
import poplib
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from buzontest import DEMO_PASS, DEMO_USER, Closed, Pop3, make_message
from tlstest import (TPop3, capa_names, client_context, sasl_mechs, start_tls_server, tls_server)


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
