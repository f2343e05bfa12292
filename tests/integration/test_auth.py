"""AUTHORIZATION state: greeting, CAPA, USER/PASS, failures, unsupported commands (RFC 1939 §4, §7;
RFC 2449 §5-6; RFC 3206)."""

import re

import pytest

from buzontest import DEMO_PASS, DEMO_USER

BASE_CAPS = {"TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "EXPIRE NEVER"}


def test_greeting_is_ok(server):
    c = server.connect()
    assert c.greeting.startswith("+OK"), c.greeting
    assert len(c.greeting) + 2 <= 512
    c.quit()


def test_capa_before_login(server):
    c = server.connect()
    caps = c.capa()
    assert BASE_CAPS <= set(caps), caps
    # Nothing is advertised that the server does not do: no STLS without [tls]; SASL mechanisms
    # that work on this (loopback, plaintext) connection.
    names = {x.split()[0].upper() for x in caps}
    assert "STLS" not in names, caps
    sasl = [x for x in caps if x.split()[0] == "SASL"]
    assert len(sasl) == 1 and "PLAIN" in sasl[0].split() and "SCRAM-SHA-256" in sasl[0].split(), caps
    assert not any(m.endswith("-PLUS") for m in sasl[0].split()), "channel binding needs TLS: %r" % caps
    assert len(caps) == len(set(caps)), "duplicate capability lines: %r" % caps
    c.quit()


def test_capa_after_login_adds_implementation(server):
    c = server.login()
    caps = c.capa()
    assert BASE_CAPS <= set(caps), caps
    impl = [x for x in caps if x.split()[0] == "IMPLEMENTATION"]
    assert len(impl) == 1 and re.match(r"IMPLEMENTATION buzon\b", impl[0]), caps
    c.quit()


def test_capa_expire_follows_config(make_server):
    srv = make_server(settings={"pop3": {"expire": "NEVER"}})
    c = srv.connect()
    assert "EXPIRE NEVER" in c.capa()
    c.quit()


def test_login_success(server):
    c = server.connect()
    assert c.cmd("USER " + DEMO_USER).startswith("+OK")
    assert c.cmd("PASS " + DEMO_PASS).startswith("+OK")
    assert c.stat() == (0, 0)  # no maildir yet: an empty maildrop
    c.quit()


def test_commands_case_insensitive(server):
    server.deliver(b"Subject: x\n\nbody\n")
    c = server.connect()
    assert "TOP" in c.multi("capa")
    c.ok("user " + DEMO_USER)
    c.ok("pAsS " + DEMO_PASS)
    assert c.cmd("stat").startswith("+OK 1 ")
    c.ok("LiSt")
    c.multi_lines()
    c.ok("uidl 1")
    c.ok("noop")
    c.ok("Retr 1")
    c.read_multi_wire()
    c.ok("top 1 0")
    c.read_multi_wire()
    c.ok("rset")
    r = c.cmd("qUiT")
    assert r.startswith("+OK")
    c.expect_closed()


def test_user_name_is_case_sensitive_argument_not_command(server):
    # The command is case-insensitive, the password is not.
    c = server.connect()
    c.ok("USER " + DEMO_USER)
    r = c.cmd("PASS " + DEMO_PASS.upper())
    assert r.startswith("-ERR [AUTH]"), r
    c.quit()


def test_pass_without_user(server):
    c = server.connect()
    c.err("PASS " + DEMO_PASS)
    # still usable
    c.login()
    c.quit()


def test_user_without_argument(server):
    c = server.connect()
    c.err("USER")
    c.login()
    c.quit()


def test_pass_without_argument(server):
    c = server.connect()
    c.ok("USER " + DEMO_USER)
    c.err("PASS")
    c.login()
    c.quit()


def test_failed_login_same_answer_and_retry(server):
    c = server.connect()
    c.ok("USER nosuchuser")
    unknown = c.cmd("PASS " + DEMO_PASS)
    assert unknown.startswith("-ERR [AUTH]"), unknown
    c.ok("USER " + DEMO_USER)
    wrong = c.cmd("PASS wrong-password")
    assert wrong.startswith("-ERR [AUTH]"), wrong
    assert unknown == wrong, "unknown user and wrong password must look the same: %r vs %r" % (unknown, wrong)
    # Still in AUTHORIZATION: a correct login now succeeds.
    c.login()
    assert c.stat() == (0, 0)
    c.quit()


def test_failed_login_then_pass_alone_fails(server):
    # After a failed PASS the USER is forgotten: PASS alone must not log in.
    c = server.connect()
    c.ok("USER " + DEMO_USER)
    c.err("PASS wrong")
    c.err("PASS " + DEMO_PASS)
    c.err("STAT")
    c.quit()


@pytest.mark.parametrize("line", ["APOP demo 0123456789abcdef0123456789abcdef", "AUTH NOSUCH", "AUTH SCRAM-SHA-256-PLUS", "STLS"])
def test_unsupported_auth_commands(server, line):
    c = server.connect()
    c.err(line)
    c.login()  # the session is still usable
    c.quit()


@pytest.mark.parametrize("line", ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1",
                                  "UIDL", "UIDL 1"])
