"""`buzon deliver -c CONF -u USER [-f SENDER] < message`: the local delivery agent for an MTA.

Exit codes (sysexits.h): 0 delivered, 64 usage, 67 unknown user, 75 temporary failure, 73 or 75
over quota. When the tests run as root the command runs as the server's user (as an MTA's pipe
transport would), so that file permissions mean something."""

import os
import subprocess
import threading

import pytest

from buzontest import to_crlf
from lmtptest import (
    check_name_sizes,
    delivered,
    find_token,
    lf_message,
    msg,
    set_user_extra,
    split_added_headers,
    tmp_files,
)

USERS = (("demo", "secret"), ("alice", "alicepw"))
SENDER = "sender@example.org"

EX_USAGE, EX_NOUSER, EX_CANTCREAT, EX_TEMPFAIL = 64, 67, 73, 75


def deliver(srv, user, message, sender=None, args=None, timeout=60):
    cmd = [srv.bin, "deliver", "-c", srv.conf]
    if user is not None:
        cmd += ["-u", user]
    if sender is not None:
        cmd += ["-f", sender]
    if args is not None:
        cmd = [srv.bin, "deliver"] + args
    kw = {}
    if srv.run_as:
        kw = {"user": srv._uid, "group": srv._gid, "extra_groups": []}
    os.chmod(srv.conf, 0o644)
    r = subprocess.run(cmd, input=message, capture_output=True, timeout=timeout, **kw)
    srv._check_cli(r)
    return r


def describe(r):
    return "exit %s\nstdout: %s\nstderr: %s" % (r.returncode, r.stdout.decode("utf-8", "replace"),
                                                r.stderr.decode("utf-8", "replace"))


@pytest.fixture
def dsrv(make_server):
    srv = make_server(users=USERS, start=False)
    r = subprocess.run([srv.bin, "deliver", "--help"], capture_output=True, timeout=10)
    if b"unknown command" in (r.stdout + r.stderr).lower():
        pytest.fail("`buzon deliver` does not exist yet: " + describe(r))
    return srv


def check_stored(content, message, sender):
    rp, dt, rest = split_added_headers(content)
    if sender is not None:
        assert rp == sender.encode(), "Return-Path %r, expected %r" % (rp, sender)
    else:
        assert rp is not None, "no Return-Path header"
    assert dt in (None, b"demo", b"alice"), dt
    assert rest == lf_message(message), rest[:300]


def test_deliver_basic_then_pop3(dsrv):
    m = msg("deliver1", body=b"Hello from deliver.\n..two dots stay\n.\n")
    r = deliver(dsrv, "demo", m, sender=SENDER)
    assert r.returncode == 0, describe(r)
    (name, path, content), = delivered(dsrv, "demo")
    assert os.path.basename(os.path.dirname(path)) == "new"
    check_stored(content, m, SENDER)
    _, w = check_name_sizes(name, content)
    assert tmp_files(dsrv, "demo") == []
    dsrv.start()
    p = dsrv.login()
    assert p.list() == {1: w}
    assert p.retr(1) == to_crlf(content)
    p.quit()


def test_deliver_crlf_input(dsrv):
    m = msg("crlf", body=b"one\n.\ntwo\n").replace(b"\n", b"\r\n")
    r = deliver(dsrv, "demo", m, sender=SENDER)
    assert r.returncode == 0, describe(r)
    (name, _, content), = delivered(dsrv, "demo")
    assert b"\r" not in content
    check_stored(content, m, SENDER)
    check_name_sizes(name, content)


def test_deliver_8bit(dsrv):
    m = msg("eight", body=bytes(range(0x80, 0x100)) + b"\n" + "\u00fcml\u00e4ut\n".encode())
    r = deliver(dsrv, "demo", m, sender="j\u00f6@ex\u00e4mple.org")
    assert r.returncode == 0, describe(r)
    (_, _, content), = delivered(dsrv, "demo")
    check_stored(content, m, "j\u00f6@ex\u00e4mple.org")


