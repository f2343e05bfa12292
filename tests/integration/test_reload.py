"""Reload and shutdown (issue 7).

SIGHUP and `buzon reload` re-read the configuration: the master checks all of it first, then starts a
new generation of children with it and retires the old one, whose sessions go on to their end. New
settings apply to new sessions; an invalid configuration is refused and the running one stays.
SIGTERM stops accepting, lets open sessions finish for [server] drain_time, then closes the rest
without committing.
"""

import os
import signal
import socket
import time

from buzontest import (DEMO_PASS, DEMO_USER, Pop3, free_port, group_processes, make_message,
                       wait_until)


def greeting_of(port):
    c = Pop3(port, read_greeting=False)
    try:
        line = c.readline()
        c.cmd("QUIT")
    finally:
        c.close()
    return line


def process_names(srv):
    """Names of the server's processes: buzon-auth, buzon-pop3, buzon-lmtp, buzon-admin, buzon."""
    return sorted(name for _, name in group_processes(srv.proc.pid))


def logged_in_with_mail(srv, count=2):
    for i in range(count):
        srv.deliver(make_message("m%d" % i, b"body %d\n" % i))
    c = srv.connect()
    c.login()
    return c


def reload_via_cli(srv):
    return srv.cli("reload", "-c", srv.conf, timeout=20)


def test_sighup_applies_to_new_sessions_and_keeps_open_ones(make_server):
    srv = make_server()
    old = logged_in_with_mail(srv)
    assert old.stat()[0] == 2
    before = process_names(srv)
    srv.settings["pop3"]["greeting"] = "reloaded greeting"
    srv.write_config()
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reloaded" in srv.stderr_text(), 10), srv.stderr_text()[-3000:]
    assert wait_until(lambda: "reloaded greeting" in greeting_of(srv.port), 10)
    # the session opened before the reload goes on, in its retiring worker, and commits at QUIT
    assert b"Subject: m0" in old.retr(1)
    old.ok("DELE 1")
    old.quit()
    assert len(srv.files()) == 1
    assert "event=worker_retiring" in srv.stderr_text()
    # the retiring worker exits once its last session has ended, and then the old generation's
    # auth process: the same set of processes as before the reload is left
    assert wait_until(lambda: srv.stderr_text().count("event=worker_stopped") >= 1, 10)
    assert wait_until(lambda: process_names(srv) == before, 10), (before, process_names(srv))


def test_buzon_reload_reports_success(make_server):
    srv = make_server()
    srv.settings["pop3"]["greeting"] = "second generation"
    srv.write_config()
    r = reload_via_cli(srv)
    assert r.returncode == 0, (r.stdout, r.stderr, srv.stderr_text()[-3000:])
    assert b"reloaded" in r.stdout
    assert wait_until(lambda: "second generation" in greeting_of(srv.port), 10)


def test_invalid_config_is_refused_and_old_one_keeps_running(make_server):
    srv = make_server()
    srv.settings["pop3"]["greeting"] = "first generation"
    srv.stop()
    srv.start()
    with open(srv.conf, "a") as f:
        f.write("\n[pop3]\nno_such_key = 1\n")
    # the CLI still finds the control socket in the broken file; the master refuses the file and
    # `buzon reload` passes its reason on
    r = reload_via_cli(srv)
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = (r.stdout + r.stderr).decode()
    assert "no_such_key" in out and srv.conf in out, out
    assert "event=reload_refused" in srv.stderr_text()
    # SIGHUP with the same file: refused too, and the log says why
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: srv.stderr_text().count("event=reload_refused") >= 2, 10)
    assert "first generation" in greeting_of(srv.port)
    c = srv.connect()
    c.login()
    c.quit()
    assert "event=reloaded" not in srv.stderr_text()


def test_reload_with_a_port_taken_is_refused(make_server):
    srv = make_server()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        srv.settings["pop3"]["listen"] = "127.0.0.1:%d, 127.0.0.1:%d" % (
            srv.port, busy.getsockname()[1])
        srv.write_config()
        r = reload_via_cli(srv)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert str(busy.getsockname()[1]).encode() in r.stdout + r.stderr
    finally:
        busy.close()
    c = srv.connect()
    c.login()
    c.quit()


