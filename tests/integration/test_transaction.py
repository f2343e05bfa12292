"""TRANSACTION state: STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL and strict argument checking
(RFC 1939 §5, §7)."""

import re

import pytest

from buzontest import pop3_size, retr_expected, top_expected

MSGS = [
    b"From: a@example.org\nSubject: one\n\nfirst body\nline two\n",
    b"From: b@example.org\r\nSubject: two\r\n\r\nsecond\r\nbody\r\nthree lines\r\n",
    b"From: c@example.org\nSubject: three\n\nthird\n",
]


@pytest.fixture
def box(server):
    """server with MSGS delivered for demo; returns (server, [base names])."""
    bases = [server.deliver(m) for m in MSGS]
    return server, bases


def test_stat(box):
    srv, _ = box
    c = srv.login()
    assert c.stat() == (3, sum(pop3_size(m) for m in MSGS))
    c.quit()


def test_list_all_and_one(box):
    srv, _ = box
    c = srv.login()
    assert c.list() == {i + 1: pop3_size(m) for i, m in enumerate(MSGS)}
    for i, m in enumerate(MSGS):
        r = c.ok("LIST %d" % (i + 1))
        assert re.fullmatch(r"\+OK %d %d" % (i + 1, pop3_size(m)), r), r
    c.quit()


def test_retr_each(box):
    srv, _ = box
    c = srv.login()
    for i, m in enumerate(MSGS):
        assert c.retr(i + 1) == retr_expected(m)
    c.quit()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 100])
def test_top(box, n):
    srv, _ = box
    c = srv.login()
    for i, m in enumerate(MSGS):
        assert c.top(i + 1, n) == top_expected(m, n), "TOP %d %d" % (i + 1, n)
    c.quit()


def test_top_leaves_message_retrievable(box):
    srv, _ = box
    c = srv.login()
    assert c.top(2, 1) == top_expected(MSGS[1], 1)
    assert c.retr(2) == retr_expected(MSGS[1])
    c.quit()


def test_uidl_all_and_one(box):
    srv, _ = box
    c = srv.login()
    u = c.uidl()
    assert sorted(u) == [1, 2, 3]
    for n, uid in u.items():
        assert re.fullmatch(r"[0-9a-f]{16}", uid), uid
        r = c.ok("UIDL %d" % n)
        assert r == "+OK %d %s" % (n, uid), r
    assert len(set(u.values())) == 3
    c.quit()


def test_noop(box):
    srv, _ = box
    c = srv.login()
    c.ok("NOOP")
    assert c.stat()[0] == 3
    c.quit()


def test_reply_lines_are_crlf_terminated_and_short(box):
    srv, _ = box
    c = srv.login()
    c.send(b"STAT\r\nLIST\r\nUIDL\r\nNOOP\r\n")
    import time

    time.sleep(0.3)
    while True:
        try:
            c.sock.settimeout(0.3)
            data = c.sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        c.buf += data
    raw = bytes(c.buf)
    assert raw.endswith(b"\r\n")
    for line in raw.split(b"\r\n")[:-1]:
        assert b"\n" not in line and b"\r" not in line, raw
        assert len(line) + 2 <= 512
    c.close()


BAD_NUMBERS = ["0", "-1", "+1", "1x", "x", "01x", "99999999999999999999", "4294967297", "4"]


@pytest.mark.parametrize("cmd", ["RETR", "DELE", "LIST", "UIDL"])
@pytest.mark.parametrize("arg", BAD_NUMBERS)
def test_bad_message_numbers(box, cmd, arg):
    srv, bases = box
    c = srv.login()
    before = (c.stat(), c.list(), c.uidl())
    c.err("%s %s" % (cmd, arg))
    assert (c.stat(), c.list(), c.uidl()) == before
    c.quit()
    assert sorted(srv.files()) == sorted(bases), "a bad %s %s deleted something" % (cmd, arg)


@pytest.mark.parametrize(
    "line",
    [
        "RETR", "DELE", "TOP", "TOP 1", "TOP 1 -1", "TOP 1 x", "TOP 1 +1", "TOP 1 1x", "TOP 0 1", "TOP 4 1",
        "TOP -1 1", "TOP x 1", "TOP 99999999999999999999 1", "TOP 1 1 1",
        "RETR 1 2", "DELE 1 2", "LIST 1 2", "UIDL 1 2",
        "STAT 1", "NOOP 1", "RSET 1",
        "FOO", "FOO 1", "",
    ],
)
def test_bad_arguments_change_nothing(box, line):
    srv, bases = box
    c = srv.login()
    before = (c.stat(), c.list(), c.uidl())
    c.err(line)
    assert (c.stat(), c.list(), c.uidl()) == before
    c.quit()
    files = srv.files()
    assert sorted(files) == sorted(bases), "%r deleted something" % line
    assert not any(f[1] and "S" in f[1] for f in files.values()), "%r marked a message seen" % line


def test_dele_semantics(box):
    srv, bases = box
    c = srv.login()
    u = c.uidl()
    c.ok("DELE 2")
    for line in ["RETR 2", "TOP 2 0", "LIST 2", "UIDL 2", "DELE 2"]:
        c.err(line)
    assert c.stat() == (2, pop3_size(MSGS[0]) + pop3_size(MSGS[2]))
    assert c.list() == {1: pop3_size(MSGS[0]), 3: pop3_size(MSGS[2])}  # numbers are not reused
    assert c.uidl() == {1: u[1], 3: u[3]}
    assert c.retr(3) == retr_expected(MSGS[2])
    c.ok("RSET")
    assert c.stat() == (3, sum(pop3_size(m) for m in MSGS))
    assert c.uidl() == u
    assert c.retr(2) == retr_expected(MSGS[1])
    c.quit()
    assert sorted(srv.files()) == sorted(bases), "RSET did not undelete"


def test_dele_all_then_stat(box):
    srv, bases = box
    c = srv.login()
    for n in (1, 2, 3):
        c.ok("DELE %d" % n)
    assert c.stat() == (0, 0)
    assert c.list() == {}
    assert c.uidl() == {}
    c.quit()
    assert srv.files() == {}


def test_dele_quit_removes_only_deleted(box):
    srv, bases = box
    c = srv.login()
    c.ok("DELE 2")
    r = c.cmd("QUIT")
    assert r.startswith("+OK"), r
    c.expect_closed()
    assert sorted(srv.files()) == sorted([bases[0], bases[2]])
    c = srv.login()
    assert c.stat() == (2, pop3_size(MSGS[0]) + pop3_size(MSGS[2]))
    assert c.retr(1) == retr_expected(MSGS[0])
    assert c.retr(2) == retr_expected(MSGS[2])
    c.quit()


def test_rset_twice_and_dele_after_rset(box):
    srv, bases = box
    c = srv.login()
    c.ok("DELE 1")
    c.ok("RSET")
    c.ok("RSET")
    c.ok("DELE 3")
    c.quit()
    assert sorted(srv.files()) == sorted(bases[:2])
