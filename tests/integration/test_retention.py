"""The undelete window and EXPIRE (issue 8, items 1 and 2): messages deleted through POP3 wait in
the Maildir's hidden buzon-deleted/ with their UID, invisible to POP3 and outside the quota, until
`buzon undelete` brings them back (same UIDL) or a purge removes them for good; EXPIRE deletes
retrieved messages at QUIT and in `buzon purge`.

Time is injected, never waited for: BUZON_TEST_NOW=SECONDS (core/util.h, wall_now()) in the
environment of a server or a command makes it believe that is the time.

Proven:
  - DELE + QUIT moves the file (same name) into buzon-deleted/; STAT, LIST and UIDL no longer show
    it, the quota usage no longer counts it, and the index keeps its UID with the deletion time;
  - `buzon undelete` (all, --uidl, --since, --dry-run) moves it back; a client that kept its UIDL
    list sees exactly the same UIDLs (it would download nothing again); the usage counts it again,
    and restoring over the quota is done and said;
  - undelete refuses while the user is logged in, and changes nothing;
  - once the retention is over, QUIT, `buzon purge` and the server's background purge remove the
    message and its entry, and its UID is never handed out again;
  - EXPIRE 0 deletes what RETR fetched (not what TOP showed) at QUIT; EXPIRE N deletes messages
    retrieved more than N days ago, at QUIT and in `buzon purge`, per user (passwd-file expire=);
  - crash safety: a commit that moved the files but could not save the index (fault injected)
    loses nothing: the next login finds them in buzon-deleted/ and keeps them there, restorable
    with their UIDLs; SIGKILLs at random moments of such commits never lose or duplicate a
    message.
"""

import os
import random
import re
import subprocess
import time

import pytest

from buzontest import (DEMO_PASS, DEMO_USER, VALGRIND, make_message, pop3_size, valgrind_prefix,
                       wait_until)
from crashtest import DelayedKill, sigkill_server, use_port_outside_ephemeral_range
from test_storage_faults import Faults, assert_index_whole, fault_shim  # noqa: F401 (fixture)

DELETED_DIR = "buzon-deleted"
INDEX_NAME = "buzon-uidlist"
QUOTA_NAME = "buzon-quota"
DAY = 86400


def deliver(srv, count, user=DEMO_USER, start=1):
    """count messages r<start>... into new/; returns [content]."""
    out = []
    for i in range(start, start + count):
        data = make_message("r%d" % i, b"Body of message %d.\n" % i * (i % 5 + 1))
        srv.deliver(data, user=user)
        out.append(data)
    return out


def deleted_area(srv, user=DEMO_USER):
    d = os.path.join(srv.maildir(user), DELETED_DIR)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def index_lines(srv, user=DEMO_USER):
    """{uid: (retrieved_at, deleted_at, name)} from buzon-uidlist (times None when "-")."""
    with open(os.path.join(srv.maildir(user), INDEX_NAME), "rb") as f:
        data = f.read()
    assert_index_whole(data)
    out = {}
    for line in data.decode().split("\n")[1:-2]:
        fields = line.split(" ")
        times = fields[3:5] if len(fields) == 6 else ["-", "-"]
        out[int(fields[0])] = tuple(None if t == "-" else int(t) for t in times) + (fields[-1],)
    return out


def quota_usage(srv, user=DEMO_USER):
    with open(os.path.join(srv.maildir(user), QUOTA_NAME)) as f:
        octets, messages = f.read().split()
    return int(octets), int(messages)


def run_cli(srv, *args, now=None):
    """Runs `buzon ARGS -c CONF`, with BUZON_TEST_NOW=now when given; returns the result."""
    env = dict(os.environ)
    if now is not None:
        env["BUZON_TEST_NOW"] = str(int(now))
    r = subprocess.run(valgrind_prefix(srv.base) + [srv.bin] + list(args[:1]) +
                       ["-c", srv.conf] + list(args[1:]), capture_output=True, env=env,
                       timeout=60)
    srv._check_cli(r)
    r.out = r.stdout.decode()
    r.err = r.stderr.decode()
    return r


def start_at(srv, monkeypatch, now):
    """Starts srv believing it is `now` (None: the real time)."""
    if now is None:
        monkeypatch.delenv("BUZON_TEST_NOW", raising=False)
    else:
        monkeypatch.setenv("BUZON_TEST_NOW", str(int(now)))
    srv.start()
    monkeypatch.delenv("BUZON_TEST_NOW", raising=False)


