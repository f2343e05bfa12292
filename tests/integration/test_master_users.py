"""Master users ([auth] master_users): they may log in as another existing user by giving that
user as the SASL authorization identity (PLAIN, SCRAM); nobody else may."""

from tlstest import auth_plain, scram

USERS = (("admin", "admin-pw"), ("demo", "secret"), ("other", "other-pw"))


def master_server(make_server):
    srv = make_server(settings={"auth": {"master_users": "admin"}}, users=USERS, scheme="PLAIN")
    srv.deliver(b"Subject: for demo\n\nhello\n", user="demo")
    return srv


def test_master_user_logs_in_as_target_with_plain(make_server):
    srv = master_server(make_server)
    c = srv.connect()
    r = auth_plain(c, "admin", "admin-pw", authzid="demo")
    assert r.startswith("+OK"), r
    assert c.stat()[0] == 1  # demo's mailbox, not admin's
    c.quit()
    assert "event=master_login master=admin user=demo" in srv.stderr_text()
    assert "event=login" in srv.stderr_text() and "user=demo" in srv.stderr_text()


def test_master_user_logs_in_as_target_with_scram(make_server):
    srv = master_server(make_server)
    c = srv.connect()
    result = scram(c, "SCRAM-SHA-256", "admin", "admin-pw", authzid="demo")
    assert result.ok, result.final_reply
    assert c.stat()[0] == 1
    c.quit()


def test_master_user_with_wrong_password_fails(make_server):
    srv = master_server(make_server)
    c = srv.connect()
    assert auth_plain(c, "admin", "wrong", authzid="demo").startswith("-ERR [AUTH]")
    c.quit()


def test_master_user_cannot_act_as_unknown_user(make_server):
    srv = master_server(make_server)
    c = srv.connect()
    assert auth_plain(c, "admin", "admin-pw", authzid="nosuch").startswith("-ERR")
    c.quit()


def test_ordinary_user_cannot_act_as_another(make_server):
    srv = master_server(make_server)
    c = srv.connect()
    assert auth_plain(c, "other", "other-pw", authzid="demo").startswith("-ERR")
    result = scram(c, "SCRAM-SHA-256", "other", "other-pw", authzid="demo")
    assert not result.ok
    c.quit()


def test_no_master_users_configured(make_server):
    srv = make_server(users=USERS, scheme="PLAIN")
    c = srv.connect()
    assert auth_plain(c, "admin", "admin-pw", authzid="demo").startswith("-ERR")
    c.quit()
