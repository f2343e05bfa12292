"""Login hardening: growing delays after failed logins, bans, trusted networks, and the privilege
split that keeps the passwd file away from the network-facing workers."""

import os
import pwd
import re
import subprocess
import sys
import time

import pytest

from buzontest import DEMO_PASS, DEMO_USER, Closed, is_root, valgrind_unsuitable, wait_until
from tlstest import TPop3, auth_plain, start_fails

DELAY = 0.2
DELAY_MAX = 0.8


def hardening(**over):
    auth = {"failure_delay": "200ms", "failure_delay_max": "800ms", "ban_failures": "5",
            "ban_window": "30s", "ban_time": "3s"}
    auth.update(over)
    return {"auth": auth}


def timed_failure(srv, password, source=None, user=DEMO_USER):
    """One failed USER/PASS on a new connection; returns the seconds until the -ERR [AUTH]."""
    c = TPop3(srv.port, source=source)
    try:
        assert c.greeting.startswith("+OK"), c.greeting
        c.ok("USER " + user)
        t0 = time.monotonic()
        r = c.cmd("PASS " + password)
        dt = time.monotonic() - t0
        assert r.startswith("-ERR [AUTH]"), "wrong password -> %r" % r
        c.cmd("QUIT")
    finally:
        c.close()
    return dt


def check_delay(dt, expect, what):
    lo, hi = expect * 0.85 - 0.02, expect + 0.3
    assert lo <= dt <= hi, "%s: failed login answered after %.3fs, expected ~%.1fs" % (what, dt, expect)


def login_ok(srv, source=None):
    c = TPop3(srv.port, source=source)
    try:
        assert c.greeting.startswith("+OK"), c.greeting
        c.login()
        c.quit()
    finally:
        c.close()


def refused(srv, source=None):
    """True if a new connection from source is refused (an -ERR greeting or closed at once)."""
    try:
        c = TPop3(srv.port, source=source, timeout=5)
    except (Closed, ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
        return True
    try:
        if c.greeting.startswith("-ERR"):
            return True
        assert c.greeting.startswith("+OK"), c.greeting
        return False
    finally:
        c.close()


@valgrind_unsuitable
def test_delay_doubles_up_to_cap(make_server):
    srv = make_server(settings=hardening(ban_failures="50"))
    expect = [DELAY, 2 * DELAY, DELAY_MAX, DELAY_MAX]
    for i, e in enumerate(expect):
        dt = timed_failure(srv, "wrong-%d" % i)
        check_delay(dt, e, "failure %d" % (i + 1))
    # a successful login is not delayed by much and resets the delay
    t0 = time.monotonic()
    login_ok(srv)
    assert time.monotonic() - t0 < DELAY_MAX + 0.5
    check_delay(timed_failure(srv, "wrong-after-reset"), DELAY, "first failure after a good login")


@valgrind_unsuitable
def test_same_wrong_password_does_not_grow(make_server):
    srv = make_server(settings=hardening(ban_failures="50"))
    check_delay(timed_failure(srv, "stale"), DELAY, "first failure")
    for i in range(3):
        dt = timed_failure(srv, "stale")
        assert dt <= 1.5 * DELAY + 0.05, "repeat %d of the same wrong password took %.3fs: delay grew" % (i + 1, dt)
    check_delay(timed_failure(srv, "another"), 2 * DELAY, "second distinct wrong password")


@valgrind_unsuitable
def test_delay_applies_to_sasl_and_unknown_users(make_server):
    srv = make_server(settings=hardening(ban_failures="50"))
    c = TPop3(srv.port)
    t0 = time.monotonic()
    r = auth_plain(c, DEMO_USER, "bad-1")
    check_delay(time.monotonic() - t0, DELAY, "AUTH PLAIN failure")
    assert r.startswith("-ERR [AUTH]"), r
    c.close()
    check_delay(timed_failure(srv, "bad-2", user="nosuchuser"), 2 * DELAY, "unknown user failure")


def test_delay_is_per_client_ip(make_server):
    srv = make_server(settings=hardening(ban_failures="50"))
    for i in range(3):
        timed_failure(srv, "w%d" % i)
    check_delay(timed_failure(srv, "other-ip", source="127.0.0.2"), DELAY, "failure from 127.0.0.2")


def test_ban_and_unban(make_server):
    srv = make_server(settings=hardening())
    for i in range(5):
        timed_failure(srv, "guess-%d" % i)
    assert wait_until(lambda: refused(srv), timeout=2), "client not banned after 5 failures"
    t_banned = time.monotonic()
    assert wait_until(lambda: "event=ban" in srv.stderr_text(), timeout=3), \
        "no event=ban in the log:\n" + srv.stderr_text()[-3000:]
    # another address is unaffected
    assert not refused(srv, source="127.0.0.2")
    login_ok(srv, source="127.0.0.2")
    # still banned a moment later, even with the right password
    assert refused(srv)
    # the ban ends after ban_time (3 s; bans have one-second granularity)
    assert wait_until(lambda: not refused(srv), timeout=6, interval=0.25), "ban did not end"
    lifted = time.monotonic() - t_banned
    assert lifted >= 2.0, "ban lasted only %.1fs (ban_time = 3s)" % lifted
    # once connections are accepted again, logins must be too (the workers' ban table and the
    # auth process must agree on when the ban ends)
    c = TPop3(srv.port)
    c.ok("USER " + DEMO_USER)
    r = c.cmd("PASS " + DEMO_PASS)
    c.close()
    assert r.startswith("+OK"), ("greeting accepted again %.2fs after the ban started, but the login "
                                 "is still refused: %r" % (lifted, r))
    login_ok(srv)


def test_banned_client_refused_on_tls_port(make_server):
    from tlstest import client_context, tls_server
    import ssl
    srv = tls_server(make_server, settings=hardening(ban_time="30s"))
    for i in range(5):
        timed_failure(srv, "guess-%d" % i)
    assert wait_until(lambda: refused(srv), timeout=2)
    try:
        c = TPop3(srv.tls_port, context=client_context(srv.ca), timeout=5)
    except (ssl.SSLError, Closed, ConnectionResetError, BrokenPipeError):
        pass
    else:
        g = c.greeting
        c.close()
        raise AssertionError("banned client served on the implicit-TLS port: %r" % g)
    # the refusal is a plain close: a plaintext -ERR would reach a TLS client as garbage
    import socket
    raw = socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5)
    try:
        assert raw.recv(100) == b""
    except ConnectionResetError:
        pass
    raw.close()
    c = TPop3(srv.tls_port, context=client_context(srv.ca), source="127.0.0.2")
    c.login()
    c.quit()