def session_uidls(srv):
    with srv.login() as p:
        uidls = p.uidl()
        p.quit()
    return uidls


def delete_and_quit(srv, numbers):
    with srv.login() as p:
        for n in numbers:
            p.ok("DELE %d" % n)
        p.quit()


@pytest.fixture
def make_server(make_server):
    """The harness's factory, and afterwards no child of any server may have been killed: the
    moves and purges run in sandboxed workers, where a system call off the seccomp list is
    fatal (and would otherwise only show as a restarted worker)."""
    made = []

    def factory(*args, **kwargs):
        srv = make_server(*args, **kwargs)
        made.append(srv)
        return srv

    yield factory
    for srv in made:
        assert "event=child_killed" not in srv.all_stderr(), srv.all_stderr()[-3000:]


def fault_server(make_server, fault_shim, monkeypatch, settings):
    """A server whose processes load tests/fs_fault_shim.c, scoped to demo's Maildir."""
    srv = make_server(settings=settings, start=False)
    srv.make_maildir(DEMO_USER)
    srv.faults = Faults(os.path.join(os.path.dirname(srv.maildir(DEMO_USER)), "fault-control"))
    monkeypatch.setenv("LD_PRELOAD", fault_shim)
    monkeypatch.setenv("BUZON_FAULT_CONTROL", srv.faults.path)
    monkeypatch.setenv("BUZON_FAULT_SCOPE", srv.maildir(DEMO_USER))
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "verify_asan_link_order=0")
    srv.start()
    monkeypatch.delenv("LD_PRELOAD")  # not for the commands the test runs
    return srv


# ---------------------------------------------------------------------------------------------


def test_deleted_messages_wait_hidden_with_their_uid(make_server):
    srv = make_server(settings={"mail": {"deleted_retention": "1d"}})
    msgs = deliver(srv, 3)
    before = session_uidls(srv)
    names_before = {b: os.path.basename(p) for b, (s, f, p) in srv.files().items()}
    assert quota_usage(srv) == (sum(len(m) for m in msgs), 3)

    delete_and_quit(srv, [1, 3])
    # the same file names, out of cur/ into the hidden area; nothing lost, nothing unlinked
    assert deleted_area(srv) == sorted(v for k, v in names_before.items()
                                       if k not in srv.files())
    assert len(deleted_area(srv)) == 2 and len(srv.files()) == 1
    with srv.login() as p:
        assert p.stat() == (1, pop3_size(msgs[1]))
        assert list(p.uidl().values()) == [before[2]]
        assert list(p.list().keys()) == [1]
        p.err("RETR 2")
        p.quit()
    assert quota_usage(srv) == (len(msgs[1]), 1)
    lines = index_lines(srv)
    assert sorted(lines) == [1, 2, 3]  # every UID kept
    now = time.time()
    for uid in (1, 3):
        assert lines[uid][1] is not None and abs(lines[uid][1] - now) < 60, lines
    assert lines[2][1] is None


def test_undelete_round_trip_keeps_every_uidl(make_server):
    srv = make_server(settings={"mail": {"deleted_retention": "1d"},
                                "auth": {"failure_delay": "0"}})
    msgs = deliver(srv, 4)
    kept = session_uidls(srv)  # what a client that keeps mail on the server remembers
    delete_and_quit(srv, [2, 3, 4])

    r = run_cli(srv, "undelete", "--dry-run", DEMO_USER)
    assert r.returncode == 0, r.err
    assert r.out.count("would restore") == 3 and "dry run" in r.out, r.out
    assert len(deleted_area(srv)) == 3  # a dry run changes nothing

    r = run_cli(srv, "undelete", "--uidl", kept[3], DEMO_USER)
    assert r.returncode == 0, r.err
    assert re.search(r"^restored %s \(uid 3, %d octets" % (kept[3], pop3_size(msgs[2])), r.out,
                     re.M), r.out
    assert "1 messages restored" in r.out
    assert session_uidls(srv) == {1: kept[1], 2: kept[3]}

    r = run_cli(srv, "undelete", "--since", "2020-01-01", DEMO_USER)
    assert r.returncode == 0 and len(re.findall(r"^restored ", r.out, re.M)) == 2, r.out
    # the client's list and the server's agree: nothing to download again
    assert session_uidls(srv) == kept
    assert deleted_area(srv) == []
    assert quota_usage(srv) == (sum(len(m) for m in msgs), 4)
    assert all(t[1] is None for t in index_lines(srv).values())

    r = run_cli(srv, "undelete", DEMO_USER)
    assert r.returncode == 0 and "no deleted message matches" in r.out

    # --since in the future of every deletion selects nothing; a bad TIME is a usage error
    delete_and_quit(srv, [1])
    assert "no deleted message" in run_cli(srv, "undelete", "--since", "1h", DEMO_USER,
                                           now=time.time() + 7200).out
    r = run_cli(srv, "undelete", "--since", "yesterday", DEMO_USER)
    assert r.returncode == 64 and "--since" in r.err
    assert run_cli(srv, "undelete", "nobody-here").returncode == 67


