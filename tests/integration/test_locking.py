"""The maildrop lock ([IN-USE], RFC 2449 §8.1.2), stale locks, snapshots and new mail."""

import time

from buzontest import retr_expected, wait_until


def test_second_session_in_use(server):
    server.deliver(b"Subject: x\n\nx\n")
    a = server.login()
    b = server.connect()
    b.ok("USER demo")
    r = b.cmd("PASS secret")
    assert r.startswith("-ERR [IN-USE]"), r
    # A is unaffected.
    assert a.stat()[0] == 1
    a.quit()
    # Now a new session can log in.
    c = wait_until(lambda: _try_login(server), 5)
    assert c, "login still refused after the first session QUIT"
    assert c.stat()[0] == 1
    c.quit()
    b.close()


def test_in_use_session_can_retry_after_release(server):
    a = server.login()
    b = server.connect()
    b.ok("USER demo")
    assert b.cmd("PASS secret").startswith("-ERR [IN-USE]")
    a.quit()
    # B is back in AUTHORIZATION and may try again on the same connection.
    for _ in range(50):
        b.ok("USER demo")
        r = b.cmd("PASS secret")
        if r.startswith("+OK"):
            break
        assert r.startswith("-ERR [IN-USE]"), r
        time.sleep(0.1)
    assert r.startswith("+OK"), r
    b.quit()


def test_wrong_password_while_locked_is_auth_error(server):
    a = server.login()
    b = server.connect()
    b.ok("USER demo")
    r = b.cmd("PASS wrong")
    assert r.startswith("-ERR [AUTH]"), "a wrong password must not reveal the lock: %r" % r
    b.close()
    a.quit()


def test_other_user_not_blocked(make_server):
    srv = make_server(users=[("demo", "secret"), ("other", "pw2")])
    a = srv.login()
    b = srv.login("other", "pw2")
    b.quit()
    a.quit()


def test_lock_released_on_disconnect(server):
    a = server.login()
    a.close()
    c = wait_until(lambda: _try_login(server), 5)
    assert c, "lock not released after the client disconnected"
    c.quit()


def test_stale_lock_after_sigkill(server):
    b1 = server.deliver(b"Subject: x\n\nx\n")
    a = server.login()
    a.ok("DELE 1")
    server.kill()  # SIGKILL to master and workers
    a.close()
    server.start()
    c = server.connect()
    c.ok("USER demo")
    r = c.cmd("PASS secret")
    assert r.startswith("+OK"), "lock left by a killed server blocks login: %r" % r
    assert c.stat()[0] == 1
    c.quit()
    assert b1 in server.files()


def test_mail_delivered_during_session(server):
    server.deliver(b"Subject: old\n\nold\n")
    a = server.login()
    n0 = a.stat()
    u0 = a.uidl()
    late = b"Subject: late\n\nlate\n"
    server.deliver(late)
    assert a.stat() == n0
    assert a.uidl() == u0
    a.err("RETR 2")
    a.err("LIST 2")
    a.ok("DELE 1")
    a.quit()
    c = server.login()
    assert c.stat()[0] == 1
    assert c.retr(1) == retr_expected(late)
    c.quit()


def test_mail_delivered_during_session_survives_quit_with_dele(server):
    server.deliver(b"Subject: one\n\none\n")
    server.deliver(b"Subject: two\n\ntwo\n")
    a = server.login()
    late = server.deliver(b"Subject: late\n\nlate\n")
    a.ok("DELE 1")
    a.ok("DELE 2")
    a.quit()
    files = server.files()
    assert list(files) == [late], files


def _try_login(srv):
    c = srv.connect()
    c.ok("USER demo")
    r = c.cmd("PASS secret")
    if r.startswith("+OK"):
        return c
    c.close()
    return None
