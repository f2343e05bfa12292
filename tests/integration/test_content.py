"""Byte exactness of sizes, RETR and TOP: CRLF conversion, dot-stuffing, missing final newline,
empty and 8-bit messages, long lines, a 20 MB message (RFC 1939 §3, §5, §7)."""

import poplib
import random
import time

import pytest

from buzontest import DEMO_PASS, DEMO_USER, dotstuff, make_message, pop3_size, retr_expected, top_expected

# poplib refuses lines over 2048 octets by default; one test message has a 4000-octet line.
poplib._MAXLINE = 1 << 16

TRICKY = {
    "dot_lines": make_message(
        "dots",
        b".\n..\n.leading dot\n...three\nnot . at start\n. space\n.\r\n..\nend\n",
    ),
    "dot_first_header_line": b".Strange: header\nSubject: dot header\n\n.body\n",
    "no_final_newline": make_message("nofinal", b"line one\nlast line without newline"),
    "no_final_newline_dot": make_message("nofinaldot", b"line one\n."),
    "empty": b"",
    "only_newline": b"\n",
    "headers_only": b"Subject: no body\nFrom: x@example.org\n",
    "eight_bit": make_message(
        "eightbit",
        bytes(range(0x80, 0x100)) + b"\n" + "caf\u00e9 na\u00efve \u00fcber\n".encode("latin-1")
        + "\u65e5\u672c\u8a9e \U0001f600\n".encode("utf-8"),
        extra_headers=b"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n",
    ),
    "long_line": make_message("longline", b"A" * 1500 + b"\n" + b"b" * 4000 + b"\n.tail\n"),
    "mixed_crlf_lf": b"Subject: mixed\r\nFrom: x@example.org\n\r\nline crlf\r\nline lf\n\nblank above\r\n\r\n.dot crlf\r\n",
    "crlf_all": b"Subject: crlf\r\n\r\nbody\r\n.\r\n",
    "blank_lines_body": make_message("blanks", b"\n\n\nafter three blanks\n\n"),
    "nul_and_tabs": make_message("nul", b"tab\there\nnul\x00byte\nctrl\x01\x7f\n"),
}
NAMES = sorted(TRICKY)


@pytest.fixture
def tricky(server):
    bases = {}
    for name in NAMES:
        bases[name] = server.deliver(TRICKY[name])
    return server


def test_sizes_exact(tricky):
    c = tricky.login()
    expect = {i + 1: pop3_size(TRICKY[n]) for i, n in enumerate(NAMES)}
    assert c.stat() == (len(NAMES), sum(expect.values()))
    assert c.list() == expect
    for n, size in expect.items():
        assert c.ok("LIST %d" % n) == "+OK %d %d" % (n, size)
    c.quit()


@pytest.mark.parametrize("name", NAMES)
def test_retr_wire_exact(tricky, name):
    c = tricky.login()
    n = NAMES.index(name) + 1
    wire = c.retr_wire(n)
    expected = retr_expected(TRICKY[name])
    # The wire form (still stuffed), plus the terminator, must be exactly the stuffed expected bytes.
    assert wire + b".\r\n" == dotstuff(expected)
    c.quit()


def test_empty_message_is_only_terminator(tricky):
    c = tricky.login()
    n = NAMES.index("empty") + 1
    assert c.ok("LIST %d" % n) == "+OK %d 0" % n
    c.ok("RETR %d" % n)
    # Right after the +OK line: nothing but ".\r\n", then the next reply.
    c.send(b"NOOP\r\n")
    while b"\r\n+OK" not in c.buf and len(c.buf) < 100:
        c._fill()
    assert bytes(c.buf).startswith(b".\r\n+OK"), bytes(c.buf)
    c.buf.clear()
    c.quit()


@pytest.mark.parametrize("name", ["dot_lines", "no_final_newline_dot", "long_line", "mixed_crlf_lf", "eight_bit",
                                  "headers_only", "empty", "blank_lines_body"])
@pytest.mark.parametrize("lines", [0, 1, 3, 1000])
def test_top_wire_exact(tricky, name, lines):
    c = tricky.login()
    n = NAMES.index(name) + 1
    wire = c.retr_wire("%d %d" % (n, lines), what="TOP")
    assert wire + b".\r\n" == dotstuff(top_expected(TRICKY[name], lines))
    c.quit()


