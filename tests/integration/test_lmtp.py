"""The LMTP server (RFC 2033, with PIPELINING, CHUNKING, SIZE, 8BITMIME, SMTPUTF8,
ENHANCEDSTATUSCODES): recipients, per-recipient replies, quotas, the stored form of a message and
what POP3 then serves."""

import os
import re
import shutil
import smtplib
import stat
import subprocess
import threading
import time

import pytest

from buzontest import to_crlf, wait_until
from lmtptest import (
    Lmtp,
    check_name_sizes,
    delivered,
    dotstuff_smtp,
    find_token,
    lf_message,
    msg,
    set_user_extra,
    setup_lmtp,
    split_added_headers,
    stored_expected,
    tmp_files,
)

USERS = (("demo", "secret"), ("alice", "alicepw"), ("bob@example.com", "bobpw"), ("carol", "carolpw"))
SENDER = "sender@example.org"


def new_server(make_server, quota_users=(), users=USERS, **kw):
    """A server with USERS (+ quota_users: [(name, extra fields)] with password "pw") and LMTP on
    TCP and a UNIX socket."""
    srv = make_server(users=users, start=False)
    for name, extra in quota_users:
        set_user_extra(srv, name, extra)
    return setup_lmtp(srv, **kw)


@pytest.fixture
def lsrv(make_server):
    return new_server(make_server, quota_users=[("full", "userdb_quota_rule=*:storage=1G:messages=1")])


@pytest.fixture(params=["tcp", "unix"])
def target(request, lsrv):
    """(server, LMTP target) for both listeners."""
    if request.param == "tcp":
        return lsrv, ("127.0.0.1", lsrv.lmtp_port)
    return lsrv, lsrv.lmtp_path


# smtplib sends a bytes message as it is (no bare-LF fix-up), so the tests hand it CRLF text: bare
# LF in SMTP data is undefined (RFC 5321 section 2.3.8).


def smtplib_lmtp(t):
    if isinstance(t, str):
        c = smtplib.LMTP(t)
    else:
        c = smtplib.LMTP(t[0], t[1], timeout=10)
    return c


