"""PROXY protocol v1 and v2 on [pop3] listen_proxy and listen_tls_proxy: the client address of the
header reaches logs, per-IP limits and bans; commands glued to the header and TLS right after it
work; malformed, truncated, oversized and late headers are refused without a greeting; connections
from outside proxy_trusted are refused."""

import socket
import struct
import threading
import time

from buzontest import DEMO_PASS, DEMO_USER, IO_TIMEOUT, free_port, wait_until
from tlstest import SERVER_NAME, TPop3, client_context, tls_server

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1_header(src, sport=40000, dport=110):
    """A v1 line from src (IPv4 or IPv6) to the matching loopback address."""
    if ":" in src:
        return ("PROXY TCP6 %s ::1 %d %d\r\n" % (src, sport, dport)).encode()
    return ("PROXY TCP4 %s 127.0.0.1 %d %d\r\n" % (src, sport, dport)).encode()


def v2_header(src=None, sport=40000, dport=110, local=False, tlvs=b""):
    """A v2 header: PROXY from src (TCP over IPv4 or IPv6), or no addresses (UNSPEC) when src is
    None; LOCAL when local. tlvs are appended to the address block."""
    if src is None:
        fam, block = 0x00, b""
    elif ":" in src:
        fam = 0x21
        block = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1")
    else:
        fam = 0x11
        block = socket.inet_aton(src) + socket.inet_aton("127.0.0.1")
    if block:
        block += struct.pack(">HH", sport, dport)
    payload = block + tlvs
    return V2_SIGNATURE + bytes([0x20 if local else 0x21, fam]) + struct.pack(">H", len(payload)) + payload


class ProxiedPop3(TPop3):
    """A client as a proxy relays it: the PROXY header (with whatever is glued to it) goes first,
    then POP3, over TLS when context is given."""

    def __init__(self, port, header, context=None, read_greeting=True, timeout=IO_TIMEOUT):
        self.buf = bytearray()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock.sendall(header)
            if context is not None:
                self.sock = context.wrap_socket(self.sock, server_hostname=SERVER_NAME)
            self.greeting = self.readline() if read_greeting else None
        except BaseException:
            self.sock.close()
            raise


def proxy_server(make_server, trusted="127.0.0.0/8", pop3=None, auth=None):
    """A server with a plain listener and a PROXY listener on srv.proxy_port. Cleartext logins are
    allowed everywhere: the clients here claim non-loopback addresses."""
    port = free_port()
    settings = {"pop3": {"listen_proxy": "127.0.0.1:%d" % port, "proxy_trusted": trusted},
                "auth": {"cleartext": "always"}}
    settings["pop3"].update(pop3 or {})
    settings["auth"].update(auth or {})
    srv = make_server(settings=settings)
    srv.proxy_port = port
    return srv


def logged(srv, *parts):
    """Waits until one line of the server log holds every part; returns that line."""
    def find():
        for line in srv.stderr_text().splitlines():
            if all(p in line for p in parts):
                return line
        return None
    line = wait_until(find, timeout=5)
    assert line, "no line with %r in the log:\n%s" % (parts, srv.stderr_text()[-4000:])
    return line


def session_end_line(srv, ip):
    """The session_end line of demo's session from ip through the local proxy (waits for it)."""
    return logged(srv, "event=session_end ", " user=demo ip=%s proxy=127.0.0.1 " % ip)