def test_deliver_no_final_newline(dsrv):
    m = b"Subject: nonl\n\nno newline at the end"
    r = deliver(dsrv, "demo", m, sender=SENDER)
    assert r.returncode == 0, describe(r)
    (name, _, content), = delivered(dsrv, "demo")
    rp, dt, rest = split_added_headers(content)
    assert rest in (m, m + b"\n"), rest
    check_name_sizes(name, content)


def test_deliver_null_and_missing_sender(dsrv):
    r = deliver(dsrv, "demo", msg("nullsender"), sender="")
    assert r.returncode == 0, describe(r)
    (_, _, content), = find_token(dsrv, "demo", "nullsender")
    assert content.startswith(b"Return-Path: <>\n"), content[:100]
    r = deliver(dsrv, "demo", msg("nosender"))
    assert r.returncode == 0, describe(r)
    (_, _, content), = find_token(dsrv, "demo", "nosender")
    check_stored(content, msg("nosender"), None)


def test_deliver_creates_maildir(dsrv):
    assert not os.path.exists(dsrv.maildir("alice"))
    r = deliver(dsrv, "alice", msg("fresh"), sender=SENDER)
    assert r.returncode == 0, describe(r)
    for sub in ("new", "cur", "tmp"):
        d = os.path.join(dsrv.maildir("alice"), sub)
        assert os.path.isdir(d), d
        assert os.stat(d).st_mode & 0o002 == 0, "%s is world-writable" % d
    (_, path, content), = delivered(dsrv, "alice")
    check_stored(content, msg("fresh"), SENDER)
    if dsrv.run_as:
        assert os.stat(path).st_uid == dsrv._uid
    assert os.stat(path).st_mode & 0o002 == 0, "message file is world-writable"