def test_reload_moves_listeners_and_changes_workers(make_server):
    srv = make_server(workers=1)
    old_port, new_port = srv.port, free_port()
    srv.settings["pop3"]["listen"] = "127.0.0.1:%d" % new_port
    srv.settings["server"]["workers"] = "2"
    srv.write_config()
    r = reload_via_cli(srv)
    assert r.returncode == 0, (r.stdout, r.stderr, srv.stderr_text()[-3000:])
    c = Pop3(new_port)
    c.login()
    c.quit()
    # the old address is closed: nothing listens there any more
    def refused():
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", old_port))
            return False
        except ConnectionRefusedError:
            return True
        finally:
            s.close()
    assert wait_until(refused, 10)
    assert wait_until(lambda: srv.stderr_text().count("event=worker_spawned") >= 3, 10)
    srv.port = new_port
    srv.settings["pop3"]["listen"] = "127.0.0.1:%d" % new_port


def test_reload_changing_the_control_socket_needs_a_restart(make_server):
    srv = make_server()
    srv.settings["server"]["control_socket"] = os.path.join(srv.base, "other.sock")
    srv.write_config()
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reload_refused" in srv.stderr_text(), 10)
    assert "control_socket changed" in srv.stderr_text()


def test_sigterm_drains_sessions_then_closes_the_rest(make_server):
    srv = make_server(settings={"server": {"drain_time": "3s"}},
                      users=((DEMO_USER, DEMO_PASS), ("bob", "bobpw")))
    for i in range(3):
        srv.deliver(make_message("m%d" % i, b"body %d\n" % i))
    srv.deliver(make_message("for bob", b"body\n"), user="bob")
    finisher = srv.connect()
    finisher.login(DEMO_USER, DEMO_PASS)
    lingerer = srv.connect(timeout=15)
    lingerer.login("bob", "bobpw")
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert wait_until(lambda: "event=worker_stopping" in srv.stderr_text(), 5)
    # no new connections while draining
    s = socket.socket()
    s.settimeout(2)
    try:
        refused = False
        try:
            s.connect(("127.0.0.1", srv.port))
            s.recv(100)
        except (ConnectionRefusedError, ConnectionResetError, socket.timeout):
            refused = True
    finally:
        s.close()
    assert refused, "a new connection was accepted while draining"
    # an open session can still work and commit within the drain time
    assert finisher.stat()[0] == 3
    finisher.ok("DELE 1")
    finisher.quit()
    # the other one's DELE is never committed: the drain time ends it
    lingerer.ok("DELE 1")
    lingerer.expect_closed(8)
    srv.proc.wait(15)
    elapsed = time.monotonic() - started
    assert srv.proc.returncode == 0, srv.stderr_text()[-3000:]
    assert 2.5 < elapsed < 13, elapsed
    assert len(srv.files()) == 2
    assert len(srv.files("bob")) == 1
    assert "event=worker_drain_over" in srv.stderr_text()
    srv.proc = None


def test_reload_switches_the_user_database(make_server):
    srv = make_server()
    old = srv.connect()
    old.login()
    # a second passwd-file with another user; the reload points [auth] at it
    first = srv.settings["auth"]["passwd_file"]
    srv.settings["auth"]["passwd_file"] = first + ".new"
    srv.add_user("carol", "carolpw")
    r = reload_via_cli(srv)
    assert r.returncode == 0, (r.stdout, r.stderr, srv.stderr_text()[-3000:])
    c = srv.connect()
    c.login("carol", "carolpw")
    c.quit()
    c = srv.connect()
    c.ok("USER " + DEMO_USER)
    assert c.cmd("PASS " + DEMO_PASS).startswith("-ERR")
    c.close()
    # the session that logged in with the old database is still served
    assert old.stat() == (0, 0)
    old.quit()


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def test_reaping_workers_leaves_the_shared_tables_untouched(make_server):
    """The master clears a reaped worker's entries in the shared lock-takeover table (8 MiB) by
    reading only its resident pages: reading it all would make every page resident for good."""
    srv = make_server(workers=2)
    c = srv.login()
    c.quit()
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reloaded" in srv.stderr_text(), 10)
    assert wait_until(lambda: srv.stderr_text().count("event=worker_stopped") >= 2, 10)
    assert status_kib(srv.proc.pid, "RssShmem") < 2048, status_kib(srv.proc.pid, "RssShmem")