def assert_closed_without_greeting(sock, timeout=5.0):
    """The server closes the connection and sends nothing."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    assert data == b"", "server sent %r on a refused PROXY connection" % data


def test_headers_give_the_client_address(make_server):
    srv = proxy_server(make_server)
    ssl_tlv = b"\x01\x00\x00\x00\x00" + b"\x21\x00\x07TLSv1.3" + b"\x22\x00\x04demo"
    tlvs = (b"\x01\x00\x04pop3" + b"\x02\x00\x0bexample.org" + b"\x04\x00\x00"
            + b"\x20" + struct.pack(">H", len(ssl_tlv)) + ssl_tlv)
    cases = [
        (v1_header("192.0.2.10"), "192.0.2.10"),
        (v1_header("2001:db8::7"), "2001:db8::7"),
        (v2_header("198.51.100.20"), "198.51.100.20"),
        (v2_header("2001:db8::8"), "2001:db8::8"),
        (v2_header("203.0.113.5", tlvs=tlvs), "203.0.113.5"),
    ]
    for header, ip in cases:
        c = ProxiedPop3(srv.proxy_port, header)
        assert c.greeting.startswith("+OK"), (header, c.greeting)
        c.login()
        c.quit()
        c.close()
        session_end_line(srv, ip)
    # v2 LOCAL (health checks), v1 UNKNOWN and v2 UNSPEC keep the connection's own address
    for header in (v2_header(local=True), b"PROXY UNKNOWN\r\n", v2_header(None)):
        c = ProxiedPop3(srv.proxy_port, header)
        c.login()
        c.quit()
        c.close()
    own = " user=demo ip=127.0.0.1 proxy=127.0.0.1 "
    assert wait_until(lambda: srv.stderr_text().count(own) == 3, timeout=5), srv.stderr_text()[-3000:]
    # a direct session has no proxy= field
    c = srv.login()
    c.quit()
    c.close()
    line = logged(srv, "event=session_end ", " user=demo ip=127.0.0.1 tls=no ")
    assert "proxy=" not in line, line


def test_commands_glued_to_the_header(make_server):
    srv = proxy_server(make_server)
    pipeline = b"CAPA\r\nUSER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n" % (DEMO_USER.encode(), DEMO_PASS.encode())
    for header, ip in ((v1_header("192.0.2.30"), "192.0.2.30"), (v2_header("192.0.2.31"), "192.0.2.31")):
        c = ProxiedPop3(srv.proxy_port, header + pipeline)
        assert c.greeting.startswith("+OK"), c.greeting
        assert c.readline().startswith("+OK")
        assert "USER" in c.multi_lines()
        for _ in range(4):  # USER, PASS, STAT, QUIT
            r = c.readline()
            assert r.startswith("+OK"), r
        c.expect_closed()
        c.close()
        session_end_line(srv, ip)


def test_limits_and_bans_follow_the_header_address(make_server):
    srv = proxy_server(make_server, pop3={"max_prelogin_per_ip": "2"},
                       auth={"ban_failures": "3", "ban_window": "30s", "ban_time": "30s"})
    # the per-IP pre-login limit counts the header's client, not the proxy
    held = [ProxiedPop3(srv.proxy_port, v1_header("192.0.2.50")) for _ in range(2)]
    for c in held:
        assert c.greeting.startswith("+OK"), c.greeting
    third = ProxiedPop3(srv.proxy_port, v2_header("192.0.2.50"))
    assert third.greeting.startswith("-ERR [SYS/TEMP]"), third.greeting
    third.close()
    logged(srv, "event=connection_refused ip=192.0.2.50 reason=max_prelogin_per_ip")
    for c in (ProxiedPop3(srv.proxy_port, v1_header("192.0.2.51")), srv.connect(), srv.connect()):
        assert c.greeting.startswith("+OK"), c.greeting
        c.close()
    for c in held:
        c.close()

    # failed logins from the header's client ban that client, not the proxy
    for i in range(3):
        c = ProxiedPop3(srv.proxy_port, v1_header("192.0.2.66"))
        c.ok("USER " + DEMO_USER)
        assert c.cmd("PASS wrong-%d" % i).startswith("-ERR [AUTH]")
        c.close()
    logged(srv, "event=ban ip=192.0.2.66 ")

    def banned():
        c = ProxiedPop3(srv.proxy_port, v2_header("192.0.2.66"))
        try:
            return c.greeting.startswith("-ERR")
        finally:
            c.close()
    assert wait_until(banned, timeout=3), "the header's client was not banned"
    logged(srv, "event=connection_refused ip=192.0.2.66 reason=banned")
    for c in (ProxiedPop3(srv.proxy_port, v1_header("192.0.2.67")), srv.connect()):
        assert c.greeting.startswith("+OK"), c.greeting
        c.login()
        c.quit()
        c.close()


def test_implicit_tls_after_a_v2_header(make_server):
    port = free_port()
    srv = tls_server(make_server, settings={"pop3": {"listen_tls_proxy": "127.0.0.1:%d" % port,
                                                     "proxy_trusted": "127.0.0.1"}})
    c = ProxiedPop3(port, v2_header("192.0.2.40"), context=client_context(srv.ca))
    assert c.greeting.startswith("+OK"), c.greeting
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    c.login()
    c.quit()
    c.close()
    line = session_end_line(srv, "192.0.2.40")
    assert " tls=TLSv1." in line, line


def test_malformed_headers_are_refused(make_server):
    # login_timeout 5 s also bounds the wait for a header (10 s otherwise)
    srv = proxy_server(make_server, pop3={"login_timeout": "5s"})

    # a proxy that trickles its header a byte at a time still runs out of time: the deadline
    # counts from the connection, not from the last byte
    slow = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=10)
    trickled = {}

    def trickle():
        t0 = time.monotonic()
        try:
            for b in b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2"[:20]:
                slow.sendall(bytes([b]))
                time.sleep(0.4)
        except OSError:
            pass  # the server closed while we were still sending
        try:
            trickled["data"] = slow.recv(100)
        except ConnectionResetError:
            trickled["data"] = b""
        except OSError as e:
            trickled["data"] = repr(e)
        trickled["after"] = time.monotonic() - t0
    thread = threading.Thread(target=trickle)
    thread.start()

    bad = {
        b"USER demo\r\n": "not a PROXY protocol header",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 110\r\n": "bad v1 source port",
        b"PROXY TCP4 192.0.2.01 192.0.2.2 1 110\r\n": "bad v1 source address",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 110\n": "bare LF",
        b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n": "no CRLF within",
        V2_SIGNATURE + b"\x21\x11\xff\xff": "more octets than allowed",
        V2_SIGNATURE + b"\x11\x11\x00\x0c": "unsupported v2 version",
        V2_SIGNATURE + b"\x21\x11\x00\x08" + b"\x00" * 8: "shorter than its family",
    }
    for data, reason in bad.items():
        s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5)
        s.sendall(data)
        assert_closed_without_greeting(s)
        s.close()
        logged(srv, "event=proxy_header_invalid proxy=127.0.0.1 reason=", reason)

    # a header cut short by the proxy closing
    s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5)
    s.sendall(b"PROXY TCP4 192.0.2.1 19")
    s.shutdown(socket.SHUT_WR)
    assert_closed_without_greeting(s)
    s.close()
    logged(srv, "event=proxy_header_invalid ", "reason=\"connection closed inside the header\" received=23")
    # v2, cut inside the address block
    s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5)
    s.sendall(v2_header("192.0.2.2")[:20])
    s.shutdown(socket.SHUT_WR)
    assert_closed_without_greeting(s)
    s.close()
    logged(srv, "event=proxy_header_invalid ", "reason=\"connection closed inside the header\" received=20")

    thread.join(15)
    assert trickled.get("data") == b"", trickled
    assert 4.0 <= trickled["after"] <= 8.0, "slow header cut after %.1fs" % trickled["after"]
    slow.close()
    logged(srv, "event=proxy_header_invalid ", "reason=timeout received=")
    # the worker is still fine
    c = ProxiedPop3(srv.proxy_port, v1_header("192.0.2.9"))
    c.login()
    c.quit()
    c.close()


def test_pending_headers_count_against_max_connections(make_server):
    srv = proxy_server(make_server, pop3={"max_connections": "2"})
    waiting = [socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5) for _ in range(2)]
    # the two connections without a header hold both slots: a direct client is refused
    def refused():
        c = srv.connect()
        try:
            return c.greeting.startswith("-ERR [SYS/TEMP] Too many connections")
        finally:
            c.close()
    assert wait_until(refused, timeout=3), "connections waiting for a header took no slot"
    extra = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5)
    assert_closed_without_greeting(extra)
    extra.close()
    logged(srv, "event=connection_refused ip=127.0.0.1 reason=max_connections")
    # once they go away (a health check: connect and close), the slots are free again
    for s in waiting:
        s.close()
    assert wait_until(lambda: not refused(), timeout=3)
    assert "proxy_header_invalid" not in srv.stderr_text()
    # a stop does not wait for a header that is still coming: the drain (1 s here) ends, the
    # connection is closed, and the worker exits cleanly (stop() checks the exit and sanitizers)
    partial = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5)
    partial.sendall(b"PROXY TCP4 ")
    held = srv.connect()
    assert wait_until(refused, timeout=3), "a half-received header took no slot"
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5
    assert_closed_without_greeting(partial)
    partial.close()
    held.close()


def test_untrusted_proxy_is_refused(make_server):
    srv = proxy_server(make_server, trusted="10.0.0.0/8")
    s = socket.create_connection(("127.0.0.1", srv.proxy_port), timeout=5)
    s.sendall(v1_header("192.0.2.77") + b"CAPA\r\n")
    assert_closed_without_greeting(s)
    s.close()
    logged(srv, "event=connection_refused ip=127.0.0.1 reason=proxy_untrusted")
    assert "192.0.2.77" not in srv.stderr_text()
    # the plain listener is unaffected
    c = srv.login()
    c.quit()
    c.close()


def test_cleartext_policy_judges_the_client(make_server):
    # the default `cleartext = loopback`: a proxied remote client may not send a password in the
    # clear, even though the connection itself comes from this machine
    port = free_port()
    srv = make_server(settings={"pop3": {"listen_proxy": "127.0.0.1:%d" % port,
                                         "proxy_trusted": "127.0.0.1"}})
    c = ProxiedPop3(port, v1_header("192.0.2.90"))
    assert c.cmd("USER " + DEMO_USER).startswith("-ERR"), "cleartext USER accepted from a remote client"
    c.close()
    c = ProxiedPop3(port, b"PROXY UNKNOWN\r\n")  # the proxy's own connection: loopback
    c.login()
    c.quit()
    c.close()
