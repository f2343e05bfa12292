"""Concurrent logged-in sessions: one per user (the maildrop lock: [IN-USE]) and at most
max_sessions_per_ip per client address ([SYS/TEMP]), across workers; a slot frees at logout."""

from buzontest import DEMO_PASS


def test_sessions_per_ip_limit(make_server):
    srv = make_server(settings={"pop3": {"max_sessions_per_ip": "2"}}, workers=2,
                      users=(("u1", DEMO_PASS), ("u2", DEMO_PASS), ("u3", DEMO_PASS)))
    a = srv.login("u1", DEMO_PASS)
    b = srv.login("u2", DEMO_PASS)
    c = srv.connect()
    c.ok("USER u3")
    r = c.cmd("PASS " + DEMO_PASS)
    assert r.startswith("-ERR [SYS/TEMP]"), r
    a.quit()
    # the slot is free again: the same connection may retry
    c.ok("USER u3")
    c.ok("PASS " + DEMO_PASS)
    c.quit()
    b.quit()
    assert "reason=max_sessions_per_ip" in srv.stderr_text()


def test_one_session_per_user(server):
    a = server.login()
    c = server.connect()
    c.ok("USER demo")
    r = c.cmd("PASS " + DEMO_PASS)
    assert r.startswith("-ERR [IN-USE]"), r
    a.quit()
    c.ok("USER demo")
    c.ok("PASS " + DEMO_PASS)
    c.quit()


def test_login_timeout_ends_silent_and_trickling_clients_but_not_logged_in_ones(make_server):
    """[pop3] login_timeout bounds the time from connection to login, whatever the client sends:
    a silent client and one trickling a byte a second (slowloris) are both cut off with -ERR once
    it has passed, while a session that logged in stays (only the 10-minute idle timeout applies)."""
    import threading
    import time

    srv = make_server(settings={"pop3": {"login_timeout": "5s"}})
    silent = srv.connect()
    logged_in = srv.login()
    trickler = srv.connect()
    trickle_result = {}

    def trickle():
        started = time.monotonic()
        try:
            for byte in b"USER demo-but-very-slowly-typed-by-a-slowloris-client":
                trickler.send(bytes([byte]))
                time.sleep(1.0)
                if time.monotonic() - started > 15:
                    break
        except OSError:
            pass
        trickle_result["elapsed"] = time.monotonic() - started

    t = threading.Thread(target=trickle)
    t.start()
    assert silent.readline().startswith("-ERR Login timeout")
    silent.expect_closed()
    t.join(30)
    assert trickler.readline().startswith("-ERR Login timeout")
    trickler.expect_closed()
    assert trickle_result["elapsed"] < 12, "the trickling client kept its slot for %.1f s" % trickle_result["elapsed"]
    assert logged_in.stat() == (0, 0)
    logged_in.quit()
    assert "login_timeout" in srv.stderr_text()
