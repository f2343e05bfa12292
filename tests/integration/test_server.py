"""The server process: multiple workers, IPv6, config errors, graceful stop, login timing."""

import os
import re
import signal
import statistics
import subprocess
import threading
import time

import pytest

from buzontest import BuzonServer, Pop3, buzon_bin, have_ipv6


def test_many_connections_two_workers(make_server):
    users = [("user%d" % i, "pw%d" % i) for i in range(8)]
    srv = make_server(workers=2, users=users)
    for u, _ in users:
        srv.deliver(b"Subject: for %s\n\nhello %s\n" % (u.encode(), u.encode()), user=u)
    errors = []

    def client(i):
        try:
            u, p = users[i % len(users)]
            for _ in range(3):
                c = srv.connect()
                assert c.greeting.startswith("+OK"), c.greeting
                assert "UIDL" in c.capa()
                # QUIT and wait for the close: the server releases the connection's pre-login
                # slot before it closes, so the 40 connections below never find old ones still
                # counted against max_prelogin_per_ip (a plain close raced with them under ASan)
                c.quit()
        except Exception as e:  # noqa: BLE001
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    # 40 simultaneous open connections, then every one logs in as a different or same user in turn.
    conns = [srv.connect() for _ in range(40)]
    for c in conns:
        assert c.greeting.startswith("+OK"), c.greeting
    for i, c in enumerate(conns):
        u, p = users[i % len(users)]
        c.login(u, p)
        assert c.stat()[0] == 1
        c.retr(1)
        c.quit()


def _connect_procs(srv):
    return set(re.findall(r"proc=(pop3/\d+) event=connect", srv.stderr_text()))


def test_in_use_across_workers(make_server):
    srv = make_server(workers=2)
    srv.deliver(b"Subject: x\n\nx\n")
    holder = srv.login()
    holder_procs = _connect_procs(srv)
    # Open connections until the log shows that both workers have taken some (SO_REUSEPORT-style
    # distribution is random), then every one of them must see the lock.
    conns = []
    for _ in range(64):
        c = srv.connect()
        assert c.greeting.startswith("+OK"), c.greeting
        conns.append(c)
        if len(conns) >= 4 and len(_connect_procs(srv)) >= 2:
            break
    assert len(_connect_procs(srv)) >= 2, "connections never reached the second worker: %r" % _connect_procs(srv)
    for c in conns:
        c.ok("USER demo")
        r = c.cmd("PASS secret")
        assert r.startswith("-ERR [IN-USE]"), r
    holder.quit()
    conns[-1].login()
    conns[-1].quit()
    for c in conns:
        c.close()
    assert holder_procs


def test_no_password_in_logs(make_server):
    srv = make_server(users=[("demo", "Secr3tPassw0rd")])
    c = srv.connect()
    c.ok("USER demo")
    c.err("PASS Wr0ngPassw0rdXyz")
    c.ok("USER nosuchuser")
    c.err("PASS An0therWr0ngOne")
    c.login("demo", "Secr3tPassw0rd")
    c.quit()
    srv.stop()
    log = srv.stderr_text()
    for pw in ("Secr3tPassw0rd", "Wr0ngPassw0rdXyz", "An0therWr0ngOne"):
        assert pw not in log, "password %r written to the log" % pw
    assert re.search(r"^ts=\S+ level=info proc=pop3/\d+ event=login .*user=demo", log, re.M), log


def test_workers_auto(make_server):
    srv = make_server(workers="auto")
    c = srv.login()
    c.quit()


@pytest.mark.skipif(not have_ipv6(), reason="no ::1 on this machine")
def test_ipv4_and_ipv6_listen(make_server):
    srv = make_server(ipv6=True)
    srv.deliver(b"Subject: v6\n\nover ipv6\n")
    c4 = Pop3(srv.port, host="127.0.0.1")
    assert c4.greeting.startswith("+OK")
    c4.cmd("QUIT")
    c4.close()
    c6 = Pop3(srv.port, host="::1")
    assert c6.greeting.startswith("+OK")
    c6.login()
    assert c6.retr(1) == b"Subject: v6\r\n\r\nover ipv6\r\n"
    c6.quit()


def test_graceful_stop_exit_zero(server):
    c = server.login()
    c.ok("NOOP")
    server.stop()  # asserts exit 0 within 10 s and no sanitizer report


# ---------------------------------------------------------------------------------------------
# configuration errors


def _bad_config(tmp_path, mutate):
    srv = BuzonServer(base=str(tmp_path))
    srv.write_config()
    text = open(srv.conf).read().splitlines()
    text, bad_line = mutate(text)
    with open(srv.conf, "w") as f:
        f.write("\n".join(text) + "\n")
    return srv, bad_line


def _insert_after(section, line):
    def mutate(text):
        i = text.index("[%s]" % section)
        text.insert(i + 1, line)
        return text, i + 2

    return mutate


def _replace_key(key, value):
    def mutate(text):
        for i, l in enumerate(text):
            if l.startswith(key + " ="):
                text[i] = "%s = %s" % (key, value)
                return text, i + 1
        raise AssertionError(key)

    return mutate


