"""UIDL stability and uniqueness, and the Maildir side effects of a session (new/ -> cur/, the S flag,
the index file), plus the UPDATE state (RFC 1939 §6, §7)."""

import os
import re
import socket
import time

import pytest

from buzontest import is_root, retr_expected, wait_until


def _uidls(srv):
    c = srv.login()
    u = c.uidl()
    c.quit()
    return u


def test_uidl_format_and_validity(server):
    for i in range(5):
        server.deliver(b"Subject: %d\n\nbody %d\n" % (i, i))
    u = _uidls(server)
    assert sorted(u) == [1, 2, 3, 4, 5]
    vals = list(u.values())
    for v in vals:
        assert re.fullmatch(r"[0-9a-f]{16}", v), v
    assert len(set(vals)) == 5
    # The last 8 hex digits are the mailbox's UIDVALIDITY: the same for every message.
    assert len({v[8:] for v in vals}) == 1, vals
    # UIDs ascend in delivery order.
    uids = [int(u[n][:8], 16) for n in sorted(u)]
    assert uids == sorted(uids) and len(set(uids)) == 5


def test_uidl_stable_across_sessions(server):
    for i in range(3):
        server.deliver(b"Subject: %d\n\nbody\n" % i)
    first = _uidls(server)
    assert _uidls(server) == first
    assert _uidls(server) == first


def test_uidl_stable_across_restart(server):
    for i in range(3):
        server.deliver(b"Subject: %d\n\nbody\n" % i)
    first = _uidls(server)
    server.restart()
    assert _uidls(server) == first


def test_uidl_stable_when_new_mail_arrives(server):
    for i in range(3):
        server.deliver(b"Subject: %d\n\nbody\n" % i)
    first = _uidls(server)
    server.deliver(b"Subject: new\n\nnew body\n")
    second = _uidls(server)
    assert {n: second[n] for n in (1, 2, 3)} == first
    assert second[4] not in first.values()


def test_uidl_stable_when_earlier_message_deleted(server):
    for i in range(4):
        server.deliver(b"Subject: %d\n\nbody\n" % i)
    first = _uidls(server)
    c = server.login()
    c.ok("DELE 2")
    c.quit()
    second = _uidls(server)
    assert list(second.values()) == [first[1], first[3], first[4]]


def test_uidl_never_reused_after_deletion(server):
    server.deliver(b"Subject: a\n\nfirst\n")
    server.deliver(b"Subject: b\n\nsecond\n")
    first = _uidls(server)
    c = server.login()
    c.ok("DELE 2")
    c.ok("DELE 1")
    c.quit()
    assert server.files() == {}
    # Same content again: still new UIDLs.
    server.deliver(b"Subject: a\n\nfirst\n")
    server.deliver(b"Subject: b\n\nsecond\n")
    second = _uidls(server)
    assert len(second) == 2
    assert not set(second.values()) & set(first.values()), (first, second)
    # and across a restart, once more
    c = server.login()
    c.ok("DELE 1")
    c.quit()
    server.restart()
    server.deliver(b"Subject: c\n\nthird\n")
    third = _uidls(server)
    assert not set(third.values()) & (set(first.values()) | {second[1]}), (first, second, third)
    assert second[2] in third.values()


def test_cur_messages_with_flags_are_listed(server):
    a = server.deliver(b"Subject: in cur seen\n\nA\n", subdir="cur", flags="S")
    b = server.deliver(b"Subject: in cur flagged\n\nB\n", subdir="cur", flags="F")
    c_ = server.deliver(b"Subject: in new\n\nC\n")
    c = server.login()
    assert c.stat()[0] == 3
    assert c.retr(1) == retr_expected(b"Subject: in cur seen\n\nA\n")
    assert c.retr(2) == retr_expected(b"Subject: in cur flagged\n\nB\n")
    assert c.retr(3) == retr_expected(b"Subject: in new\n\nC\n")
    c.quit()
    files = server.files()
    assert set(files) == {a, b, c_}
    assert "S" in files[b][1] and "F" in files[b][1], files[b]
    assert files[a][1] is not None and "S" in files[a][1]


def test_tmp_files_are_not_messages(server):
    md = server.make_maildir()
    with open(os.path.join(md, "tmp", "1700000000.M0P0.inprogress"), "wb") as f:
        f.write(b"Subject: half delivered\n\n")
    server.deliver(b"Subject: real\n\nreal\n")
    c = server.login()
    assert c.stat()[0] == 1
    c.quit()