def test_deliver_large_message(dsrv):
    body = (b"A" * 75 + b"\n") * (6 * 1024 * 1024 // 76)
    m = msg("bigdeliver", body=body)
    r = deliver(dsrv, "demo", m, sender=SENDER)
    assert r.returncode == 0, describe(r)
    (name, _, content), = delivered(dsrv, "demo")
    check_stored(content, m, SENDER)
    check_name_sizes(name, content)


def test_unknown_user(dsrv):
    r = deliver(dsrv, "nosuch", msg("x"), sender=SENDER)
    assert r.returncode == EX_NOUSER, describe(r)
    assert r.stderr.strip(), "no error message"
    assert not os.path.exists(dsrv.maildir("nosuch"))


@pytest.mark.parametrize("args", [
    [],                                       # nothing at all
    ["-c", "CONF"],                           # no -u
    ["-c", "CONF", "-u"],                     # -u without its value
    ["-c", "CONF", "-u", "demo", "--bogus"],  # unknown option
    ["-c", "CONF", "-u", "demo", "extra"],    # stray argument
])
def test_usage_errors(dsrv, args):
    args = [dsrv.conf if a == "CONF" else a for a in args]
    r = deliver(dsrv, None, msg("usage"), args=args)
    assert r.returncode == EX_USAGE, describe(r)
    assert r.stderr.strip()
    assert delivered(dsrv, "demo") == []


def test_missing_config(dsrv):
    r = deliver(dsrv, None, msg("noconf"), args=["-c", dsrv.conf + ".missing", "-u", "demo"])
    assert r.returncode != 0, describe(r)
    assert r.stderr.strip()
    assert delivered(dsrv, "demo") == []


def test_maildir_not_writable(dsrv):
    md = dsrv.make_maildir("demo")
    for sub in ("tmp", "new", "cur"):
        os.chmod(os.path.join(md, sub), 0o555)
    os.chmod(md, 0o555)
    try:
        r = deliver(dsrv, "demo", msg("nowrite"), sender=SENDER)
    finally:
        for sub in ("tmp", "new", "cur"):
            os.chmod(os.path.join(md, sub), 0o700)
        os.chmod(md, 0o700)
    assert r.returncode == EX_TEMPFAIL, describe(r)
    assert r.stderr.strip()
    assert delivered(dsrv, "demo") == []


def test_maildir_path_is_a_file(dsrv):
    path = dsrv.maildir("demo")
    with open(path, "w") as f:
        f.write("not a directory\n")
    if dsrv.run_as:
        os.chown(path, dsrv._uid, dsrv._gid)
    r = deliver(dsrv, "demo", msg("isfile"), sender=SENDER)
    assert r.returncode == EX_TEMPFAIL, describe(r)


def test_passwd_file_unreadable(dsrv):
    if dsrv.run_as is None and os.geteuid() == 0:
        pytest.skip("root reads any file")
    pw = dsrv.settings["auth"]["passwd_file"]
    os.chmod(pw, 0o000)
    try:
        r = deliver(dsrv, "demo", msg("nopasswd"), sender=SENDER)
    finally:
        os.chmod(pw, 0o600)
    assert r.returncode == EX_TEMPFAIL, describe(r)
    assert r.stderr.strip()
    assert delivered(dsrv, "demo") == []


def test_over_quota(dsrv):
    set_user_extra(dsrv, "quser", "userdb_quota_rule=*:storage=1G:messages=2")
    for i in range(2):
        r = deliver(dsrv, "quser", msg("q%d" % i), sender=SENDER)
        assert r.returncode == 0, describe(r)
    r = deliver(dsrv, "quser", msg("q-over"), sender=SENDER)
    assert r.returncode in (EX_CANTCREAT, EX_TEMPFAIL), describe(r)
    assert r.stderr.strip()
    assert len(delivered(dsrv, "quser")) == 2
    assert not find_token(dsrv, "quser", "q-over")
    assert tmp_files(dsrv, "quser") == []


def test_over_quota_bytes(dsrv):
    set_user_extra(dsrv, "quser", "quota_bytes=10K")
    big = msg("qbig", body=(b"b" * 99 + b"\n") * 120)
    r = deliver(dsrv, "quser", big, sender=SENDER)
    assert r.returncode in (EX_CANTCREAT, EX_TEMPFAIL), describe(r)
    assert delivered(dsrv, "quser") == []
    r = deliver(dsrv, "quser", msg("qsmall"), sender=SENDER)
    assert r.returncode == 0, describe(r)


def test_quota_freed_by_pop3_dele(dsrv):
    set_user_extra(dsrv, "quser", "quota_messages=1", password="pw")
    assert deliver(dsrv, "quser", msg("first"), sender=SENDER).returncode == 0
    r = deliver(dsrv, "quser", msg("second"), sender=SENDER)
    assert r.returncode in (EX_CANTCREAT, EX_TEMPFAIL), describe(r)
    dsrv.start()
    p = dsrv.login("quser", "pw")
    p.ok("DELE 1")
    p.quit()
    r = deliver(dsrv, "quser", msg("third"), sender=SENDER)
    assert r.returncode == 0, describe(r)
    (_, _, content), = delivered(dsrv, "quser")
    assert b"third" in content


def test_deliver_while_pop3_session_open(dsrv):
    deliver(dsrv, "demo", msg("before"), sender=SENDER)
    dsrv.start()
    p = dsrv.login()
    assert p.stat()[0] == 1
    r = deliver(dsrv, "demo", msg("during"), sender=SENDER)
    assert r.returncode == 0, describe(r)
    assert p.stat()[0] == 1  # the open session keeps its snapshot
    p.quit()
    p = dsrv.login()
    assert p.stat()[0] == 2
    p.quit()


def test_concurrent_delivers(dsrv):
    results = [None] * 12

    def one(i):
        results[i] = deliver(dsrv, "demo", msg("par%02d" % i), sender=SENDER)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in results:
        assert r is not None and r.returncode == 0, describe(r) if r else "thread hung"
    files = delivered(dsrv, "demo")
    assert len(files) == len(results)
    for i in range(len(results)):
        (_, _, content), = find_token(dsrv, "demo", "par%02d@" % i)
        check_stored(content, msg("par%02d" % i), SENDER)