def test_poplib_retr_all(tricky):
    p = poplib.POP3("127.0.0.1", tricky.port, timeout=10)
    try:
        p.user(DEMO_USER)
        p.pass_(DEMO_PASS)
        count, total = p.stat()
        assert count == len(NAMES)
        for i, name in enumerate(NAMES):
            resp, lines, octets = p.retr(i + 1)
            assert resp.startswith(b"+OK")
            expected = retr_expected(TRICKY[name])
            assert b"".join(l + b"\r\n" for l in lines) == expected, name
        resp = p.quit()
        assert resp.startswith(b"+OK")
    finally:
        p.close()


def test_poplib_top_uidl_list(tricky):
    p = poplib.POP3("127.0.0.1", tricky.port, timeout=10)
    try:
        p.user(DEMO_USER)
        p.pass_(DEMO_PASS)
        resp, listing, _ = p.list()
        assert [l.split() for l in listing] == [[b"%d" % (i + 1), b"%d" % pop3_size(TRICKY[n])]
                                                for i, n in enumerate(NAMES)]
        resp, uids, _ = p.uidl()
        assert len(uids) == len(NAMES)
        n = NAMES.index("dot_lines") + 1
        resp, lines, _ = p.top(n, 2)
        assert b"".join(l + b"\r\n" for l in lines) == top_expected(TRICKY["dot_lines"], 2)
        p.quit()
    finally:
        p.close()


def _big_message(size=20 * 1024 * 1024):
    """About `size` bytes of LF-terminated lines, with dot lines, 8-bit bytes and a few CRLF lines."""
    rnd = random.Random(1939)
    parts = [b"From: big@example.org\nSubject: twenty megabytes\nMessage-ID: <big@buzon.test>\n\n"]
    total = len(parts[0])
    alphabet = bytes(range(0x20, 0x7f)) + bytes(range(0x80, 0x100))
    chunk_lines = []
    for i in range(4096):
        k = rnd.randrange(0, 120)
        line = bytes(rnd.choice(alphabet) for _ in range(k))
        if i % 17 == 0:
            line = b"." + line
        if i % 97 == 0:
            line = b"."
        if i % 31 == 0:
            line += b"\r"  # this line ends with CRLF in the file
        chunk_lines.append(line + b"\n")
    chunk = b"".join(chunk_lines)
    while total < size:
        parts.append(chunk)
        total += len(chunk)
    parts.append(b"last line without newline .")
    return b"".join(parts)


def test_twenty_megabyte_message(server):
    data = _big_message()
    assert len(data) >= 20 * 1024 * 1024
    server.deliver(b"Subject: small\n\nsmall\n")
    server.deliver(data)
    server.deliver(b"Subject: after\n\n.after\n")
    expected = retr_expected(data)

    c = server.login()
    assert c.ok("LIST 2") == "+OK 2 %d" % pop3_size(data)
    t0 = time.monotonic()
    wire = c.retr_wire(2)
    elapsed = time.monotonic() - t0
    assert wire + b".\r\n" == dotstuff(expected)
    assert elapsed < 60, "RETR of 20 MB took %.1fs" % elapsed
    # Pipelined commands behind a big RETR come back in order.
    c.send(b"RETR 3\r\nTOP 2 5\r\nNOOP\r\n")
    assert c.readline().startswith("+OK")
    assert c.read_multi_wire() + b".\r\n" == dotstuff(retr_expected(b"Subject: after\n\n.after\n"))
    assert c.readline().startswith("+OK")
    assert c.read_multi_wire() + b".\r\n" == dotstuff(top_expected(data, 5))
    assert c.readline().startswith("+OK")
    c.quit()

    p = poplib.POP3("127.0.0.1", server.port, timeout=30)
    try:
        p.user(DEMO_USER)
        p.pass_(DEMO_PASS)
        resp, lines, octets = p.retr(2)
        assert b"\r\n".join(lines) + b"\r\n" == expected
        p.quit()
    finally:
        p.close()


def test_client_reading_slowly_gets_everything(server):
    # The server must cope with a client that does not read (socket buffers full) and then reads.
    data = make_message("slow", (b"x" * 70 + b"\n.y\n") * 40000)
    server.deliver(data)
    c = server.login()
    c.send(b"RETR 1\r\n")
    time.sleep(1.0)
    assert c.readline().startswith("+OK")
    assert c.read_multi_wire() + b".\r\n" == dotstuff(retr_expected(data))
    c.quit()
