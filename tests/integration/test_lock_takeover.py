"""Stale-lock takeover ([pop3] lock_takeover, issue 8): a login that finds the user's maildrop held
by an idle session of theirs ends that session without committing it and gets in; `never` keeps
answering [IN-USE]; `always` ends any holder; a holder that is active (commands, or a reply still
streaming) or committing its QUIT is never ended. Holder and contender run in different workers
(and, for the reload, in different generations), since SO_REUSEPORT spreads one user's connections
over all of them.
"""

import os
import re
import signal
import socket
import time

import pytest

from buzontest import DEMO_USER, make_message, wait_until
from test_storage_faults import Faults, fault_shim  # noqa: F401 (a fixture)

CONNECT_RE = re.compile(r"proc=(pop3/\d+) event=connect session=(\S+)")
# takeover within this after the holder became idle enough: the holder's worker looks every
# 200 ms and the contender tries again every 100 ms; the rest is slack for sanitizer builds
TAKEOVER_SECONDS = 2.5


def takeover_settings(policy, idle="1s"):
    return {"pop3": {"lock_takeover": policy, "lock_takeover_idle": idle}}


def connects(srv):
    return CONNECT_RE.findall(srv.stderr_text())


def connect_on_worker(srv, avoid=None):
    """A connection (greeting read) and the worker it landed on, other than avoid: connections are
    opened one at a time until the log says one reached another worker."""
    for _ in range(64):
        seen = len(connects(srv))
        c = srv.connect()
        assert c.greeting.startswith("+OK"), c.greeting
        # the connect line is written before the greeting is sent
        assert wait_until(lambda: len(connects(srv)) > seen, 5)
        proc, session = connects(srv)[-1]
        if proc != avoid:
            return c, proc, session
        c.close()
    raise AssertionError("no connection reached a worker other than %s" % avoid)


def session_end(srv, session):
    m = re.search(r"event=session_end session=%s .*" % re.escape(session), srv.stderr_text())
    return m.group(0) if m else None


def deliver_two(srv):
    srv.deliver(make_message("first", b"one\n"))
    srv.deliver(make_message("second", b"two\n"))


def test_idle_holder_is_taken_over_from_another_worker(make_server):
    srv = make_server(workers=2, settings=takeover_settings("idle"))
    deliver_two(srv)
    holder, holder_proc, holder_session = connect_on_worker(srv)
    holder.login()
    holder.ok("DELE 1")
    time.sleep(1.3)  # idle for longer than lock_takeover_idle
    contender, contender_proc, _ = connect_on_worker(srv, avoid=holder_proc)
    assert contender_proc != holder_proc
    started = time.monotonic()
    contender.login()
    assert time.monotonic() - started < TAKEOVER_SECONDS
    # the old session is gone, without its DELE: both messages are still there
    holder.expect_closed()
    assert contender.stat()[0] == 2
    contender.quit()
    assert len(srv.files()) == 2
    end = session_end(srv, holder_session)
    assert end is not None and "reason=taken_over" in end and "user=%s" % DEMO_USER in end, end
    assert "deleted=0" in end, end
    assert "event=lock_takeover_asked" in srv.stderr_text()


def test_never_answers_in_use(make_server):
    srv = make_server(workers=2, settings=takeover_settings("never"))
    deliver_two(srv)
    holder, holder_proc, _ = connect_on_worker(srv)
    holder.login()
    holder.ok("DELE 1")
    time.sleep(1.3)
    contender, _, _ = connect_on_worker(srv, avoid=holder_proc)
    contender.ok("USER " + DEMO_USER)
    started = time.monotonic()
    r = contender.cmd("PASS secret")
    assert r.startswith("-ERR [IN-USE]"), r
    assert time.monotonic() - started < 1.0, "never must not wait for the holder"
    # the holder is untouched and commits its DELE
    assert holder.stat()[0] == 1
    holder.quit()
    assert len(srv.files()) == 1
    contender.close()
    assert "taken_over" not in srv.stderr_text()


def test_always_ends_an_active_holder(make_server):
    srv = make_server(workers=2, settings=takeover_settings("always", idle="1h"))
    deliver_two(srv)
    holder, holder_proc, holder_session = connect_on_worker(srv)
    holder.login()
    holder.ok("DELE 2")
    contender, _, _ = connect_on_worker(srv, avoid=holder_proc)
    started = time.monotonic()
    contender.login()
    assert time.monotonic() - started < TAKEOVER_SECONDS
    holder.expect_closed()
    assert contender.stat()[0] == 2
    contender.quit()
    assert "reason=taken_over" in session_end(srv, holder_session)


def test_active_holder_is_kept(make_server):
    """Under `idle`, a holder that sends commands, or that is still reading a long reply, is in
    use however long ago its last command was; once it stops, it can be taken over."""
    srv = make_server(workers=2, settings=takeover_settings("idle"))
    srv.deliver(make_message("big", b"0123456789abcdefghijklmnopqrstuvwxyz\n" * 450000))  # 16 MiB
    holder, holder_proc, holder_session = connect_on_worker(srv)
    holder.login()
    contender, _, _ = connect_on_worker(srv, avoid=holder_proc)

    def contender_refused():
        contender.ok("USER " + DEMO_USER)
        r = contender.cmd("PASS secret")
        assert r.startswith("-ERR [IN-USE]"), r

    for _ in range(5):  # 1.5 s of commands, never 1 s apart
        holder.ok("NOOP")
        time.sleep(0.3)
    contender_refused()

    # a small receive buffer keeps the server streaming for as long as the client reads slowly
    holder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    holder.send("RETR 1\r\n")
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        holder._fill()
        time.sleep(0.01)
    contender_refused()
    assert holder.readline().startswith("+OK")
    assert len(holder.read_multi_wire()) > 16_000_000

    time.sleep(1.3)  # now idle: the takeover goes through
    contender.login()
    holder.expect_closed()
    contender.quit()
    assert "reason=taken_over" in session_end(srv, holder_session)