def test_scram_failures_are_delayed_and_counted(make_server):
    from tlstest import scram
    srv = make_server(settings=hardening(), scheme="SCRAM-SHA-256")
    for i in range(5):
        c = TPop3(srv.port)
        t0 = time.monotonic()
        res = scram(c, "SCRAM-SHA-256", DEMO_USER, "guess-%d" % i)
        dt = time.monotonic() - t0
        c.close()
        assert not res.ok and res.final_reply.startswith("-ERR [AUTH]"), res.final_reply
        assert dt >= DELAY * 0.85 - 0.02, "SCRAM failure %d answered after %.3fs: no delay" % (i + 1, dt)
    assert wait_until(lambda: refused(srv), timeout=2), "5 SCRAM failures did not ban"


@valgrind_unsuitable
def test_delay_does_not_block_other_clients(make_server):
    """One worker: while one client waits out its failure delay, others are served at once."""
    srv = make_server(settings=hardening(ban_failures="50", failure_delay="800ms"), workers=1)
    slow = TPop3(srv.port)
    slow.ok("USER " + DEMO_USER)
    slow.send("PASS wrong\r\n")
    time.sleep(0.1)
    t0 = time.monotonic()
    login_ok(srv, source="127.0.0.2")
    assert time.monotonic() - t0 < 0.5, "another client waited %.2fs behind a failure delay" % (time.monotonic() - t0)
    assert slow.readline().startswith("-ERR [AUTH]")
    # a client that hangs up during its delay does no harm
    gone = TPop3(srv.port)
    gone.ok("USER " + DEMO_USER)
    gone.send("PASS wrong-again\r\n")
    gone.close()
    time.sleep(0.2)
    slow.close()
    login_ok(srv, source="127.0.0.2")


def test_repeated_same_password_never_bans(make_server):
    srv = make_server(settings=hardening())
    for _ in range(7):
        timed_failure(srv, "stale-stored-password")
    assert not refused(srv), "the same wrong password repeated 7 times banned the client"
    login_ok(srv)


def test_good_login_does_not_wash_ban_count(make_server):
    srv = make_server(settings=hardening())
    for i in range(3):
        timed_failure(srv, "g%d" % i)
    login_ok(srv)
    for i in range(3, 5):
        timed_failure(srv, "g%d" % i)
    assert wait_until(lambda: refused(srv), timeout=2), \
        "5 failures with a good login in between did not ban (a login must not reset the ban count)"


@valgrind_unsuitable
def test_trusted_networks_exempt(make_server):
    srv = make_server(settings=hardening(trusted_networks="127.0.0.0/8"))
    for i in range(7):
        dt = timed_failure(srv, "t%d" % i)
        assert dt < 0.15, "trusted client delayed %.3fs on failure %d" % (dt, i + 1)
    assert not refused(srv), "trusted client banned"
    login_ok(srv)
    assert "event=ban" not in srv.stderr_text()


@valgrind_unsuitable
def test_trusted_networks_partial(make_server):
    """Only 127.0.0.1/32 trusted: 127.0.0.2 is still slowed down."""
    srv = make_server(settings=hardening(trusted_networks="127.0.0.1/32", ban_failures="50"))
    assert timed_failure(srv, "x1") < 0.15
    check_delay(timed_failure(srv, "x2", source="127.0.0.2"), DELAY, "untrusted 127.0.0.2")