def assert_reply(r, code, enh=None):
    """r = (code, lines). enh: the enhanced status code the text must start with (a string or a
    tuple of accepted ones); by default any of class code//100."""
    assert r[0] == code, "reply %r, expected %d" % (r, code)
    text = r[1][0] if r[1] else ""
    if enh is None:
        enh = ()
        assert re.match(r"%d\.\d{1,3}\.\d{1,3}( |$)" % (code // 100), text), \
            "reply %r lacks an enhanced status code %d.x.x" % (r, code // 100)
    else:
        enh = (enh,) if isinstance(enh, str) else enh
        assert any(text == e or text.startswith(e + " ") for e in enh), \
            "reply %r: expected enhanced code %s" % (r, " or ".join(enh))


def only_file(srv, user):
    d = delivered(srv, user)
    assert len(d) == 1, "%s: expected one message file, found %r (tmp: %r)" % (user, [x[0] for x in d],
                                                                             tmp_files(srv, user))
    return d[0]


def start_txn(c, rcpts, sender=SENDER, params=""):
    """LHLO (if not done), MAIL, RCPT...; returns the RCPT replies."""
    assert_reply(c.cmd("MAIL FROM:<%s>%s" % (sender, params)), 250)
    return [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]


# ---------------------------------------------------------------------------------------------
# Greeting, LHLO, command sequence


def test_greeting_and_lhlo(target):
    srv, t = target
    with Lmtp(t) as c:
        code, lines = c.greeting
        assert code == 220, c.greeting
        assert "LMTP" in lines[0], c.greeting
        assert "mx.test" in lines[0], "greeting does not name [lmtp] hostname: %r" % (c.greeting,)
        code, lines = c.lhlo()
        assert "mx.test" in lines[0], lines
        exts = {l.split()[0].upper(): l.split()[1:] for l in lines[1:] if l.strip()}
        for e in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "CHUNKING", "SIZE"):
            assert e in exts, "LHLO does not advertise %s: %r" % (e, lines)
        if exts["SIZE"]:
            assert exts["SIZE"] == ["52428800"], "default SIZE should be 50M: %r" % exts["SIZE"]
        assert_reply(c.cmd("QUIT"), 221)
        c.expect_closed()


def test_unix_socket_mode(lsrv):
    st = os.stat(lsrv.lmtp_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o666, oct(st.st_mode)


def test_helo_ehlo_refused_lhlo_works(target):
    srv, t = target
    with Lmtp(t) as c:
        for cmd in ("HELO client.test", "EHLO client.test"):
            r = c.cmd(cmd)
            assert 500 <= r[0] < 600, "%s -> %r" % (cmd, r)
        c.lhlo()
        assert_reply(c.cmd("MAIL FROM:<%s>" % SENDER), 250)


def test_out_of_sequence(lsrv):
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        assert r[0] == 503, "MAIL before LHLO -> %r" % (r,)
        c.lhlo()
        for cmd in ("RCPT TO:<demo>", "DATA", "BDAT 0 LAST"):
            r = c.cmd(cmd)
            assert r[0] == 503, "%s without MAIL -> %r" % (cmd, r)
        assert_reply(c.cmd("MAIL FROM:<%s>" % SENDER), 250)
        r = c.cmd("MAIL FROM:<%s>" % SENDER)
        assert r[0] == 503, "second MAIL -> %r" % (r,)
        for cmd in ("DATA", "BDAT 0 LAST"):
            r = c.cmd(cmd)
            assert r[0] == 503, "%s without RCPT -> %r" % (cmd, r)
        r = c.cmd("RCPT TO:<nosuch@example.org>")
        assert r[0] == 550, r
        r = c.cmd("DATA")
        assert r[0] == 503, "DATA with only refused recipients -> %r" % (r,)
        assert_reply(c.cmd("NOOP"), 250)
        assert_reply(c.cmd("RSET"), 250)
        r = c.cmd("RCPT TO:<demo>")
        assert r[0] == 503, "RCPT after RSET -> %r" % (r,)
        r = c.cmd("VRFY demo")
        assert r[0] in (252, 502), "VRFY -> %r" % (r,)
        r = c.cmd("XYZZY")
        assert 500 <= r[0] < 600, "unknown command -> %r" % (r,)
        assert_reply(c.cmd("QUIT"), 221)
        c.expect_closed()
    assert delivered(lsrv, "demo") == []


def test_bad_syntax(lsrv):
    with Lmtp(lsrv.lmtp_path) as c:
        c.lhlo()
        for cmd in ("MAIL", "MAIL FROM:", "MAIL FROM:<a@b> NOSUCHPARAM=1", "MAIL FROM:<a@b> SIZE=x"):
            r = c.cmd(cmd)
            assert 500 <= r[0] < 600, "%s -> %r" % (cmd, r)
        assert_reply(c.cmd("MAIL FROM:<%s>" % SENDER), 250)
        for cmd in ("RCPT", "RCPT TO:", "RCPT TO:demo-without-brackets-<"):
            r = c.cmd(cmd)
            assert 500 <= r[0] < 600, "%s -> %r" % (cmd, r)
        r = c.cmd("BDAT x")
        assert 500 <= r[0] < 600, "BDAT x -> %r" % (r,)


# ---------------------------------------------------------------------------------------------
# Recipients and the stored form


def test_single_recipient_smtplib(target):
    srv, t = target
    m = msg("single1", body=b"Line one.\nLine two.\n")
    c = smtplib_lmtp(t)
    try:
        code, _ = c.ehlo("client.test")
        assert code == 250
        refused = c.sendmail(SENDER, ["demo@example.org"], to_crlf(m))
        assert refused == {}
        c.quit()
    finally:
        c.close()
    name, path, content = only_file(srv, "demo")
    assert os.path.basename(os.path.dirname(path)) == "new", path
    assert content == stored_expected(m, SENDER, "demo@example.org"), content
    check_name_sizes(name, content)
    assert tmp_files(srv, "demo") == []


@pytest.mark.parametrize("address,user", [
    ("demo", "demo"),
    ("demo@example.org", "demo"),
    ("bob@example.com", "bob@example.com"),
    ("carol@elsewhere.net", "carol"),
])
def test_recipient_resolution(lsrv, address, user):
    m = msg("resolve")
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, [address])
        assert_reply(r, 250)
        (r,) = c.data(m, 1)
        assert_reply(r, 250)
    name, path, content = only_file(lsrv, user)
    assert content == stored_expected(m, SENDER, address)


@pytest.mark.parametrize("address", ["nosuch@example.org", "nosuch", "bob@other.org", "bob"])
def test_unknown_recipient(lsrv, address):
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, [address])
        assert_reply(r, 550, "5.1.1")
    assert not os.path.exists(lsrv.maildir("bob")) or delivered(lsrv, "bob") == []


def test_null_sender(lsrv):
    m = msg("nullsender")
    with Lmtp(lsrv.lmtp_path) as c:
        c.lhlo()
        (r,) = start_txn(c, ["demo"], sender="")
        assert_reply(r, 250)
        (r,) = c.data(m, 1)
        assert_reply(r, 250)
    _, _, content = only_file(lsrv, "demo")
    assert content == stored_expected(m, "", "demo")


def fill_quota(srv, user, n):
    for i in range(n):
        with Lmtp(("127.0.0.1", srv.lmtp_port)) as c:
            c.lhlo()
            (r,) = start_txn(c, [user])
            assert_reply(r, 250)
            (r,) = c.data(msg("fill%d" % i), 1)
            assert_reply(r, 250)


def test_multi_recipient_mixed(lsrv):
    """known, unknown, known, over quota: one reply per accepted recipient after DATA, one shared
    file (hard links) without Delivered-To."""
    fill_quota(lsrv, "full", 1)
    m = msg("multi1", body=b"To several.\n")
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        rs = start_txn(c, ["demo@example.org", "nosuch@example.org", "alice", "full"])
        assert_reply(rs[0], 250)
        assert_reply(rs[1], 550, "5.1.1")
        assert_reply(rs[2], 250)
        assert_reply(rs[3], 552, "5.2.2")
        replies = c.data(m, 2)
        for r in replies:
            assert_reply(r, 250)
        assert_reply(c.cmd("QUIT"), 221)
    d = only_file(lsrv, "demo")
    a = only_file(lsrv, "alice")
    assert d[2] == stored_expected(m, SENDER), d[2]
    assert a[2] == d[2]
    assert os.stat(d[1]).st_ino == os.stat(a[1]).st_ino, "recipients do not share one inode"
    assert os.stat(d[1]).st_nlink == 2
    check_name_sizes(d[0], d[2])
    check_name_sizes(a[0], a[2])
    assert len(delivered(lsrv, "full")) == 1


def test_multi_recipient_smtplib(target):
    """smtplib: one refused recipient shows up in sendmail's result; two accepted recipients give two
    DATA replies (read with getreply())."""
    srv, t = target
    m1 = msg("smtplibmixed")
    c = smtplib_lmtp(t)
    try:
        c.ehlo("client.test")
        refused = c.sendmail(SENDER, ["demo@example.org", "nosuch@example.org"], to_crlf(m1))
        assert list(refused) == ["nosuch@example.org"], refused
        assert refused["nosuch@example.org"][0] == 550
        assert refused["nosuch@example.org"][1].startswith(b"5.1.1"), refused
        m2 = msg("smtplibtwo")
        code, _ = c.mail(SENDER)
        assert code == 250
        assert c.rcpt("alice@example.org")[0] == 250
        assert c.rcpt("carol")[0] == 250
        code, text = c.data(to_crlf(m2))
        assert code == 250, (code, text)
        code, text = c.getreply()
        assert code == 250, (code, text)
        assert c.noop()[0] == 250
        c.quit()
    finally:
        c.close()
    (_, _, content), = find_token(srv, "demo", "smtplibmixed")
    # the transaction delivered to one recipient: Delivered-To is added
    assert content == stored_expected(m1, SENDER, "demo@example.org")
    (_, pa, ca), = find_token(srv, "alice", "smtplibtwo")
    (_, pc, cc), = find_token(srv, "carol", "smtplibtwo")
    assert ca == cc == stored_expected(m2, SENDER)
    assert os.stat(pa).st_ino == os.stat(pc).st_ino


def test_all_recipients_same_user(lsrv):
    """Two addresses naming the same user in one transaction."""
    m = msg("sameuser")
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        rs = start_txn(c, ["demo", "demo@example.org"])
        for r in rs:
            assert_reply(r, 250)
        for r in c.data(m, 2):
            assert_reply(r, 250)
    files = delivered(lsrv, "demo")
    assert 1 <= len(files) <= 2, [f[0] for f in files]
    for name, _, content in files:
        _, _, rest = split_added_headers(content)
        assert rest == lf_message(m)
        check_name_sizes(name, content)


# ---------------------------------------------------------------------------------------------
# Pipelining, BDAT, content


def test_pipelining(lsrv):
    m = msg("piped", body=b".dot first\nplain\n")
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.send("LHLO client.test\r\nMAIL FROM:<%s>\r\nRCPT TO:<demo>\r\nRCPT TO:<nosuch>\r\n"
               "RCPT TO:<alice@example.org>\r\nDATA\r\n" % SENDER)
        r = c.reply()
        assert r[0] == 250 and any("PIPELINING" in l for l in r[1]), r
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 550, "5.1.1")
        assert_reply(c.reply(), 250)
        r = c.reply()
        assert r[0] == 354, r
        # the message, then a second transaction and QUIT, all in one write
        m2 = msg("piped2")
        c.send(dotstuff_smtp(m) + b".\r\n" +
               b"MAIL FROM:<other@example.net>\r\nRCPT TO:<carol>\r\nDATA\r\n")
        assert_reply(c.reply(), 250)  # demo
        assert_reply(c.reply(), 250)  # alice
        assert_reply(c.reply(), 250)  # MAIL
        assert_reply(c.reply(), 250)  # RCPT
        assert c.reply()[0] == 354
        c.send(dotstuff_smtp(m2) + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        assert_reply(c.reply(), 250)  # carol
        assert_reply(c.reply(), 250)  # RSET
        assert_reply(c.reply(), 250)  # NOOP
        assert_reply(c.reply(), 221)  # QUIT
        c.expect_closed()
    assert only_file(lsrv, "demo")[2] == stored_expected(m, SENDER)
    assert only_file(lsrv, "alice")[2] == stored_expected(m, SENDER)
    assert only_file(lsrv, "carol")[2] == stored_expected(m2, "other@example.net", "carol")


def test_bdat_chunks(target):
    srv, t = target
    body = msg("bdat1", body=b"..not unstuffed in BDAT\n.\nend\n").replace(b"\n", b"\r\n")
    with Lmtp(t) as c:
        c.lhlo()
        (r,) = start_txn(c, ["demo"])
        assert_reply(r, 250)
        # chunk boundaries anywhere, including between CR and LF
        cut1 = 10
        cut2 = body.index(b"\r\n", 40) + 1
        for chunk in (body[:cut1], body[cut1:cut2], body[cut2:]):
            c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
            assert_reply(c.reply(), 250)
        c.send(b"BDAT 0 LAST\r\n")
        assert_reply(c.reply(), 250)
    _, _, content = only_file(srv, "demo")
    assert content == stored_expected(body, SENDER, "demo")
    assert b"\n..not unstuffed in BDAT\n.\nend\n" in content


def test_bdat_pipelined_multi_recipient(lsrv):
    body = msg("bdat2").replace(b"\n", b"\r\n")
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        c.send(b"MAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<demo>\r\nRCPT TO:<nosuch>\r\n"
               b"RCPT TO:<alice>\r\nBDAT 10\r\n" + body[:10] +
               b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:] + b"NOOP\r\n")
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 550, "5.1.1")
        assert_reply(c.reply(), 250)
        assert_reply(c.reply(), 250)  # BDAT 10
        assert_reply(c.reply(), 250)  # LAST: demo
        assert_reply(c.reply(), 250)  # LAST: alice
        assert_reply(c.reply(), 250)  # NOOP
    assert only_file(lsrv, "demo")[2] == stored_expected(body, SENDER)
    assert only_file(lsrv, "alice")[2] == stored_expected(body, SENDER)