BAD_CONFIGS = {
    "unknown_key": _insert_after("pop3", "no_such_key = 1"),
    "unknown_section": lambda t: (t + ["[nosuchsection]", "x = 1"], (len(t) + 1, len(t) + 2)),
    "bad_workers": _replace_key("workers", "banana"),
    "bad_duration": _replace_key("idle_timeout", "10 parsecs"),
    "bad_number": _replace_key("max_bad_commands", "-3"),
    "bad_bool": _replace_key("retr_marks_seen", "perhaps"),
    "bad_listen": _replace_key("listen", "127.0.0.1:notaport"),
    "bad_failure_delay": _replace_key("failure_delay", "soon"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_serve_and_check_config(tmp_path, case):
    srv, lines = _bad_config(tmp_path, BAD_CONFIGS[case])
    lines = lines if isinstance(lines, tuple) else (lines,)
    wheres = ["%s:%d" % (srv.conf, line) for line in lines]
    p = subprocess.Popen([buzon_bin(), "serve", "-c", srv.conf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("serve accepted a bad config (%s) and kept running" % case)
    err = err.decode("utf-8", "replace")
    assert p.returncode != 0, "serve accepted a bad config (%s)" % case
    assert any(w in err for w in wheres), "serve's error does not name %s: %r" % (wheres[0], err)
    r = subprocess.run([buzon_bin(), "check-config", "-c", srv.conf], capture_output=True, timeout=10)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode != 0, "check-config accepted a bad config (%s)" % case
    assert any(w in err for w in wheres), "check-config's error does not name %s: %r" % (wheres[0], err)
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert marker not in err


def test_check_config_good(tmp_path):
    srv = BuzonServer(base=str(tmp_path))
    srv.write_config()
    r = subprocess.run([buzon_bin(), "check-config", "-c", srv.conf], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr


def test_missing_config_file(tmp_path):
    r = subprocess.run([buzon_bin(), "serve", "-c", str(tmp_path / "nope.conf")], capture_output=True, timeout=10)
    assert r.returncode != 0
    assert b"nope.conf" in r.stderr


def test_durations_accepted(tmp_path):
    for v in ("600", "90s", "10m", "2h", "1d"):
        srv = BuzonServer(base=str(tmp_path))
        srv.settings["pop3"]["idle_timeout"] = v if v != "90s" else "900s"
        srv.settings["auth"]["failure_delay"] = "500ms"
        srv.write_config()
        r = subprocess.run([buzon_bin(), "check-config", "-c", srv.conf], capture_output=True, timeout=10)
        assert r.returncode == 0, (v, r.stderr)


# ---------------------------------------------------------------------------------------------
# login timing


def _time_failed_login(srv, user, password):
    c = srv.connect()
    c.ok("USER " + user)
    t0 = time.perf_counter()
    r = c.cmd("PASS " + password)
    dt = time.perf_counter() - t0
    assert r.startswith("-ERR [AUTH]"), r
    c.cmd("QUIT")
    c.close()
    return dt


def test_failed_login_timing_unknown_vs_wrong(make_server):
    srv = make_server(users=[("alice", "correct-horse"), ("bob", "battery-staple")], scheme="YESCRYPT")
    # warm up
    _time_failed_login(srv, "alice", "nope")
    _time_failed_login(srv, "nobody", "nope")
    unknown, wrong = [], []
    for i in range(5):
        unknown.append(_time_failed_login(srv, "nobody%d" % i, "nope"))
        wrong.append(_time_failed_login(srv, "alice" if i % 2 else "bob", "nope"))
    mu, mw = statistics.median(unknown), statistics.median(wrong)
    slow, fast = max(mu, mw), min(mu, mw)
    assert slow <= 2 * fast + 0.005, (
        "unknown user median %.4fs vs wrong password median %.4fs: an observer can tell them apart"
        % (mu, mw))


def test_failure_delay(make_server):
    srv = make_server(settings={"auth": {"failure_delay": "1s"}})
    for user in ("demo", "nosuchuser"):
        c = srv.connect()
        c.ok("USER " + user)
        t0 = time.monotonic()
        r = c.cmd("PASS wrong")
        dt = time.monotonic() - t0
        assert r.startswith("-ERR [AUTH]"), r
        assert dt >= 0.9, "failed PASS for %s answered after %.3fs" % (user, dt)
        c.quit()
    # A correct login is not delayed.
    c = srv.connect()
    c.ok("USER demo")
    t0 = time.monotonic()
    c.ok("PASS secret")
    assert time.monotonic() - t0 < 0.9
    c.quit()


def test_failure_delay_does_not_block_others(make_server):
    srv = make_server(settings={"auth": {"failure_delay": "2s"}})
    slow = srv.connect()
    slow.ok("USER demo")
    slow.send("PASS wrong\r\n")
    time.sleep(0.1)
    t0 = time.monotonic()
    c = srv.login()
    c.quit()
    assert time.monotonic() - t0 < 1.5, "a delayed failure blocked another client's login"
    assert slow.readline().startswith("-ERR [AUTH]")
    slow.close()


def test_binary_exists():
    assert os.access(buzon_bin(), os.X_OK), buzon_bin()


def test_file_limit_too_low_for_max_connections_is_logged(make_server):
    """A logged-in session holds two descriptors: when a worker's file limit cannot hold
    max_connections of them, the admin is told at start (and the server still runs)."""
    import resource
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    srv = make_server(settings={"pop3": {"max_connections": "1000000"}})
    c = srv.login()
    c.quit()
    log = srv.stderr_text()
    if hard != resource.RLIM_INFINITY and hard < 1000000 * 2 + 64:
        assert "event=file_limit_low" in log, log[-2000:]
        assert "max_connections=1000000" in log
    else:
        assert "event=file_limit_low" not in log
    # the test servers' 1000 connections per worker fit in any limit: no warning
    srv2 = make_server()
    srv2.login().quit()
    assert "event=file_limit_low" not in srv2.stderr_text()
