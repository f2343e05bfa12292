"""RFC 2449 LOGIN-DELAY and EXPIRE per user: the passwd-file's `login_delay=` and `expire=` extra
fields, the CAPA lines before and after login, LOGIN-DELAY enforced with `-ERR [LOGIN-DELAY]` for
every way of logging in, and the last-login record that outlives a restart.

Time is injected with the BUZON_TEST_NOW test hook (wall_now() in src/core/util.c): the server
sees a fixed clock, and a later time needs a restart, which is also what the persistence tests
need."""

import base64
import hashlib
import os
import re

from buzontest import make_message, wait_until
from lmtptest import set_user_extra

T0 = 1767225600  # 2026-01-01T00:00:00Z


def start_at(srv, now, monkeypatch):
    """(Re)starts srv with its wall clock fixed at now."""
    monkeypatch.setenv("BUZON_TEST_NOW", str(now))
    if srv.proc is not None:
        srv.stop()
    srv.start()


def last_login_record(srv, user):
    path = os.path.join(srv.maildir(user), "buzon-lastlogin")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def new_server(make_server, login_delay="0", expire="NEVER", extra_users=()):
    """A server (not started) with demo/secret and extra_users: [(name, extra fields)], whose
    password is "pw"."""
    srv = make_server(settings={"pop3": {"login_delay": login_delay, "expire": expire}},
                      start=False)
    for name, extra in extra_users:
        set_user_extra(srv, name, extra)
    return srv


def login_refused(srv, user, password, wait):
    """Logs in with USER/PASS, expects -ERR [LOGIN-DELAY] naming wait seconds, and that the session
    goes on (a later QUIT works)."""
    c = srv.connect()
    c.ok("USER " + user)
    r = c.err("PASS " + password)
    assert r.startswith("-ERR [LOGIN-DELAY] "), r
    assert " %d seconds" % wait in r, r
    c.quit()


def login_quit(srv, user, password):
    c = srv.connect()
    c.login(user, password)
    c.quit()


def test_refused_within_delay_allowed_after_and_kept_across_restarts(make_server, monkeypatch):
    srv = new_server(make_server, login_delay="10m")
    start_at(srv, T0, monkeypatch)
    login_quit(srv, "demo", "secret")
    assert last_login_record(srv, "demo") == "%d\n" % T0
    # the maildrop is not even opened: a message waiting in new/ stays there
    srv.deliver(make_message("waiting", b"body\n"))
    login_refused(srv, "demo", "secret", 600)
    assert [v[0] for v in srv.files().values()] == ["new"]
    assert "reason=login_delay wait=600s" in srv.stderr_text()
    # a wrong password is still a wrong password, not a hint that the user exists
    c = srv.connect()
    c.ok("USER demo")
    assert c.err("PASS wrong").startswith("-ERR [AUTH]")
    c.quit()

    start_at(srv, T0 + 599, monkeypatch)
    login_refused(srv, "demo", "secret", 1)
    assert last_login_record(srv, "demo") == "%d\n" % T0  # a refusal records nothing

    start_at(srv, T0 + 600, monkeypatch)
    c = srv.connect()
    c.login("demo", "secret")
    assert c.stat()[0] == 1
    c.quit()
    assert last_login_record(srv, "demo") == "%d\n" % (T0 + 600)


def test_damaged_or_future_record_refuses_nothing(make_server, monkeypatch):
    srv = new_server(make_server, login_delay="10m")
    srv.make_maildir("demo")
    path = os.path.join(srv.maildir("demo"), "buzon-lastlogin")
    start_at(srv, T0, monkeypatch)
    for text in ("not a time\n", "%d\n" % (T0 + 3600)):  # garbage; a clock set back since
        with open(path, "w") as f:
            f.write(text)
        login_quit(srv, "demo", "secret")
        assert last_login_record(srv, "demo") == "%d\n" % T0
        os.unlink(path)
    assert "login_delay_record_failed" in srv.stderr_text()


