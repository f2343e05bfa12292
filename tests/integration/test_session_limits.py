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