def test_login_moves_new_to_cur_and_retr_sets_seen(server):
    b1 = server.deliver(b"Subject: 1\n\none\n")
    b2 = server.deliver(b"Subject: 2\n\ntwo\n")
    b3 = server.deliver(b"Subject: 3\n\nthree\n")
    assert {f[0] for f in server.files().values()} == {"new"}
    c = server.login()
    files = server.files()
    assert {f[0] for f in files.values()} == {"cur"}, files
    assert os.path.exists(os.path.join(server.maildir(), "buzon-uidlist"))
    c.retr(1)
    c.top(2, 1)
    # S is set at QUIT, not before
    assert not any(f[1] and "S" in f[1] for f in server.files().values())
    c.quit()
    files = server.files()
    assert files[b1][1] is not None and "S" in files[b1][1], files
    assert not (files[b2][1] and "S" in files[b2][1]), "TOP must not mark a message seen: %r" % files
    assert not (files[b3][1] and "S" in files[b3][1]), files


def test_retr_marks_seen_off(make_server):
    srv = make_server(settings={"pop3": {"retr_marks_seen": "no"}})
    b1 = srv.deliver(b"Subject: 1\n\none\n")
    c = srv.login()
    c.retr(1)
    c.quit()
    f = srv.files()[b1]
    assert not (f[1] and "S" in f[1]), f


def test_retr_then_abort_sets_no_flag(server):
    b1 = server.deliver(b"Subject: 1\n\none\n")
    c = server.login()
    c.retr(1)
    c.close()
    time.sleep(0.5)
    c = server.login()  # also proves the lock was released
    c.quit()
    f = server.files()[b1]
    assert not (f[1] and "S" in f[1]), f


def test_quit_without_dele_changes_no_content(server):
    data = b"Subject: keep\n\nkeep me\n"
    b1 = server.deliver(data)
    c = server.login()
    c.retr(1)
    c.quit()
    with open(server.files()[b1][2], "rb") as f:
        assert f.read() == data


def test_dele_then_disconnect_deletes_nothing(server):
    bases = [server.deliver(b"Subject: %d\n\nx\n" % i) for i in range(3)]
    c = server.login()
    c.ok("DELE 1")
    c.ok("DELE 3")
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    time.sleep(0.5)
    assert sorted(server.files()) == sorted(bases)
    c = wait_until(lambda: _try_login(server), 5)
    assert c, "could not log in after the aborted session"
    assert c.stat()[0] == 3
    c.quit()


def _try_login(srv):
    c = srv.connect()
    c.ok("USER demo")
    r = c.cmd("PASS secret")
    if r.startswith("+OK"):
        return c
    c.close()
    return None


def test_quit_sent_without_reading_reply_still_applies(server):
    # Some clients close right after sending QUIT; the deletions must still happen (POP3-NOTES).
    bases = [server.deliver(b"Subject: %d\n\nx\n" % i) for i in range(3)]
    c = server.login()
    c.send(b"DELE 2\r\nQUIT\r\n")
    c.close()
    assert wait_until(lambda: sorted(server.files()) == sorted([bases[0], bases[2]]), 5), server.files()
    c = wait_until(lambda: _try_login(server), 5)
    assert c.stat()[0] == 2
    c.quit()


def test_sigterm_mid_session_deletes_nothing(server):
    bases = [server.deliver(b"Subject: %d\n\nx\n" % i) for i in range(3)]
    c = server.login()
    c.ok("DELE 1")
    c.ok("DELE 2")
    c.retr(3)
    server.stop()  # SIGTERM: must exit 0 within 10 s, no sanitizer report
    try:
        c.expect_closed(5)
    except AssertionError:
        pass
    c.close()
    files = server.files()
    assert sorted(files) == sorted(bases), "SIGTERM applied deletions: %r" % files
    assert not (files[bases[2]][1] and "S" in files[bases[2]][1])
    server.start()
    c = server.login()
    assert c.stat()[0] == 3
    c.quit()


def test_sigterm_with_idle_connections(server):
    clients = [server.connect() for _ in range(5)]
    logged = server.login()
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 10
    for c in clients + [logged]:
        c.close()


def test_failed_deletion_reports_sys_temp(server):
    if is_root() and not server.run_as:
        pytest.skip("the server runs as root, which ignores directory permissions")
    bases = [server.deliver(b"Subject: %d\n\nx\n" % i) for i in range(2)]
    c = server.login()
    cur = os.path.join(server.maildir(), "cur")
    c.ok("DELE 1")
    os.chmod(cur, 0o500)
    try:
        r = c.cmd("QUIT")
    finally:
        os.chmod(cur, 0o700)
    assert r.startswith("-ERR [SYS/TEMP]"), r
    c.close()
    assert bases[0] in server.files()


def test_failed_deletion_reports_sys_temp_as_root(server):
    # Works as root too: the message file is replaced by a non-empty directory of the same name while
    # the session is open, so unlink() fails (EISDIR/EPERM) at QUIT.
    bases = [server.deliver(b"Subject: %d\n\nx\n" % i) for i in range(2)]
    c = server.login()
    c.ok("DELE 1")
    path = server.files()[bases[0]][2]
    os.unlink(path)
    os.mkdir(path)
    with open(os.path.join(path, "blocker"), "w") as f:
        f.write("x")
    r = c.cmd("QUIT")
    assert r.startswith("-ERR [SYS/TEMP]"), r
    c.close()