def test_per_user_override(make_server, monkeypatch):
    srv = new_server(make_server, login_delay="10m", extra_users=[
        ("free", "login_delay=0"),
        ("slow", "userdb_login_delay=1h"),
    ])
    start_at(srv, T0, monkeypatch)
    for user, password in (("demo", "secret"), ("free", "pw"), ("slow", "pw")):
        login_quit(srv, user, password)
    login_refused(srv, "demo", "secret", 600)
    login_quit(srv, "free", "pw")  # no delay: again at once, and nothing recorded
    assert last_login_record(srv, "free") is None
    login_refused(srv, "slow", "pw", 3600)

    start_at(srv, T0 + 601, monkeypatch)
    login_quit(srv, "demo", "secret")
    login_refused(srv, "slow", "pw", 2999)


def capa_has(c, expected, absent=()):
    caps = c.capa()
    for line in expected:
        assert line in caps, (line, caps)
    for line in absent:
        assert line not in caps, (line, caps)
    return caps


def test_capa_before_and_after_login(make_server, monkeypatch):
    srv = new_server(make_server, extra_users=[("slow", "expire=5 login_delay=15m")])
    start_at(srv, T0, monkeypatch)
    # before login: the smallest EXPIRE and the largest LOGIN-DELAY of any user, marked USER (the
    # worker asks the auth process at its start; the answer comes within milliseconds)
    wait_until(lambda: "EXPIRE 5 USER" in srv.connect().capa(), timeout=5)
    c = srv.connect()
    capa_has(c, ["EXPIRE 5 USER", "LOGIN-DELAY 900 USER"], ["EXPIRE NEVER"])
    c.login("slow", "pw")
    capa_has(c, ["EXPIRE 5", "LOGIN-DELAY 900"], ["EXPIRE 5 USER", "LOGIN-DELAY 900 USER"])
    c.quit()
    c = srv.connect()
    c.login("demo", "secret")
    # the client saw a bound before login: it is told that none applies to this user
    capa_has(c, ["EXPIRE NEVER", "LOGIN-DELAY 0"], ["EXPIRE 5"])
    c.quit()


def test_capa_global_values_without_user(make_server, monkeypatch):
    srv = new_server(make_server, login_delay="5m", expire="30")
    start_at(srv, T0, monkeypatch)
    c = srv.connect()
    capa_has(c, ["EXPIRE 30", "LOGIN-DELAY 300"], ["EXPIRE 30 USER", "LOGIN-DELAY 300 USER"])
    c.login("demo", "secret")
    capa_has(c, ["EXPIRE 30", "LOGIN-DELAY 300"])
    c.quit()

    srv2 = new_server(make_server)  # no delay anywhere: no LOGIN-DELAY line at all
    start_at(srv2, T0, monkeypatch)
    c = srv2.connect()
    caps = capa_has(c, ["EXPIRE NEVER"])
    assert not [l for l in caps if l.startswith("LOGIN-DELAY")], caps
    c.login("demo", "secret")
    caps = capa_has(c, ["EXPIRE NEVER"])
    assert not [l for l in caps if l.startswith("LOGIN-DELAY")], caps
    c.quit()


def test_sasl_and_apop_refused_the_same_way(make_server, monkeypatch):
    srv = make_server(settings={"pop3": {"login_delay": "10m"},
                                "auth": {"apop": "yes", "mechanisms": "PLAIN SCRAM-SHA-256"}},
                      start=False)
    start_at(srv, T0, monkeypatch)
    login_quit(srv, "demo", "secret")
    c = srv.connect()
    initial = base64.b64encode(b"\0demo\0secret").decode()
    r = c.err("AUTH PLAIN " + initial)
    assert r.startswith("-ERR [LOGIN-DELAY] "), r
    # the session goes on: the same through a continuation, and with APOP
    assert c.cmd("AUTH PLAIN").startswith("+ ")
    r = c.err(initial)
    assert r.startswith("-ERR [LOGIN-DELAY] "), r
    timestamp = re.search(r"<[^>]*>", c.greeting).group(0)
    digest = hashlib.md5((timestamp + "secret").encode()).hexdigest()
    r = c.err("APOP demo " + digest)
    assert r.startswith("-ERR [LOGIN-DELAY] "), r
    c.quit()
    assert srv.stderr_text().count("reason=login_delay") == 3