def test_undelete_refused_while_logged_in(make_server):
    srv = make_server(settings={"mail": {"deleted_retention": "1d"}})
    deliver(srv, 2)
    delete_and_quit(srv, [1])
    with srv.login() as p:
        r = run_cli(srv, "undelete", DEMO_USER)
        assert r.returncode == 75, (r.out, r.err)
        assert "logged in" in r.err and "nothing was restored" in r.err
        assert len(deleted_area(srv)) == 1
        assert p.stat()[0] == 1
        p.quit()
    assert run_cli(srv, "undelete", DEMO_USER).returncode == 0
    assert deleted_area(srv) == []


def test_quota_counts_only_live_mail(make_server):
    """LMTP and `buzon deliver` check the usage file; deleted mail leaves it at QUIT and comes
    back into it with undelete, which may go over the quota and says so."""
    srv = make_server(settings={"mail": {"deleted_retention": "1d", "quota_messages": "2"}})
    deliver(srv, 2)
    session_uidls(srv)
    r = subprocess.run([srv.bin, "deliver", "-c", srv.conf, "-u", DEMO_USER],
                       input=make_message("over", b"x\n"), capture_output=True, timeout=30)
    assert r.returncode != 0 and b"quota" in r.stderr  # full
    delete_and_quit(srv, [1, 2])
    assert quota_usage(srv)[1] == 0
    # room again: deleted mail does not count (delivered as the server's user, as an MTA would)
    srv.deliver(make_message("new1", b"y\n"))
    srv.deliver(make_message("new2", b"z\n"))
    assert len(session_uidls(srv)) == 2
    assert quota_usage(srv)[1] == 2
    r = run_cli(srv, "undelete", DEMO_USER)
    assert r.returncode == 0 and "2 messages restored" in r.out
    assert "over quota" in r.out and "may exceed the quota" in r.out, r.out
    assert quota_usage(srv)[1] == 4
    assert len(session_uidls(srv)) == 4


def test_purge_after_the_retention(make_server, monkeypatch):
    """QUIT, `buzon purge` and the background purge each remove what is due, and only that."""
    srv = make_server(settings={"mail": {"deleted_retention": "1h", "purge_interval": "0"}})
    deliver(srv, 4)
    uidls = session_uidls(srv)
    delete_and_quit(srv, [1, 2])
    now = time.time()

    r = run_cli(srv, "purge", now=now + 1800)  # too early
    assert r.returncode == 0 and "0 deleted messages purged" in r.out, r.out
    assert len(deleted_area(srv)) == 2
    r = run_cli(srv, "purge", DEMO_USER, now=now + 3700)
    assert r.returncode == 0 and "2 deleted messages purged" in r.out, r.out
    assert deleted_area(srv) == [] and sorted(index_lines(srv)) == [3, 4]
    assert run_cli(srv, "undelete", DEMO_USER).out.strip().endswith("no deleted message matches")

    # at QUIT: a server that believes the hour is over purges at the end of any session
    delete_and_quit(srv, [1])
    assert len(deleted_area(srv)) == 1
    srv.stop()
    start_at(srv, monkeypatch, now + 3700)
    session_uidls(srv)
    assert deleted_area(srv) == [] and sorted(index_lines(srv)) == [4]

    # a UID is never handed out again: a new message gets a new one
    deliver(srv, 1, start=9)
    assert sorted(session_uidls(srv).values()) == sorted([uidls[4], "%08x" % 5 + uidls[4][8:]])