def test_bdat_then_data_refused(lsrv):
    """RFC 3030: DATA after BDAT in the same transaction is a sequence error."""
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo"])
        c.send(b"BDAT 5\r\nabcde")
        assert_reply(c.reply(), 250)
        r = c.cmd("DATA")
        assert r[0] == 503, "DATA after BDAT -> %r" % (r,)


def test_8bit_and_smtputf8(lsrv):
    high = bytes(b for b in range(0x80, 0x100))
    body = b"8bit: " + high + b"\n" + "caf\u00e9 \u65e5\u672c\n".encode() + b"\x00nul? no: \x01\x7f\n"
    body = body.replace(b"\x00", b"")
    m = msg("eightbit", body=body, extra_headers="X-UTF8: \u00fc\u00f1\u00ee\n".encode())
    sender = "j\u00f6s\u00e9@ex\u00e4mple.org"
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, ["demo"], sender=sender, params=" BODY=8BITMIME SMTPUTF8")
        assert_reply(r, 250)
        (r,) = c.data(m, 1)
        assert_reply(r, 250)
    _, _, content = only_file(lsrv, "demo")
    assert content == stored_expected(m, sender, "demo")


def test_dot_unstuffing(lsrv):
    body = b"..two dots\n.\n...\n.x\n. \nend.\n"
    m = msg("dots", body=body)
    wire = dotstuff_smtp(m)
    assert b"\r\n...two dots\r\n" in wire and b"\r\n..\r\n" in wire
    with Lmtp(lsrv.lmtp_path) as c:
        c.lhlo()
        start_txn(c, ["demo"])
        (r,) = c.data(m, 1)
        assert_reply(r, 250)
    _, _, content = only_file(lsrv, "demo")
    assert content == stored_expected(m, SENDER, "demo")
    assert b"\n..two dots\n.\n...\n.x\n" in content


