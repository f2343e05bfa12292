"""The admin process and its CLI: `buzon who`, `kick`, `stats`, `reload` and `ban` against a running
server, the control socket's permissions (file mode and the peer's uid), and hostile input on that
socket. The protocol is described in src/admin/admin_proto.h."""

import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from buzontest import IO_TIMEOUT, TIME_SCALE, Pop3, free_port, is_root, make_message, wait_until
from test_privileges import children_of, role_of

# sysexits.h
EX_UNAVAILABLE = 69
EX_NOPERM = 77


def control_path(srv):
    return srv.settings["server"]["control_socket"]


def admin(srv, *args, timeout=30):
    """Runs `buzon ARGS -c CONF` (the -c after the subcommand and its action)."""
    args = list(args)
    split = 2 if args[0] == "ban" else 1
    r = srv.cli(*(args[:split] + ["-c", srv.conf] + args[split:]), timeout=timeout)
    srv._check_cli(r)
    return r


def out(r):
    return r.stdout.decode("utf-8", "replace")


def err(r):
    return r.stderr.decode("utf-8", "replace")


def ask_raw(srv, data, timeout=IO_TIMEOUT):
    """Sends raw bytes on the control socket and returns everything the server answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(control_path(srv))
    try:
        s.sendall(data)
    except OSError:
        pass  # refused before it read everything; the answer is still there
    answer = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break  # closed with some of the request unread, after its answer
        if not chunk:
            break
        answer += chunk
    s.close()
    return answer.decode("utf-8", "replace")


def connect_from(srv, source_ip):
    """A POP3 client whose connection comes from source_ip (another loopback address)."""
    c = Pop3.__new__(Pop3)
    c.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=IO_TIMEOUT,
                                      source_address=(source_ip, 0))
    c.buf = bytearray()
    c.greeting = c.readline()
    return c


def who_rows(srv):
    r = admin(srv, "who")
    assert r.returncode == 0, err(r)
    lines = out(r).splitlines()
    assert lines[0].split() == ["USER", "IP", "STATE", "SINCE", "SENT", "RECEIVED", "TLS", "SESSION"]
    rows = []
    for line in lines[1:]:
        f = line.split()
        # SINCE is "YYYY-MM-DD HH:MM:SS": two columns
        rows.append({"user": f[0], "ip": f[1], "state": f[2], "since": f[3] + " " + f[4],
                     "sent": int(f[5]), "received": int(f[6]), "tls": f[7], "session": f[8]})
    return rows


def stats(srv):
    r = admin(srv, "stats")
    assert r.returncode == 0, err(r)
    return out(r)


def stat_numbers(text, label):
    """The numbers on the stats line that starts with label."""
    for line in text.splitlines():
        if line.startswith(label):
            return [int(n) for n in re.findall(r"\b\d+\b", line[len(label):])]
    raise AssertionError("no %r line in:\n%s" % (label, text))


def admin_not_killed(srv):
    text = srv.stderr_text()
    assert not re.search(r"child_killed child=admin", text), text[-3000:]


def test_who_lists_live_sessions(make_server):
    srv = make_server(workers=2)
    srv.deliver(make_message("one", b"hello\n"))
    c = srv.login()
    c.retr(1)
    pre = srv.connect()  # connected, not logged in
    before = time.time()
    rows = who_rows(srv)
    assert len(rows) == 2, rows
    mine = [r for r in rows if r["user"] == "demo"]
    assert len(mine) == 1, rows
    row = mine[0]
    assert row["ip"] == "127.0.0.1" and row["state"] == "transaction" and row["tls"] == "no"
    assert row["sent"] > 100 and row["received"] == len(b"USER demo\r\nPASS secret\r\nRETR 1\r\n")
    since = time.mktime(time.strptime(row["since"], "%Y-%m-%d %H:%M:%S"))
    assert before - 30 <= since <= before + 1, row
    other = [r for r in rows if r is not row][0]
    assert other["user"] == "-" and other["state"] == "auth"
    assert row["session"] != other["session"]
    pre.close()
    c.quit()
    assert wait_until(lambda: len(who_rows(srv)) == 0, 5)


def test_kick_by_user_commits_nothing(make_server):
    srv = make_server(workers=2)
    srv.add_user("other", "pw")
    for i in range(3):
        srv.deliver(make_message("m%d" % i, b"body\n"))
    srv.deliver(make_message("theirs", b"body\n"), user="other")
    c = srv.login()
    c.ok("DELE 1")
    c.ok("DELE 2")
    bystander = srv.login("other", "pw")
    r = admin(srv, "kick", "demo")
    assert r.returncode == 0, err(r)
    assert "kicked 1 session of demo" in out(r)
    c.expect_closed(5)
    assert bystander.is_open()
    assert len(srv.files()) == 3, "a kicked session's DELEs were committed"
    assert re.search(r"event=session_end session=\S+ user=demo .*reason=kicked", srv.stderr_text())
    # nobody left to kick: exit 1
    r = admin(srv, "kick", "demo")
    assert r.returncode == 1 and "kicked 0 sessions" in out(r), (out(r), err(r))
    bystander.quit()


def test_kick_by_ip(make_server):
    srv = make_server(workers=2)
    srv.deliver(make_message("keep", b"body\n"))
    c = srv.login()
    c.ok("DELE 1")
    pre = srv.connect()
    elsewhere = connect_from(srv, "127.0.0.2")
    r = admin(srv, "kick", "127.0.0.1")
    assert r.returncode == 0, err(r)
    assert "kicked 2 sessions from 127.0.0.1" in out(r)
    c.expect_closed(5)
    pre.expect_closed(5)
    assert elsewhere.is_open()
    assert len(srv.files()) == 1
    # an IPv4-mapped address is the same client; --user takes it as a name instead
    r = admin(srv, "kick", "::ffff:127.0.0.2")
    assert r.returncode == 0 and "kicked 1 session" in out(r), out(r)
    elsewhere.expect_closed(5)
    r = admin(srv, "kick", "--user", "127.0.0.1")
    assert r.returncode == 1, out(r)


def test_stats_move_after_a_session(make_server):
    srv = make_server()
    srv.deliver(make_message("a", b"body a\n"))
    srv.deliver(make_message("b", b"body b\n"))
    before = stats(srv)
    c = srv.login()
    c.retr(1)
    c.ok("DELE 2")
    c.quit()
    bad = srv.connect()
    bad.ok("USER demo")
    bad.err("PASS wrong")
    bad.quit()
    after = wait_until(lambda: (lambda t: t if stat_numbers(t, "messages")[1] == 1 else None)(stats(srv)), 5)
    assert after, stats(srv)
    ok0, failed0 = stat_numbers(before, "logins")[:2]
    ok1, failed1 = stat_numbers(after, "logins")[:2]
    assert (ok1 - ok0, failed1 - failed0) == (1, 1), after
    assert stat_numbers(after, "messages")[:2] == [1, 1]
    assert stat_numbers(after, "connections")[0] >= stat_numbers(before, "connections")[0] + 2
    assert stat_numbers(after, "processes")[:4] == [1, 0, 1, 1], after
    # the raw metrics are there too
    r = admin(srv, "stats", "--prometheus")
    assert r.returncode == 0 and "\nbuzon_pop3_retrieved_messages_total 1\n" in out(r), out(r)[-2000:]


def test_ban_add_list_del(make_server):
    srv = make_server()
    assert connect_from(srv, "127.0.0.2").greeting.startswith("+OK")
    r = admin(srv, "ban", "add", "127.0.0.2", "1h")
    assert r.returncode == 0, err(r)
    assert re.search(r"banned 127\.0\.0\.2 until \S+ \S+ \((1h 0m|59m \d+s)\)", out(r)), out(r)
    c = connect_from(srv, "127.0.0.2")
    assert c.greeting.startswith("-ERR"), c.greeting
    c.expect_closed(5)
    # other clients are not affected
    srv.connect().quit()
    assert admin(srv, "ban", "add", "2001:db8::9").returncode == 0  # default duration
    r = admin(srv, "ban", "list")
    assert r.returncode == 0, err(r)
    lines = out(r).splitlines()
    assert lines[0].split() == ["ADDRESS", "UNTIL", "LEFT", "SOURCE"]
    assert lines[1].split()[0] == "127.0.0.2" and lines[1].split()[-1] == "admin", lines
    assert lines[2].split()[0] == "2001:db8::/64", lines
    assert admin(srv, "stats").stdout.decode().count("2 in force now") == 1
    r = admin(srv, "ban", "del", "127.0.0.2")
    assert r.returncode == 0 and "lifted 127.0.0.2" in out(r), (out(r), err(r))
    connect_from(srv, "127.0.0.2").quit()
    r = admin(srv, "ban", "del", "127.0.0.2")
    assert r.returncode == 1 and "not banned" in err(r)
    for bad in (["ban", "add", "not-an-ip"], ["ban", "add", "127.0.0.3", "forever"],
                ["ban", "add", "127.0.0.3", "0s"]):
        r = admin(srv, *bad)
        assert r.returncode == 1 and err(r).startswith("buzon: "), (bad, err(r))
    assert admin(srv, "ban", "frobnicate", "1.2.3.4").returncode == 64


def test_ban_del_lifts_an_auth_ban(make_server):
    srv = make_server(settings={"auth": {"ban_failures": "2", "ban_time": "10m"}})
    for attempt in range(2):
        c = srv.connect()
        c.ok("USER demo")
        c.err("PASS wrong%d" % attempt)  # a repeated wrong password counts once
        c.close()
    c = wait_until(lambda: (lambda p: p if p.greeting.startswith("-ERR") else p.close())(srv.connect()), 5)
    assert c, "the auth process did not ban 127.0.0.1"
    c.close()
    r = admin(srv, "ban", "list")
    assert re.search(r"^127\.0\.0\.1\s.*\sauth$", out(r), re.M), out(r)
    assert admin(srv, "ban", "del", "127.0.0.1").returncode == 0
    # not only connecting: the auth process lifts its own ban too, so the login works
    c = srv.login()
    c.quit()


def test_reload_returns_the_masters_answer(make_server):
    srv = make_server()
    r = admin(srv, "reload", timeout=60)
    assert r.returncode == 0, err(r)
    assert "reloaded" in out(r), out(r)
    # a broken config: the CLI still finds the socket, and the master's refusal is printed
    with open(srv.conf, "a") as f:
        f.write("\n[pop3]\nno_such_key = 1\n")
    r = admin(srv, "reload", timeout=60)
    assert r.returncode == 1, (out(r), err(r))
    assert "reload refused" in err(r) and "no_such_key" in err(r), err(r)
    srv.write_config()
    c = srv.login()
    c.quit()


@pytest.mark.skipif(not is_root(), reason="needs root to run the CLI as other users")
def test_control_socket_permissions(make_server):
    srv = make_server()
    st = os.stat(control_path(srv))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    server_uid = pwd.getpwnam(srv.run_as).pw_uid
    assert st.st_uid == server_uid
    os.chmod(srv.conf, 0o644)

    def as_user(uid, *args):
        r = subprocess.run(["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups",
                            srv.bin] + list(args) + ["-c", srv.conf],
                           capture_output=True, timeout=30)
        srv._check_cli(r)
        return r

    other = pwd.getpwnam("daemon").pw_uid
    assert other not in (0, server_uid)
    # the server's own user may
    r = as_user(server_uid, "who")
    assert r.returncode == 0, err(r)
    # anyone else is stopped by the file mode ...
    r = as_user(other, "who")
    assert r.returncode == EX_NOPERM and "permission denied" in err(r), err(r)
    # ... and by the peer check when the mode is opened up
    os.chmod(control_path(srv), 0o666)
    try:
        r = as_user(other, "who")
        assert r.returncode == EX_NOPERM and "permission denied" in err(r), err(r)
        assert re.search(r"event=control_refused uid=%d " % other, srv.stderr_text())
    finally:
        os.chmod(control_path(srv), 0o600)


def test_not_running(make_server):
    srv = make_server(start=False)
    for args in (["who"], ["stats"], ["reload"], ["ban", "list"], ["kick", "demo"]):
        r = admin(srv, *args)
        assert r.returncode == EX_UNAVAILABLE, (args, r.returncode, err(r))
        assert "not running" in err(r), err(r)
    for args in (["who", "--help"], ["kick", "--help"], ["stats", "--help"], ["reload", "--help"],
                 ["ban", "--help"]):
        r = srv.cli(*args)
        assert r.returncode == 0 and out(r).startswith("usage: buzon"), (args, err(r))
    assert srv.cli("kick", "-c", srv.conf).returncode == 64
    assert srv.cli("who", "-c", srv.conf, "extra").returncode == 64


def test_stuck_worker_cannot_hang_who(make_server):
    srv = make_server(workers=2)
    c = srv.login()
    workers = [p for p in children_of(srv.proc.pid) if role_of(p) == "pop3"]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = admin(srv, "who")
        took = time.monotonic() - started
        assert r.returncode == 0, err(r)
        assert "1 worker(s) did not answer" in err(r), err(r)
        assert 2.5 < took < 8 * TIME_SCALE, took  # the admin process waits 3 s for a worker
    finally:
        os.kill(workers[0], signal.SIGCONT)
    assert wait_until(lambda: len(who_rows(srv)) == 1, 5)
    c.quit()


def test_hostile_control_input(make_server):
    srv = make_server()
    cases = [
        (b"W" * 5000, "ERR request line too long"),
        (b"W" * 1100 + b"\n", "ERR request line too long"),
        (b"WHO\x00\n", "ERR control characters"),
        (b"\xff\xfe\x00\x01garbage\n", "ERR control characters"),
        (b"\x1b]0;pwned\x07WHO\n", "ERR control characters"),
        (b"\n", "ERR unknown command"),
        (b"HELO\n", "ERR unknown command"),
        (b"BAN ADD 1.2.3.4 1h 2h 3h 4h\n", "ERR too many arguments"),
        (b"KICK\n", "ERR usage"),
        (b"KICK IP 999.1.1.1\n", "ERR not an IP address"),
        (b"BAN ADD 127.0.0.1 99999999999999999999s\n", "ERR bad duration"),
        (b"WHO\nWHO\nWHO\n", "OK sessions="),
    ]
    for data, expect in cases:
        answer = ask_raw(srv, data)
        assert answer.startswith(expect), (data[:40], answer)
        assert answer.endswith("\n") and answer.count("\n") == 1 or expect == "OK sessions=", answer
    # a client that says nothing and a client that leaves halfway do not block others
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(control_path(srv))
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half.connect(control_path(srv))
    half.sendall(b"WH")
    half.close()
    assert ask_raw(srv, b"WHO\n").startswith("OK sessions=0")
    # more clients at once than it serves: the extra ones are told, not queued forever
    idle = []
    for _ in range(40):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(control_path(srv))
        idle.append(s)
    assert wait_until(lambda: ask_raw(srv, b"WHO\n").startswith("ERR busy"), 5)
    for s in idle:
        s.close()
    silent.close()
    assert wait_until(lambda: ask_raw(srv, b"WHO\n").startswith("OK"), 5)
    # the connection limit does not leave the listener stuck, and the process was never killed
    assert admin(srv, "who").returncode == 0
    admin_not_killed(srv)


def test_metrics_http_refuses_other_paths_and_methods(make_server):
    port = free_port()
    srv = make_server(settings={"metrics": {"listen": "127.0.0.1:%d" % port}})

    def http(request):
        s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and request.startswith(b"HEAD"):
                break
        s.close()
        return data

    ok = http(b"GET /metrics HTTP/1.0\r\n\r\n")
    assert ok.startswith(b"HTTP/1.0 200") or ok.startswith(b"HTTP/1.1 200"), ok[:200]
    assert b"Content-Type: text/plain; version=0.0.4\r\n" in ok
    assert b"\r\n\r\n# HELP " in ok
    assert b" 404 " in http(b"GET /other HTTP/1.0\r\n\r\n").split(b"\r\n")[0]
    assert b" 200 " in http(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").split(b"\r\n")[0]
    status = http(b"POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi").split(b"\r\n")[0]
    assert b" 200 " not in status, status
    head = http(b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"# HELP" not in head, head[:300]
    junk = http(b"\x16\x03\x01\x02\x00" + b"A" * 9000 + b"\r\n\r\n")
    assert not junk.startswith(b"HTTP/1.1 200"), junk[:100]
    assert b" 200 " in http(b"GET /metrics HTTP/1.0\r\n\r\n").split(b"\r\n")[0]
    admin_not_killed(srv)


def test_admin_process_is_confined(make_server, monkeypatch):
    """The admin process opens no file at all once confined (Landlock, and seccomp answers
    open/openat with EACCES rather than killing), and keeps serving afterwards."""
    from test_sandbox import probe_results, skip_unless_confined
    monkeypatch.setenv("BUZON_SANDBOX_PROBE", "/etc/passwd:/tmp")
    srv = make_server()
    skip_unless_confined(srv, "admin")
    assert wait_until(lambda: ("admin", "write", "/tmp") in probe_results(srv), 5)
    results = probe_results(srv)
    for path in ("/etc/passwd", "/tmp"):
        for access in ("read", "write"):
            assert results[("admin", access, path)] == "denied", (access, path)
    assert admin(srv, "who").returncode == 0
    admin_not_killed(srv)