@pytest.fixture
def slow_commit_server(make_server, fault_shim, monkeypatch):  # noqa: F811
    """Two workers under `always`, loading the fault library scoped to demo's Maildir: arm() makes
    the next fsync there take 1.5 s (the rule is dropped 0.3 s later, so only the commit running
    then is slowed)."""
    srv = make_server(workers=2, settings=takeover_settings("always"), start=False)
    srv.make_maildir(DEMO_USER)
    faults = Faults(os.path.join(os.path.dirname(srv.maildir(DEMO_USER)), "fault-control"))
    monkeypatch.setenv("LD_PRELOAD", fault_shim)
    monkeypatch.setenv("BUZON_FAULT_CONTROL", faults.path)
    monkeypatch.setenv("BUZON_FAULT_SCOPE", srv.maildir(DEMO_USER))
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "verify_asan_link_order=0")
    srv.start()
    deliver_two(srv)

    def quit_slowly(holder):
        faults.arm(("fsync", "SLOW", srv.maildir(DEMO_USER)))
        holder.send("QUIT\r\n")
        time.sleep(0.3)
        faults.disarm()

    srv.quit_slowly = quit_slowly
    return srv


def test_holder_committing_quit_is_not_taken_over(slow_commit_server):
    """A contender that arrives while the holder's QUIT commits waits for the commit (which is not
    cut short: its deletion happens) and then gets in, even under `always`."""
    srv = slow_commit_server
    holder, holder_proc, holder_session = connect_on_worker(srv)
    holder.login()
    holder.ok("DELE 1")
    contender, _, _ = connect_on_worker(srv, avoid=holder_proc)
    contender.ok("USER " + DEMO_USER)
    srv.quit_slowly(holder)
    started = time.monotonic()
    r = contender.cmd("PASS secret")
    waited = time.monotonic() - started
    assert r.startswith("+OK"), r
    assert waited > 0.5, "the contender got in while the holder was still committing"
    assert holder.readline().startswith("+OK")
    holder.expect_closed()
    assert contender.stat()[0] == 1
    contender.quit()
    end = session_end(srv, holder_session)
    assert "reason=quit" in end and "deleted=1" in end, end
    assert "taken_over" not in srv.stderr_text()


def test_waiting_login_kicked(slow_commit_server):
    """A login waiting for the lock ends cleanly when kicked (the sanitizer build checks that its
    parked open is freed), and the holder's commit, kicked too, still completes."""
    srv = slow_commit_server
    holder, holder_proc, _ = connect_on_worker(srv)
    holder.login()
    holder.ok("DELE 1")
    contender, _, contender_session = connect_on_worker(srv, avoid=holder_proc)
    contender.ok("USER " + DEMO_USER)
    srv.quit_slowly(holder)
    contender.send("PASS secret\r\n")
    time.sleep(0.2)
    r = srv.cli("kick", "-c", srv.conf, "127.0.0.1")
    assert r.returncode == 0, r.stderr
    contender.expect_closed()
    holder.expect_closed()
    assert wait_until(lambda: len(srv.files()) == 1, 5), "the kicked holder's commit did not finish"
    assert "reason=kicked" in session_end(srv, contender_session)


def test_two_contenders_at_once_one_gets_in(make_server):
    srv = make_server(workers=2, settings=takeover_settings("always"))
    deliver_two(srv)
    holder, holder_proc, _ = connect_on_worker(srv)
    holder.login()
    first, _, _ = connect_on_worker(srv, avoid=holder_proc)
    second, _, _ = connect_on_worker(srv)
    for c in (first, second):
        c.ok("USER " + DEMO_USER)
    # both PASS lines go out before either answer is read
    first.send("PASS secret\r\n")
    second.send("PASS secret\r\n")
    answers = {c: c.readline() for c in (first, second)}
    winners = [c for c, r in answers.items() if r.startswith("+OK")]
    losers = [c for c, r in answers.items() if r.startswith("-ERR [IN-USE]")]
    assert len(winners) == 1 and len(losers) == 1, list(answers.values())
    holder.expect_closed()
    # the loser did not end the winner: it is still logged in
    assert winners[0].stat()[0] == 2
    winners[0].quit()
    losers[0].close()


def test_takeover_across_reload_generations(make_server):
    """A holder in a worker retired by a reload is still found by a login in the new generation."""
    srv = make_server(settings=takeover_settings("idle"))
    deliver_two(srv)
    holder = srv.login()
    holder.ok("DELE 1")
    holder_session = connects(srv)[-1][1]
    srv.settings["pop3"]["greeting"] = "second generation"
    srv.write_config()
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reloaded" in srv.stderr_text(), 10)
    contender = None
    deadline = time.monotonic() + 10
    while contender is None:  # until a new-generation worker accepts
        c = srv.connect()
        if "second generation" in c.greeting:
            contender = c
        else:
            c.close()
            assert time.monotonic() < deadline, "the new generation never answered"
            time.sleep(0.1)
    time.sleep(1.3)
    contender.login()
    holder.expect_closed()
    assert contender.stat()[0] == 2
    contender.quit()
    assert "reason=taken_over" in session_end(srv, holder_session)
    # the retired worker had nothing left and exits
    assert wait_until(lambda: "event=worker_stopped" in srv.stderr_text(), 10)