def _big(n_lines=300000):
    return b"Subject: big\n\n" + b"0123456789abcdefghijklmnopqrstuvwxyz.0123456789abcdefghijklmnopqrstuvwxyz\n" * n_lines


def test_sigterm_while_client_does_not_read_big_retr(server):
    # A client that stops reading in the middle of a 22 MB RETR must not keep the server from stopping.
    server.deliver(_big())
    c = server.login()
    c.send(b"RETR 1\r\n")
    time.sleep(0.5)
    t0 = time.monotonic()
    server.stop()  # exit 0 within 10 s
    assert time.monotonic() - t0 < 10
    c.close()
    assert len(server.files()) == 1


def test_client_disconnects_mid_retr(server):
    server.deliver(_big())
    server.deliver(b"Subject: small\n\nsmall\n")
    for _ in range(3):
        c = server.login() if _ == 0 else wait_until(lambda: _try_login(server), 5)
        assert c
        c.send(b"RETR 1\r\n")
        c._fill()
        c.sock.close()
    c = wait_until(lambda: _try_login(server), 5)
    assert c, "lock not released after disconnects mid-RETR"
    assert c.retr(2) == b"Subject: small\r\n\r\nsmall\r\n"
    c.quit()


def test_message_removed_behind_our_back(server):
    b1 = server.deliver(b"Subject: 1\n\none\n")
    server.deliver(b"Subject: 2\n\ntwo\n")
    c = server.login()
    os.unlink(server.files()[b1][2])
    r = c.cmd("RETR 1")
    assert r.startswith("-ERR"), r
    # the session goes on
    assert c.retr(2) == b"Subject: 2\r\n\r\ntwo\r\n"
    c.ok("DELE 1")
    c.ok("DELE 2")
    r = c.cmd("QUIT")
    assert r.startswith("+OK") or r.startswith("-ERR [SYS/TEMP]"), r
    assert server.files() == {}


def _age_dirs(srv, seconds=10):
    """Makes cur/ and new/ look untouched for a while, as in a mailbox nobody wrote to lately."""
    past = time.time() - seconds
    for sub in ("cur", "new"):
        os.utime(os.path.join(srv.maildir(), sub), (past, past))


def _index_header(srv):
    with open(os.path.join(srv.maildir(), "buzon-uidlist"), "rb") as f:
        return f.readline().decode().split()


def test_unchanged_mailbox_opens_from_the_index_and_sees_every_change(server):
    """Once cur/ and new/ have settled, the index records their times and a login trusts it
    without reading the directories; any delivery, removal or rename changes a time and is seen."""
    for i in range(3):
        server.deliver(b"Subject: %d\n\nbody\n" % i)
    first = _uidls(server)  # moves new/ to cur/: the directories have just changed
    assert _index_header(server)[4:] == ["-", "-"]
    _age_dirs(server)
    assert _uidls(server) == first  # full read; the times are old enough to be recorded
    header = _index_header(server)
    assert header[:2] == ["buzon-uidlist", "3"] and header[4] != "-", header
    assert _uidls(server) == first  # from the index alone

    # a delivery into new/ changes new/'s time
    server.deliver(b"Subject: later\n\nbody\n")
    after_delivery = _uidls(server)
    assert len(after_delivery) == 4
    assert {k: after_delivery[k] for k in first} == first

    # another Maildir tool removes one file and renames another (flags) in cur/
    _age_dirs(server)
    _uidls(server)
    cur = os.path.join(server.maildir(), "cur")
    names = sorted(os.listdir(cur))
    os.unlink(os.path.join(cur, names[0]))
    os.rename(os.path.join(cur, names[1]), os.path.join(cur, names[1].split(":")[0] + ":2,RS"))
    c = server.login()
    assert c.stat()[0] == 3
    u = c.uidl()
    assert sorted(u.values()) == sorted(list(after_delivery.values())[1:])
    # the renamed message is readable under its new name (the snapshot has it)
    for n in u:
        assert c.retr(n)
    c.quit()


def test_names_too_long_for_flags_keep_quit_working(server):
    # NAME_MAX is 255: a name of 252 octets takes ":2," but not ":2,S", one of 254 takes no info.
    # Both must be listed, keep their UIDLs, and never make QUIT answer -ERR.
    new = os.path.join(server.make_maildir(), "new")
    bases = []
    for tag, length in (("a", 252), ("b", 254)):
        base = ("1700000000.M1P1.%s" % tag).ljust(length, "x")
        with open(os.path.join(new, base), "wb") as f:
            f.write(b"Subject: %s\n\nbody\n" % tag.encode())
        bases.append(base)
    first = None
    for _ in range(2):
        c = server.login()
        u = c.uidl()
        assert len(u) == 2
        assert first is None or u == first
        first = u
        for n in u:
            assert c.retr(n)
        assert c.quit().startswith("+OK")
    files = server.files()
    assert sorted(files) == bases
    assert {f[0] for f in files.values()} == {"cur"}, files