def test_background_purge(make_server, monkeypatch):
    srv = make_server(settings={"mail": {"deleted_retention": "1h", "purge_interval": "1s"}},
                      users=((DEMO_USER, DEMO_PASS), ("other", "pw2")), start=False)
    srv.start()
    deliver(srv, 2)
    deliver(srv, 2, user="other")
    delete_and_quit(srv, [1])
    with srv.login("other", "pw2") as p:
        p.ok("DELE 2")
        p.quit()
    srv.stop()
    start_at(srv, monkeypatch, time.time() + 7200)
    gone = wait_until(lambda: sorted(index_lines(srv)) == [2] and
                      sorted(index_lines(srv, "other")) == [1], 10)
    assert gone, srv.stderr_text()[-3000:]
    assert deleted_area(srv) == [] and deleted_area(srv, "other") == []
    assert "event=purge " in srv.stderr_text()


def test_background_purge_skips_a_mailbox_in_use(make_server, monkeypatch):
    srv = make_server(settings={"mail": {"deleted_retention": "1h", "purge_interval": "1s"}},
                      start=False)
    deliver(srv, 2)
    srv.start()
    delete_and_quit(srv, [1])
    srv.stop()
    start_at(srv, monkeypatch, time.time() + 7200)
    with srv.login() as p:
        time.sleep(2.5)  # a pass or two while the session holds the maildrop
        assert len(deleted_area(srv)) == 1
        p.quit()  # ... and its QUIT purges
    assert deleted_area(srv) == []


def test_expire_zero_deletes_what_retr_fetched(make_server):
    srv = make_server(settings={"mail": {"deleted_retention": "1d"}, "pop3": {"expire": "0"}})
    msgs = deliver(srv, 3)
    kept = session_uidls(srv)
    with srv.login() as p:
        assert p.retr(1)
        p.top(2, 0)  # TOP is no retrieval
        r = p.quit()
    assert "1 expired" in r, r
    assert session_uidls(srv) == {1: kept[2], 2: kept[3]}
    assert len(deleted_area(srv)) == 1  # through the undelete window
    assert run_cli(srv, "undelete", DEMO_USER).returncode == 0
    assert session_uidls(srv) == kept
    assert len(msgs) == 3


def test_expire_days_at_quit_and_in_purge(make_server, monkeypatch):
    srv = make_server(settings={"mail": {"deleted_retention": "0"}, "pop3": {"expire": "2"}},
                      users=((DEMO_USER, DEMO_PASS), ("keeper", "pw2")))
    deliver(srv, 3)
    deliver(srv, 1, user="keeper")
    # keeper's own policy: never expire (the passwd-file's extra fields)
    path = srv.settings["auth"]["passwd_file"]
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(l + "::::::expire=NEVER" if l.startswith("keeper:") else l
                          for l in lines) + "\n")
    srv.own_passwd_file()
    kept = session_uidls(srv)
    with srv.login() as p:
        p.retr(1)
        p.retr(2)
        p.quit()
    with srv.login("keeper", "pw2") as p:
        p.retr(1)
        p.quit()
    retrieved = index_lines(srv)
    assert retrieved[1][0] is not None and retrieved[2][0] is not None and retrieved[3][0] is None
    t = retrieved[1][0]

    assert "0 expired" in run_cli(srv, "purge", now=t + 1 * DAY).out
    r = run_cli(srv, "purge", now=t + 2 * DAY + 60)
    assert r.returncode == 0 and "demo: 0 deleted messages purged, 2 expired" in r.out, r.out
    assert "keeper" not in r.out.replace("purge:", "")  # NEVER for keeper
    assert session_uidls(srv) == {1: kept[3]}
    assert len(session_uidls_of(srv, "keeper", "pw2")) == 1
    assert deleted_area(srv) == []  # retention 0: removed at once

    # at QUIT, with a server living three days later
    with srv.login() as p:
        p.retr(1)
        p.quit()
    srv.stop()
    start_at(srv, monkeypatch, time.time() + 3 * DAY)
    with srv.login() as p:
        assert p.stat()[0] == 1  # the snapshot still shows it; QUIT deletes
        assert "1 expired, 0 left" in p.quit()
    assert session_uidls(srv) == {}


def session_uidls_of(srv, user, password):
    with srv.login(user, password) as p:
        uidls = p.uidl()
        p.quit()
    return uidls