def test_crlf_and_bare_lf_in_data(lsrv):
    """A message whose DATA ends without a final line end before the dot is impossible; a bare
    CR inside a line is kept."""
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo"])
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: cr\r\n\r\nbare\rCR inside\r\nlast\r\n.\r\n")
        assert_reply(c.reply(), 250)
    _, _, content = only_file(lsrv, "demo")
    assert content == stored_expected(b"Subject: cr\n\nbare\rCR inside\nlast\n", SENDER, "demo")


@pytest.mark.parametrize("data", [
    b"Subject: s1\n\nline1\n.\r\nline2\r\n.\r\n",
    b"Subject: s2\r\n\r\nline1\r\n.\nline2\r\n.\r\n",
    b"Subject: s3\r\n\r\nline1\n.\nline2\r\n.\r\n",
    b"Subject: s4\r\n\r\nline1\r\n.\rline2\r\n.\r\n",
])
def test_no_early_end_of_data(lsrv, data):
    """Only CRLF.CRLF ends DATA: a dot line with a bare LF or CR is content (SMTP smuggling)."""
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo"])
        assert c.cmd("DATA")[0] == 354
        c.send(data + b"NOOP\r\n")
        assert_reply(c.reply(), 250)  # the message
        assert_reply(c.reply(), 250)  # NOOP, not a 5xx for "line2"
    _, _, content = only_file(lsrv, "demo")
    assert content.endswith(b"line2\n"), content


