"""Line length, bad-command limit, per-IP pre-login limit and pipelining (RFC 2449 §4, §6.6)."""

import time

import pytest

from buzontest import dotstuff, retr_expected


def test_line_of_255_octets_is_accepted(server):
    c = server.connect()
    line = "USER " + "a" * 248  # 253 + CRLF = 255 octets
    assert len(line) + 2 == 255
    c.ok(line)
    c.login()
    c.quit()


def test_line_of_256_octets_is_rejected_and_session_continues(server):
    c = server.connect()
    line = "USER " + "a" * 249  # 256 octets with CRLF
    c.err(line)
    c.login()
    assert c.stat() == (0, 0)
    c.quit()


def test_very_long_line_gives_one_error(server):
    server.deliver(b"Subject: x\n\nx\n")
    c = server.login()
    c.send(b"NOOP" + b"x" * 20000 + b"\r\nSTAT\r\n")
    r = c.readline()
    assert r.startswith("-ERR"), r
    r = c.readline()
    assert r.startswith("+OK 1 "), "the rest of the long line was taken as a command: %r" % r
    c.quit()


def test_long_line_in_pieces(server):
    c = server.login()
    for _ in range(10):
        c.send(b"y" * 100)
        time.sleep(0.02)
    c.send(b"\r\nNOOP\r\n")
    assert c.readline().startswith("-ERR")
    assert c.readline().startswith("+OK")
    c.quit()


def test_bad_commands_below_limit_keep_session(make_server):
    srv = make_server(settings={"pop3": {"max_bad_commands": "4"}})
    c = srv.connect()
    for _ in range(3):
        c.err("FOO")
    c.capa()
    c.login()
    c.quit()


def test_bad_command_limit_closes(make_server):
    srv = make_server(settings={"pop3": {"max_bad_commands": "4"}})
    c = srv.connect()
    # four kinds of bad command: unknown, wrong state, bad arguments, too long
    c.err("FOO")
    c.err("STAT")
    c.err("USER")
    c.send("USER " + "z" * 300 + "\r\n")
    r = c.readline()
    assert r.startswith("-ERR"), r
    # Possibly one more -ERR saying goodbye, then the connection closes.
    c.expect_closed(5)
    assert all(l.startswith(b"-ERR") for l in bytes(c.buf).split(b"\r\n") if l), bytes(c.buf)


def test_bad_command_limit_in_transaction(make_server):
    srv = make_server(settings={"pop3": {"max_bad_commands": "3"}})
    srv.deliver(b"Subject: x\n\nx\n")
    c = srv.login()
    c.err("RETR 0")
    c.err("DELE 1 2")
    c.send("XYZZY\r\n")
    assert c.readline().startswith("-ERR")
    c.expect_closed(5)
    # A session ended that way is not a QUIT: nothing is deleted, the lock is free.
    c2 = srv.login()
    assert c2.stat()[0] == 1
    c2.quit()


def test_default_bad_command_limit_is_ten(server):
    c = server.connect()
    for _ in range(9):
        c.err("BOGUS")
    assert c.is_open()
    c.send("BOGUS\r\n")
    assert c.readline().startswith("-ERR")
    c.expect_closed(5)


@pytest.mark.parametrize("workers", [1, 2])
def test_prelogin_limit_per_ip(make_server, workers):
    srv = make_server(settings={"pop3": {"max_prelogin_per_ip": "3"}}, workers=workers)
    held = [srv.connect() for _ in range(3)]
    for h in held:
        assert h.greeting.startswith("+OK"), h.greeting
    fourth = srv.connect()
    assert fourth.greeting.startswith("-ERR"), fourth.greeting
    fourth.expect_closed(5)
    fourth.close()
    # Logging one in frees its slot.
    held[0].login()
    fifth = srv.connect()
    assert fifth.greeting.startswith("+OK"), fifth.greeting
    sixth = srv.connect()
    assert sixth.greeting.startswith("-ERR"), sixth.greeting
    sixth.close()
    # Closing one also frees a slot (after the server notices).
    held[1].close()
    ok = None
    for _ in range(50):
        c = srv.connect()
        if c.greeting.startswith("+OK"):
            ok = c
            break
        c.close()
        time.sleep(0.1)
    assert ok, "slot of a closed pre-login connection never freed"
    # The logged-in session works throughout.
    assert held[0].stat() == (0, 0)
    held[0].quit()
    for c in (held[2], fifth, ok):
        c.cmd("QUIT")
        c.close()


def test_pipelining(server):
    msgs = [b"Subject: 1\n\n.one\n", b"Subject: 2\n\ntwo"]
    for m in msgs:
        server.deliver(m)
    c = server.connect()
    c.send(b"CAPA\r\nUSER demo\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 0\r\nNOOP\r\n"
           b"DELE 1\r\nLIST 1\r\nRSET\r\nLIST 1\r\nRETR 2\r\nQUIT\r\n")
    assert c.readline().startswith("+OK")
    assert "PIPELINING" in c.multi_lines()
    assert c.readline().startswith("+OK")  # USER
    assert c.readline().startswith("+OK")  # PASS
    assert c.readline().startswith("+OK 2 ")  # STAT
    assert c.readline().startswith("+OK")
    assert len(c.multi_lines()) == 2
    assert c.readline().startswith("+OK")
    assert len(c.multi_lines()) == 2
    assert c.readline().startswith("+OK")
    assert c.read_multi_wire() + b".\r\n" == dotstuff(retr_expected(msgs[0]))
    assert c.readline().startswith("+OK")
    assert c.read_multi_wire() == b"Subject: 2\r\n\r\n"
    assert c.readline().startswith("+OK")  # NOOP
    assert c.readline().startswith("+OK")  # DELE 1
    assert c.readline().startswith("-ERR")  # LIST 1 (deleted)
    assert c.readline().startswith("+OK")  # RSET
    assert c.readline().startswith("+OK 1 ")  # LIST 1
    assert c.readline().startswith("+OK")
    assert c.read_multi_wire() + b".\r\n" == dotstuff(retr_expected(msgs[1]))
    assert c.readline().startswith("+OK")  # QUIT
    c.expect_closed()
    assert c.buf == b"", bytes(c.buf)


def test_pipelining_many_commands_one_write(server):
    server.deliver(b"Subject: p\n\n" + b"line\n" * 1000)
    c = server.login()
    n = 300
    c.send(b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nNOOP\r\n" * n + b"QUIT\r\n")
    for _ in range(n):
        assert c.readline().startswith("+OK 1 ")
        assert c.readline().startswith("+OK")
        c.read_multi_wire()
        assert c.readline().startswith("+OK")
        c.read_multi_wire()
        assert c.readline().startswith("+OK")
        assert c.read_multi_wire().count(b"\r\n") == 1002
        assert c.readline().startswith("+OK")
    assert c.readline().startswith("+OK")
    c.expect_closed()