def test_index_move_recovered_after_failed_save(make_server, fault_shim, monkeypatch):
    """The state a crash between the move and the index save leaves, made on purpose: the files
    are in buzon-deleted/ while the index still calls them live."""
    srv = fault_server(make_server, fault_shim, monkeypatch, {"mail": {"deleted_retention": "1d"}})
    deliver(srv, 3)
    kept = session_uidls(srv)
    with srv.login() as p:
        p.ok("DELE 1")
        p.ok("DELE 3")
        srv.faults.arm(("open", "ENOSPC", INDEX_NAME + ".tmp"))
        assert p.cmd("QUIT").startswith("-ERR [SYS/TEMP]")
    srv.faults.disarm()
    assert len(deleted_area(srv)) == 2
    assert all(t[1] is None for t in index_lines(srv).values())  # the save never happened
    assert session_uidls(srv) == {1: kept[2]}  # recovered: still deleted, not lost
    assert sorted(uid for uid, t in index_lines(srv).items() if t[1] is not None) == [1, 3]
    assert "maildir_retained_recovered" in srv.stderr_text()
    r = run_cli(srv, "undelete", DEMO_USER)
    assert r.returncode == 0, r.err
    assert session_uidls(srv) == kept


@pytest.mark.parametrize("rule", [("rename", "EIO", "/" + DELETED_DIR),
                                  ("fsync", "EIO", "/" + DELETED_DIR)],
                         ids=["move_eio", "area_fsync_eio"])
def test_failed_move_loses_nothing(make_server, fault_shim, monkeypatch, rule):
    """A move into the undelete area that fails leaves the message live; one whose flush fails is
    reported (-ERR) but kept in the area, restorable. Nothing else changes."""
    srv = fault_server(make_server, fault_shim, monkeypatch, {"mail": {"deleted_retention": "1d"}})
    deliver(srv, 3)
    kept = session_uidls(srv)
    with srv.login() as p:
        p.ok("DELE 2")
        srv.faults.arm(rule)
        assert p.cmd("QUIT").startswith("-ERR [SYS/TEMP]")
    srv.faults.disarm()
    shown = session_uidls(srv)
    if rule[0] == "rename":
        assert shown == kept and deleted_area(srv) == []
    else:
        assert shown == {1: kept[1], 2: kept[3]} and len(deleted_area(srv)) == 1
        assert run_cli(srv, "undelete", DEMO_USER).returncode == 0
        assert session_uidls(srv) == kept


def test_sigkill_during_retaining_commits(make_server):
    """Kills at random moments after QUIT: every message is afterwards either live with its UIDL
    or in the undelete area, from where it comes back with that UIDL; none is lost or doubled."""
    rng = random.Random()
    srv = make_server(settings={"mail": {"deleted_retention": "1d"}}, start=False)
    use_port_outside_ephemeral_range(srv)
    srv.start()
    deliver(srv, 40)
    kept = session_uidls(srv)
    # 30 trials, or more (up to 15 s) until one kill has landed between a move and its index
    # save: where a kill lands is chance, and the test is only worth something if one did
    deadline = time.monotonic() + 15
    trials = partial = recovered = 0
    while time.monotonic() < deadline and (trials < 30 or partial + recovered == 0):
        trials += 1
        with srv.login() as p:
            live = p.uidl()
            doomed = rng.sample(sorted(live), min(len(live), rng.randint(2, 8)))
            for n in doomed:
                p.ok("DELE %d" % n)
            hidden_before = len(deleted_area(srv))
            killer = DelayedKill(srv.proc.pid, rng.uniform(0, 0.01))
            p.send(b"QUIT\r\n")
            killer.fired.wait(1)
        sigkill_server(srv)
        moved = len(deleted_area(srv)) - hidden_before
        partial += 0 < moved < len(doomed)
        srv.start()
        shown = set(session_uidls(srv).values())
        recovered += "maildir_retained_recovered" in srv.stderr_text()
        assert shown <= set(kept.values())
        hidden = {u for u, t in index_lines(srv).items() if t[1] is not None}
        assert len(hidden) + len(shown) == len(kept), (hidden, shown)
        assert len(deleted_area(srv)) == len(hidden)
        if len(shown) < 10:
            assert run_cli(srv, "undelete", DEMO_USER).returncode == 0
            assert session_uidls(srv) == kept
    print("%d trials, %d killed in the middle of the moves, %d repaired at the next login"
          % (trials, partial, recovered))
    if not VALGRIND:  # there the kills land long before the commit
        assert partial + recovered > 0, "no kill landed between a move and its index save"
    assert run_cli(srv, "undelete", DEMO_USER).returncode == 0
    assert session_uidls(srv) == kept
    files = srv.files()
    assert len(files) == len(kept) and deleted_area(srv) == []