def test_large_message(lsrv):
    line = b"0123456789abcdefghijklmnopqrstuvwxyz.,;:ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
    body = line * (5 * 1024 * 1024 // len(line))
    m = msg("large", body=body)
    c = smtplib.LMTP("127.0.0.1", lsrv.lmtp_port, timeout=60)
    try:
        c.ehlo("client.test")
        assert c.sendmail(SENDER, ["demo"], to_crlf(m)) == {}
        c.quit()
    finally:
        c.close()
    name, _, content = only_file(lsrv, "demo")
    assert content == stored_expected(m, SENDER, "demo")
    check_name_sizes(name, content)


def test_many_transactions_one_session(lsrv):
    tokens = ["seq%02d" % i for i in range(25)]
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        for tok in tokens:
            start_txn(c, ["demo"])
            (r,) = c.data(msg(tok), 1)
            assert_reply(r, 250)
    files = delivered(lsrv, "demo")
    assert len(files) == len(tokens)
    assert len({f[0] for f in files}) == len(tokens)
    for tok in tokens:
        (f,) = find_token(lsrv, "demo", tok.encode() + b"@")
        assert f[2] == stored_expected(msg(tok), SENDER, "demo")


def test_concurrent_clients(lsrv):
    errors = []

    def client(k):
        try:
            target = ("127.0.0.1", lsrv.lmtp_port) if k % 2 else lsrv.lmtp_path
            with Lmtp(target) as c:
                c.lhlo()
                for i in range(8):
                    start_txn(c, ["demo", "alice"])
                    for r in c.data(msg("conc%d_%d" % (k, i)), 2):
                        assert_reply(r, 250)
        except Exception as e:  # noqa: BLE001
            errors.append("client %d: %r" % (k, e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(delivered(lsrv, "demo")) == 48
    assert len(delivered(lsrv, "alice")) == 48


# ---------------------------------------------------------------------------------------------
# Size limits, RSET, dropped connections


@pytest.fixture
def small(make_server):
    return new_server(make_server, lmtp={"max_message_size": "10K"})


def test_size_advertised(small):
    with Lmtp(("127.0.0.1", small.lmtp_port)) as c:
        _, lines = c.lhlo()
        size = [l for l in lines[1:] if l.upper().startswith("SIZE")]
        assert size == ["SIZE 10240"], lines


def test_size_param(small):
    with Lmtp(("127.0.0.1", small.lmtp_port)) as c:
        c.lhlo()
        r = c.cmd("MAIL FROM:<%s> SIZE=20000" % SENDER)
        assert_reply(r, 552, "5.3.4")
        r = c.cmd("MAIL FROM:<%s> SIZE=10241" % SENDER)
        assert_reply(r, 552, "5.3.4")
        r = c.cmd("MAIL FROM:<%s> SIZE=10240" % SENDER)
        assert_reply(r, 250)
        assert_reply(c.cmd("RSET"), 250)
        r = c.cmd("MAIL FROM:<%s> SIZE=100" % SENDER)
        assert_reply(r, 250)
        assert_reply(c.cmd("RCPT TO:<demo>"), 250)
        (r,) = c.data(msg("sizeok"), 1)
        assert_reply(r, 250)
    assert len(delivered(small, "demo")) == 1


def test_actual_size_over_limit_data(small):
    big = msg("toobig", body=(b"y" * 79 + b"\n") * 200)
    assert len(big) > 10240
    with Lmtp(("127.0.0.1", small.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo", "alice"])
        replies = c.data(big, 2)
        assert len(replies) == 2
        for r in replies:
            assert_reply(r, 552, ("5.3.4", "5.2.3"))
        # the session goes on
        start_txn(c, ["demo"])
        (r,) = c.data(msg("aftertoobig"), 1)
        assert_reply(r, 250)
    (f,) = delivered(small, "demo")
    assert b"aftertoobig" in f[2]
    assert delivered(small, "alice") == []
    assert wait_until(lambda: tmp_files(small, "demo") == [], 3), tmp_files(small, "demo")


def test_actual_size_over_limit_bdat(small):
    big = (b"z" * 99 + b"\r\n") * 150
    with Lmtp(("127.0.0.1", small.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo", "alice"])
        c.send(b"BDAT %d LAST\r\n" % len(big) + big)
        replies = c.replies(2)
        for r in replies:
            assert_reply(r, 552, ("5.3.4", "5.2.3"))
        assert_reply(c.cmd("NOOP"), 250)
    assert delivered(small, "demo") == [] and delivered(small, "alice") == []


def test_rset_mid_transaction(lsrv):
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo", "alice"])
        assert_reply(c.cmd("RSET"), 250)
        # RSET after a BDAT chunk abandons the chunk
        start_txn(c, ["demo"])
        chunk = b"Subject: x\r\n\r\nhello\r\n"
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
        assert_reply(c.reply(), 250)
        assert_reply(c.cmd("RSET"), 250)
        r = c.cmd("BDAT 0 LAST")
        assert r[0] == 503, "BDAT after RSET -> %r" % (r,)
        assert_reply(c.cmd("QUIT"), 221)
    time.sleep(0.3)
    assert delivered(lsrv, "demo") == [] and delivered(lsrv, "alice") == []
    assert wait_until(lambda: tmp_files(lsrv, "demo") == [], 3), tmp_files(lsrv, "demo")


@pytest.mark.parametrize("how", ["data", "data-before-dot", "bdat"])
def test_dropped_connection_delivers_nothing(lsrv, how):
    part = msg("dropped", body=b"partial line\n" * 2000).replace(b"\n", b"\r\n")
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        start_txn(c, ["demo", "alice"])
        if how == "bdat":
            c.send(b"BDAT 100000\r\n" + part[:5000])
        else:
            assert c.cmd("DATA")[0] == 354
            c.send(part if how == "data-before-dot" else part[:5000])
        time.sleep(0.2)
    time.sleep(0.5)
    assert delivered(lsrv, "demo") == [] and delivered(lsrv, "alice") == []
    assert wait_until(lambda: tmp_files(lsrv, "demo") == [], 5), tmp_files(lsrv, "demo")
    # the server is fine afterwards
    fill_quota(lsrv, "demo", 1)
    assert len(delivered(lsrv, "demo")) == 1


# ---------------------------------------------------------------------------------------------
# Quotas


@pytest.fixture
def qsrv(make_server):
    return new_server(make_server, quota_users=[
        ("qmsg", "userdb_quota_rule=*:storage=1G:messages=2"),
        ("qbytes", "quota_bytes=10K"),
        ("qboth", "quota_bytes=1M quota_messages=3"),
    ])


def test_quota_messages_and_freed_by_pop3(qsrv):
    fill_quota(qsrv, "qmsg", 2)
    m = msg("overquota")
    with Lmtp(("127.0.0.1", qsrv.lmtp_port)) as c:
        c.lhlo()
        rs = start_txn(c, ["qmsg", "demo"])
        assert_reply(rs[0], 552, "5.2.2")
        assert_reply(rs[1], 250)
        (r,) = c.data(m, 1)
        assert_reply(r, 250)
    assert len(delivered(qsrv, "qmsg")) == 2
    assert find_token(qsrv, "demo", "overquota")
    # POP3 DELE + QUIT frees the space
    p = qsrv.login("qmsg", "pw")
    assert p.stat()[0] == 2
    p.ok("DELE 1")
    p.quit()
    assert len(delivered(qsrv, "qmsg")) == 1
    with Lmtp(("127.0.0.1", qsrv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, ["qmsg"])
        assert_reply(r, 250)
        (r,) = c.data(m, 1)
        assert_reply(r, 250)
    assert len(delivered(qsrv, "qmsg")) == 2


def test_quota_messages_space_separated_form(qsrv):
    fill_quota(qsrv, "qboth", 3)
    with Lmtp(("127.0.0.1", qsrv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, ["qboth"])
        assert_reply(r, 552, "5.2.2")


def test_quota_bytes_size_param(qsrv):
    eight_k = msg("q8k", body=(b"q" * 99 + b"\n") * 80)
    with Lmtp(("127.0.0.1", qsrv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, ["qbytes"], params=" SIZE=%d" % len(eight_k))
        assert_reply(r, 250)
        (r,) = c.data(eight_k, 1)
        assert_reply(r, 250)
        # 8K used of 10K: a message announced as 8K does not fit
        (r,) = start_txn(c, ["qbytes"], params=" SIZE=%d" % len(eight_k))
        assert_reply(r, 552, "5.2.2")
        assert_reply(c.cmd("RSET"), 250)
        # without SIZE the refusal comes after DATA at the latest
        r = start_txn(c, ["qbytes", "demo"])[0]
        if r[0] == 250:
            replies = c.data(eight_k, 2)
            assert_reply(replies[0], 552, "5.2.2")
            assert_reply(replies[1], 250)
        else:
            assert_reply(r, 552, "5.2.2")
        # a small message still fits
        assert_reply(c.cmd("RSET"), 250)
        (r,) = start_txn(c, ["qbytes"])
        assert_reply(r, 250)
        (r,) = c.data(msg("qsmall"), 1)
        assert_reply(r, 250)
    assert len(delivered(qsrv, "qbytes")) == 2


def test_quota_tempfail(make_server):
    srv = new_server(make_server, quota_users=[("qmsg", "userdb_quota_rule=*:storage=1G:messages=1")],
                     lmtp={"quota_full_tempfail": "yes"})
    fill_quota(srv, "qmsg", 1)
    with Lmtp(("127.0.0.1", srv.lmtp_port)) as c:
        c.lhlo()
        (r,) = start_txn(c, ["qmsg"])
        assert_reply(r, 452, "4.2.2")


def test_default_quota_from_mail_section(make_server):
    srv = new_server(make_server, quota_users=[("roomy", "quota_messages=3")],
                     mail={"quota_messages": "1", "quota_bytes": "1M"})
    fill_quota(srv, "demo", 1)
    fill_quota(srv, "roomy", 3)
    with Lmtp(("127.0.0.1", srv.lmtp_port)) as c:
        c.lhlo()
        rs = start_txn(c, ["demo", "roomy", "alice"])
        assert_reply(rs[0], 552, "5.2.2")
        assert_reply(rs[1], 552, "5.2.2")
        assert_reply(rs[2], 250)


# ---------------------------------------------------------------------------------------------
# End to end: LMTP in, POP3 out


def test_lmtp_then_pop3_bytes(lsrv):
    body = (b"Plain line\n..dotted\n.\n" + bytes(range(0x80, 0x100)) + b"\n" +
            b"trailing spaces   \n\n\nlast line\n")
    m1 = msg("e2e-one", body=body).replace(b"\n", b"\r\n")
    m2 = msg("e2e-two", body=b"to demo and alice\n")
    c = smtplib.LMTP("127.0.0.1", lsrv.lmtp_port, timeout=10)
    try:
        c.ehlo("client.test")
        assert c.sendmail(SENDER, ["demo@example.org"], m1) == {}
        c.mail("other@example.net")
        c.rcpt("demo")
        c.rcpt("alice")
        assert c.data(to_crlf(m2))[0] == 250
        assert c.getreply()[0] == 250
        c.quit()
    finally:
        c.close()
    files = delivered(lsrv, "demo")
    assert len(files) == 2
    p = lsrv.login()
    sizes = p.list()
    uidls = p.uidl()
    assert len(sizes) == 2 and len(uidls) == 2
    got = {}
    for n in sizes:
        data = p.retr(n)
        got[n] = data
    p.quit()
    expected = {
        b"e2e-one": to_crlf(stored_expected(m1, SENDER, "demo@example.org")),
        b"e2e-two": to_crlf(stored_expected(m2, "other@example.net")),
    }
    for n, data in got.items():
        tok = b"e2e-one" if b"e2e-one" in data else b"e2e-two"
        assert data == expected[tok], "RETR %d differs" % n
        assert sizes[n] == len(data), "LIST size %d != RETR length %d" % (sizes[n], len(data))
    # LIST size equals W= of the file name
    ws = sorted(check_name_sizes(name, content)[1] for name, _, content in files)
    assert sorted(sizes.values()) == ws
    p = lsrv.login("alice", "alicepw")
    assert p.retr(1) == expected[b"e2e-two"]
    p.quit()


# ---------------------------------------------------------------------------------------------
# swaks


SWAKS = shutil.which("swaks") or "/usr/bin/swaks"


@pytest.mark.skipif(not os.access(SWAKS, os.X_OK), reason="swaks not installed (apt-get install swaks)")
@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_swaks(lsrv, via):
    where = (["--server", "127.0.0.1", "--port", str(lsrv.lmtp_port)] if via == "tcp"
             else ["--socket", lsrv.lmtp_path])
    tok = "swakstoken-" + via
    r = subprocess.run(
        [SWAKS, "--protocol", "LMTP", "--helo", "client.test", "--from", SENDER,
         "--to", "demo@example.org,nosuch@example.org,alice@example.org",
         "--header", "Subject: " + tok, "--body", "Body of " + tok + "\n..dotted\n"] + where,
        capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    # one refused recipient: swaks still delivers to the others and exits 0
    assert r.returncode == 0, "swaks exit %d:\n%s\n%s" % (r.returncode, out, r.stderr.decode())
    assert re.search(r"<\*\*\s+550 5\.1\.1", out), out
    (_, pd, cd), = find_token(lsrv, "demo", tok)
    (_, pa, ca), = find_token(lsrv, "alice", tok)
    assert cd == ca and os.stat(pd).st_ino == os.stat(pa).st_ino
    rp, dt, rest = split_added_headers(cd)
    assert rp == SENDER.encode() and dt is None
    assert b"\n..dotted\n" in rest


# ---------------------------------------------------------------------------------------------
# Robustness


def test_long_pipelined_burst(lsrv):
    """Many commands in one write: every reply comes, in order."""
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        burst = b"".join(b"NOOP\r\nMAIL FROM:<a%d@example.org>\r\nRCPT TO:<demo>\r\nRSET\r\n" % i
                         for i in range(150))
        c.send(burst + b"QUIT\r\n")
        for i in range(150):
            for what in ("NOOP", "MAIL", "RCPT", "RSET"):
                r = c.reply()
                assert r[0] == 250, "%s #%d -> %r" % (what, i, r)
        assert_reply(c.reply(), 221)
        c.expect_closed()
    assert delivered(lsrv, "demo") == []


def test_overlong_command_line(lsrv):
    with Lmtp(("127.0.0.1", lsrv.lmtp_port)) as c:
        c.lhlo()
        c.send(b"RCPT TO:<" + b"a" * 20000 + b">\r\n")
        try:
            r = c.reply()
            assert 500 <= r[0] < 600, r
        except Exception:  # noqa: BLE001 - closing the connection is fine too
            pass
    # the server still works
    fill_quota(lsrv, "demo", 1)
    assert len(delivered(lsrv, "demo")) == 1


def test_delivered_file_modes(lsrv):
    fill_quota(lsrv, "alice", 1)
    (_, path, _), = delivered(lsrv, "alice")
    st = os.stat(path)
    assert st.st_mode & 0o007 == 0, "message file readable by others: %o" % st.st_mode
    if lsrv.run_as:
        assert st.st_uid == lsrv._uid, "message file not owned by the mail user"
    for sub in ("new", "cur", "tmp"):
        st = os.stat(os.path.join(lsrv.maildir("alice"), sub))
        assert st.st_mode & 0o002 == 0
        if lsrv.run_as:
            assert st.st_uid == lsrv._uid


def test_sigterm_mid_transaction(lsrv):
    """A server stop abandons the open transaction: exit 0, nothing delivered, no temp file left."""
    c = Lmtp(("127.0.0.1", lsrv.lmtp_port))
    try:
        c.lhlo()
        start_txn(c, ["demo", "alice"])
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: cut\r\n\r\n" + b"partial\r\n" * 1000)
        time.sleep(0.2)
        lsrv.stop()  # must exit 0 within 10 s
    finally:
        c.close()
    assert delivered(lsrv, "demo") == [] and delivered(lsrv, "alice") == []
    assert tmp_files(lsrv, "demo") == []