@valgrind_unsuitable
def test_default_failure_delay(make_server):
    """Without failure_delay in the file the documented default (2 s) applies."""
    srv = make_server(settings={"auth": {"failure_delay": None}})
    dt = timed_failure(srv, "wrong")
    assert 1.6 <= dt <= 2.6, "default first delay %.2fs, expected ~2s" % dt


# ---------------------------------------------------------------------------------------------
# privilege separation


def _procs_in_group(pgid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
            with open("/proc/%s/status" % name) as f:
                status = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) != pgid:  # pgrp
            continue
        info = {"pid": int(name), "comm": stat.split("(", 1)[1].rsplit(")", 1)[0]}
        for line in status.splitlines():
            k, _, v = line.partition(":")
            if k in ("Uid", "Gid"):
                info[k] = [int(x) for x in v.split()]
            elif k == "Groups":
                info[k] = [int(x) for x in v.split()]
            elif k in ("CapEff", "CapPrm"):
                info[k] = int(v.strip(), 16)
        out.append(info)
    return out


@pytest.mark.skipif(not is_root(), reason="needs root to run the auth process as another user")
def test_workers_cannot_read_passwd_file(make_server):
    auth_user, worker_user = "daemon", "nobody"
    apw, wpw = pwd.getpwnam(auth_user), pwd.getpwnam(worker_user)
    srv = make_server(settings={"server": {"user": worker_user}, "auth": {"user": auth_user}},
                      start=False)
    path = srv.settings["auth"]["passwd_file"]

    def own_by_auth():
        os.chown(path, apw.pw_uid, apw.pw_gid)
        os.chmod(path, 0o600)

    srv.own_passwd_file = own_by_auth  # the fixture would give it to the workers' user
    own_by_auth()
    srv.start()
    c = srv.login()
    assert c.stat() == (0, 0)
    c.quit()
    c = srv.connect()
    assert auth_plain(c, DEMO_USER, DEMO_PASS).startswith("+OK")
    c.quit()

    st = os.stat(path)
    assert st.st_uid == apw.pw_uid and (st.st_mode & 0o077) == 0, "passwd file mode/owner changed"
    procs = _procs_in_group(srv.proc.pid)
    workers = [p for p in procs if p["Uid"][0] == wpw.pw_uid]
    auths = [p for p in procs if p["Uid"][0] == apw.pw_uid]
    assert workers, "no process runs as %s: %r" % (worker_user, procs)
    assert auths, "no process runs as %s (the auth process): %r" % (auth_user, procs)
    for p in workers:
        assert set(p["Uid"]) == {wpw.pw_uid}, "worker %d keeps another uid: %r" % (p["pid"], p["Uid"])
        assert 0 not in p["Gid"] and apw.pw_gid not in p["Gid"], p
        assert p["CapEff"] == 0 and p["CapPrm"] == 0, "worker %d has capabilities: %r" % (p["pid"], p)
        assert st.st_uid not in p["Uid"]
    # and concretely: that uid cannot open the file
    r = subprocess.run([sys.executable, "-c", "open(%r).read()" % path], user=wpw.pw_uid,
                       group=wpw.pw_gid, extra_groups=[], capture_output=True, timeout=10)
    assert r.returncode != 0 and b"PermissionError" in r.stderr, (r.returncode, r.stderr)
    # the workers hold no open descriptor to it either
    for p in workers:
        try:
            fds = os.listdir("/proc/%d/fd" % p["pid"])
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("/proc/%d/fd/%s" % (p["pid"], fd))
            except OSError:
                continue
            assert target != path, "worker %d has the passwd file open (fd %s)" % (p["pid"], fd)


@pytest.mark.parametrize("change", [
    {"ban_failures": "65"},
    {"ban_failures": "lots"},
    {"failure_delay": "-1s"},
    {"failure_delay_max": "2h"},
    {"ban_window": "0"},
    {"ban_time": "2d"},
    {"trusted_networks": "127.0.0.0/33"},
    {"trusted_networks": "not-a-network"},
    {"cleartext": "sometimes"},
    {"mechanisms": "PLAIN FOO"},
    {"apop": "maybe"},
])
def test_bad_auth_config_refuses_start(make_server, change):
    srv = make_server(start=False)
    srv.settings["auth"].update(change)
    out = start_fails(srv)
    key = list(change)[0]
    assert key in out or re.search(r"buzon\.conf:\d+:", out), \
        "error message names neither %s nor FILE:LINE:\n%s" % (key, out[-2000:])


@valgrind_unsuitable
def test_delays_and_ban_shared_by_all_workers(make_server):
    """Three workers: the delay keeps growing whichever worker takes the connection, and the ban
    holds on every worker."""
    srv = make_server(settings=hardening(ban_time="30s"), workers=3)
    expect = [DELAY, 2 * DELAY, DELAY_MAX, DELAY_MAX, DELAY_MAX]
    for i, e in enumerate(expect):
        check_delay(timed_failure(srv, "w%d" % i), e, "failure %d with 3 workers" % (i + 1))
    assert wait_until(lambda: refused(srv), timeout=2)
    for _ in range(12):
        assert refused(srv), "a worker served the banned client"
    login_ok(srv, source="127.0.0.2")