def test_transaction_commands_before_login(server, line):
    server.deliver(b"Subject: x\n\nbody\n")
    c = server.connect()
    c.err(line)
    c.login()
    assert c.stat()[0] == 1
    c.quit()


def test_user_pass_in_transaction(server):
    c = server.login()
    c.err("USER " + DEMO_USER)
    c.err("PASS " + DEMO_PASS)
    c.err("APOP demo 0123456789abcdef0123456789abcdef")
    assert c.stat() == (0, 0)
    c.quit()


def test_quit_in_authorization(server):
    base = server.deliver(b"Subject: x\n\nbody\n")
    c = server.connect()
    c.ok("USER " + DEMO_USER)
    r = c.cmd("QUIT")
    assert r.startswith("+OK"), r
    c.expect_closed()
    files = server.files()
    assert files[base][0] == "new", "QUIT in AUTHORIZATION must not touch the maildrop: %r" % files


def test_user_with_domain_and_location_variables(make_server):
    srv = make_server(users=[("alice@example.com", "pw1")], start=False)
    srv.settings["mail"]["location"] = "maildir:%s/mail/%%d/%%n" % srv.base
    srv.start()
    md = "%s/mail/example.com/alice" % srv.base
    srv.deliver(b"Subject: hi alice\n\nhello\n", maildir=md)
    c = srv.login("alice@example.com", "pw1")
    assert c.stat() == (1, len(b"Subject: hi alice\r\n\r\nhello\r\n"))
    c.quit()


def test_yescrypt_user_login(make_server):
    srv = make_server(users=[("ycuser", "s3cret-pass")], scheme="YESCRYPT")
    c = srv.connect()
    c.ok("USER ycuser")
    assert c.cmd("PASS wrong").startswith("-ERR [AUTH]")
    c.ok("USER ycuser")
    c.ok("PASS s3cret-pass")
    c.quit()


@pytest.mark.parametrize("user_line,pass_line", [
    (b"USER demo\x00junk", b"PASS secret"),
    (b"USER demo", b"PASS secret\x00junk"),
    (b"USER demo\x00", b"PASS secret"),
])
def test_nul_byte_does_not_truncate_credentials(server, user_line, pass_line):
    # A NUL inside a line must not cut the user name or the password short (C string truncation).
    c = server.connect()
    c.send(user_line + b"\r\n")
    c.readline()
    r = c.cmd(pass_line)
    assert not r.startswith("+OK"), "%r / %r logged in as demo: %r" % (user_line, pass_line, r)
    c.err("STAT")
    c.login()
    c.quit()
