"""SASL AUTH (RFC 5034) with PLAIN (RFC 4616), LOGIN, SCRAM-SHA-1/256 (RFC 5802, RFC 7677) and
their -PLUS variants with channel binding, CRAM-MD5 (RFC 2195), EXTERNAL (TLS client
certificates); UTF8 (RFC 6856); APOP (RFC 1939 §7)."""

import re
import ssl

import pytest

from buzontest import DEMO_PASS, DEMO_USER
from tlstest import (TPop3, apop_digest, auth_cram_md5, auth_login, auth_plain, b64, capa_names,
                     client_context, plain_message, sasl_mechs, scram, send_utf8, tls_exporter,
                     tls_server, tls_server_end_point)

DEFAULT_MECHS = ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1"]
ALL_MECHS = "PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS SCRAM-SHA-1 SCRAM-SHA-1-PLUS CRAM-MD5 EXTERNAL"


def add_default_user(srv, user, password):
    """`buzon user add` without --scheme: a secret for every enabled mechanism."""
    r = srv.cli("user", "add", "-c", srv.conf, "--password-stdin", user, stdin=password + "\n")
    assert r.returncode == 0, "user add %s: %s %s" % (user, r.stdout, r.stderr)
    srv.own_passwd_file()


def passwd_line(srv, user):
    with open(srv.settings["auth"]["passwd_file"], encoding="utf-8") as f:
        for line in f:
            if line.split(":", 1)[0] == user:
                return line.rstrip("\n")
    return None


def logged_in(c):
    r = c.cmd("STAT")
    return r.startswith("+OK")


# ---------------------------------------------------------------------------------------------
# CAPA and bare AUTH


def test_capa_sasl_plain_connection(server):
    c = server.connect()
    caps = c.capa()
    mechs = sasl_mechs(caps)
    assert mechs is not None, "no SASL line in CAPA: %r" % caps
    assert set(mechs) == {"PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"}, mechs
    assert not [m for m in mechs if m.endswith("-PLUS")], "-PLUS offered without TLS: %r" % mechs
    assert "EXTERNAL" not in mechs
    c.quit()


def test_capa_sasl_over_tls(make_server):
    srv = tls_server(make_server, client_ca=True,
                     settings={"auth": {"mechanisms": ALL_MECHS}})
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    mechs = sasl_mechs(c.capa())
    assert set(mechs) == set(ALL_MECHS.split()), mechs
    c.quit()
    # plain connection: no -PLUS, no EXTERNAL; after STLS they appear
    c = TPop3(srv.port)
    mechs = sasl_mechs(c.capa())
    assert set(mechs) == set(ALL_MECHS.split()) - {"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "EXTERNAL"}, mechs
    c.starttls(client_context(srv.ca))
    mechs = sasl_mechs(c.capa())
    assert set(mechs) == set(ALL_MECHS.split()), mechs
    c.quit()


def test_capa_external_needs_client_ca(make_server):
    srv = tls_server(make_server, settings={"auth": {"mechanisms": ALL_MECHS}})
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    mechs = sasl_mechs(c.capa())
    assert "EXTERNAL" not in mechs, "EXTERNAL offered without [tls] client_ca: %r" % mechs
    r = c.cmd("AUTH EXTERNAL =")
    assert r.startswith("-ERR"), r
    c.quit()


def test_capa_default_mechanisms_over_tls(make_server):
    srv = tls_server(make_server)
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    mechs = sasl_mechs(c.capa())
    assert set(mechs) == set(DEFAULT_MECHS), mechs
    c.quit()


def test_bare_auth_lists_mechanisms(server):
    c = server.connect()
    mechs = sasl_mechs(c.capa())
    r = c.cmd("AUTH")
    assert r.startswith("+OK"), "bare AUTH -> %r" % r
    listed = c.multi_lines()
    assert listed and all(re.fullmatch(r"[A-Z0-9_-]{1,20}", m) for m in listed), listed
    assert sorted(m.upper() for m in listed) == sorted(mechs), (listed, mechs)
    c.login()
    c.quit()


def test_mechanisms_config_restricts(make_server):
    srv = make_server(settings={"auth": {"mechanisms": "SCRAM-SHA-256"}})
    c = srv.connect()
    assert sasl_mechs(c.capa()) == ["SCRAM-SHA-256"]
    r = auth_plain(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("-ERR"), "disabled mechanism PLAIN -> %r" % r
    assert c.cmd("AUTH SCRAM-SHA-1 " + b64("n,,n=demo,r=abcdefgh")).startswith("-ERR")
    c.quit()


# ---------------------------------------------------------------------------------------------
# PLAIN


def test_plain_initial_response(server):
    c = server.connect()
    r = auth_plain(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("+OK"), r
    assert c.stat() == (0, 0)
    c.quit()


def test_plain_after_empty_challenge(server):
    c = server.connect()
    r = auth_plain(c, DEMO_USER, DEMO_PASS, initial=False)
    assert r.startswith("+OK"), r
    assert logged_in(c)
    c.quit()


def test_plain_authzid_equal_to_user(server):
    c = server.connect()
    r = auth_plain(c, DEMO_USER, DEMO_PASS, authzid=DEMO_USER)
    assert r.startswith("+OK"), r
    c.quit()


def test_plain_empty_initial_response_fails(server):
    c = server.connect()
    r = c.cmd("AUTH PLAIN =")
    assert r.startswith("-ERR"), "AUTH PLAIN = (empty message) -> %r" % r
    assert not logged_in(c)
    assert auth_plain(c, DEMO_USER, DEMO_PASS).startswith("+OK")
    c.quit()


def test_plain_cancel(server):
    c = server.connect()
    assert c.cmd("AUTH PLAIN") == "+ "
    r = c.cmd("*")
    assert r.startswith("-ERR"), "cancel -> %r" % r
    # RFC 5034: as if AUTH had not been issued
    assert not logged_in(c)
    assert auth_plain(c, DEMO_USER, DEMO_PASS).startswith("+OK")
    c.quit()


@pytest.mark.parametrize("bad", [
    "!!!",
    "=AAA",
    "AAA=BBB",
    "ZGVtbwBkZW1vAHNlY3JldA",          # "demo\0demo\0secret" with its "==" padding removed
    "ZGVtbwBkZW1vAHNlY3JldA==\x01",
    "ZGVtbwBk ZW1vAHNlY3JldA==",
])
def test_plain_malformed_base64(server, bad):
    c = server.connect()
    # the message itself would be valid ("demo\0demo\0secret"): only its encoding is wrong
    assert b64(plain_message(DEMO_USER, DEMO_PASS, DEMO_USER)) == "ZGVtbwBkZW1vAHNlY3JldA=="
    r = c.cmd("AUTH PLAIN " + bad)
    assert r.startswith("-ERR"), "AUTH PLAIN %r -> %r" % (bad, r)
    assert not logged_in(c)
    # same as a continuation response
    assert c.cmd("AUTH PLAIN") == "+ "
    r = c.cmd(bad)
    assert r.startswith("-ERR"), "continuation %r -> %r" % (bad, r)
    assert not logged_in(c)
    c.quit()


def test_plain_authzid_other_user(make_server):
    srv = make_server(users=((DEMO_USER, DEMO_PASS), ("other", "otherpw")))
    c = srv.connect()
    r = auth_plain(c, DEMO_USER, DEMO_PASS, authzid="other")
    assert r.startswith("-ERR"), "authzid other than the user -> %r" % r
    assert not logged_in(c)
    c.quit()


@pytest.mark.parametrize("msg", [b"demo\0secret", b"\0demo", b"\0\0secret", b"\0demo\0secret\0x",
                                 b"\0demo\0"])
def test_plain_malformed_message(server, msg):
    c = server.connect()
    r = c.cmd("AUTH PLAIN " + b64(msg))
    assert r.startswith("-ERR"), "PLAIN message %r -> %r" % (msg, r)
    assert not logged_in(c)
    c.quit()


def test_plain_wrong_password_and_unknown_user(server):
    c = server.connect()
    r1 = auth_plain(c, DEMO_USER, "wrong")
    assert r1.startswith("-ERR [AUTH]"), r1
    r2 = auth_plain(c, "nosuchuser", "wrong")
    assert r2.startswith("-ERR [AUTH]"), r2
    assert r1 == r2, "unknown user and wrong password answer differently: %r / %r" % (r1, r2)
    assert auth_plain(c, DEMO_USER, DEMO_PASS).startswith("+OK")
    c.quit()


def test_unknown_mechanism(server):
    c = server.connect()
    for line in ("AUTH FOO", "AUTH FOO " + b64("x"), "AUTH GSSAPI", "AUTH X" * 40):
        r = c.cmd(line)
        assert r.startswith("-ERR"), "%s -> %r" % (line[:40], r)
    assert not logged_in(c)
    c.login()
    c.quit()


def test_auth_in_transaction_refused(server):
    c = server.login()
    r = auth_plain(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("-ERR"), r
    c.quit()


def test_auth_mechanism_case_insensitive(server):
    c = server.connect()
    r = c.cmd("auth plain " + b64(plain_message(DEMO_USER, DEMO_PASS)))
    assert r.startswith("+OK"), r
    c.quit()


def test_auth_pipelined(server):
    """PIPELINING: AUTH, its continuation response and the next command in one write."""
    c = server.connect()
    c.send("AUTH PLAIN\r\n%s\r\nSTAT\r\nNOOP\r\n" % b64(plain_message(DEMO_USER, DEMO_PASS)))
    assert c.readline() == "+ "
    r = c.readline()
    assert r.startswith("+OK"), r
    assert c.readline().startswith("+OK 0 0"), "STAT"
    assert c.readline().startswith("+OK"), "NOOP"
    c.quit()


def test_auth_pipelined_failure(server):
    c = server.connect()
    c.send("AUTH PLAIN %s\r\nSTAT\r\nUSER %s\r\nPASS %s\r\nSTAT\r\n"
           % (b64(plain_message(DEMO_USER, "wrong")), DEMO_USER, DEMO_PASS))
    assert c.readline().startswith("-ERR [AUTH]")
    assert c.readline().startswith("-ERR"), "STAT after a failed AUTH"
    assert c.readline().startswith("+OK")
    assert c.readline().startswith("+OK")
    assert c.readline().startswith("+OK 0 0")
    c.quit()


def test_255_octet_password_via_continuation(make_server):
    """RFC 4616 §2: a server MUST accept passwords of up to 255 octets."""
    pw = "x" * 155 + "\u00e9" * 50  # 255 octets of UTF-8
    assert len(pw.encode()) == 255
    srv = make_server(users=((DEMO_USER, pw),))
    c = srv.connect()
    r = auth_plain(c, DEMO_USER, pw, initial=False)
    assert r.startswith("+OK"), r
    c.quit()
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, pw)
    assert res.ok, res.final_reply
    c.quit()


def test_password_longer_than_sasl_limit(make_server):
    """A password that `buzon user add` stores must be usable with PLAIN; if PLAIN has a limit
    (255 octets), `user add` should refuse longer passwords instead of creating an account no
    client can log in to with PLAIN."""
    pw = "y" * 400
    srv = make_server(users=())
    r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", DEMO_USER,
                stdin=pw + "\n")
    if r.returncode != 0:
        return  # refused at creation: consistent
    srv.own_passwd_file()
    c = srv.connect()
    r = auth_plain(c, DEMO_USER, pw, initial=False)
    assert r.startswith("+OK"), ("`user add` accepted a %d-octet password that AUTH PLAIN then refuses "
                                 "(%r)" % (len(pw), r))
    c.quit()


def test_huge_sasl_response(server):
    """A response far longer than any mechanism needs: -ERR (or a close), never a hang or crash."""
    c = server.connect()
    assert c.cmd("AUTH PLAIN") == "+ "
    c.send("A" * (1 << 20) + "\r\n")
    try:
        r = c.readline()
        assert r.startswith("-ERR"), r[:100]
    except Exception:
        pass
    c.close()
    c = server.login()
    c.quit()


def test_auth_login_with_initial_response(server):
    """Some clients send the user name with AUTH LOGIN: either take it (and ask for the password) or
    refuse it cleanly with -ERR."""
    c = server.connect()
    r = c.cmd("AUTH LOGIN " + b64(DEMO_USER))
    if r.startswith("+"):
        from tlstest import challenge
        assert challenge(r) == b"Password:", r
        assert c.cmd(b64(DEMO_PASS)).startswith("+OK")
    else:
        assert r.startswith("-ERR"), r
        assert auth_login(c, DEMO_USER, DEMO_PASS).startswith("+OK")
    c.quit()


# ---------------------------------------------------------------------------------------------
# LOGIN


def test_login_mechanism(server):
    c = server.connect()
    r = auth_login(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("+OK"), r
    assert logged_in(c)
    c.quit()


def test_login_mechanism_wrong_password(server):
    c = server.connect()
    r = auth_login(c, DEMO_USER, "nope")
    assert r.startswith("-ERR [AUTH]"), r
    c.quit()


# ---------------------------------------------------------------------------------------------
# SCRAM


@pytest.mark.parametrize("mech,scheme", [("SCRAM-SHA-256", "SCRAM-SHA-256"),
                                         ("SCRAM-SHA-1", "SCRAM-SHA-1"),
                                         ("SCRAM-SHA-256", "PLAIN"),
                                         ("SCRAM-SHA-1", "PLAIN")])
def test_scram_success(make_server, mech, scheme):
    srv = make_server(scheme=scheme)
    c = srv.connect()
    res = scram(c, mech, DEMO_USER, DEMO_PASS)
    assert res.ok, "%s for a %s user: server-first %r, server-final %r, reply %r" % (
        mech, scheme, res.server_first, res.server_final, res.final_reply)
    assert int(res.attrs["i"]) >= 4096, "iteration count below 4096 (RFC 7677): %r" % res.server_first
    assert c.stat() == (0, 0)
    c.quit()


def test_scram_without_initial_response(server):
    c = server.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, initial=False)
    assert res.ok, (res.server_first, res.server_final, res.final_reply)
    c.quit()


def test_scram_default_composite_secret(make_server):
    srv = make_server(users=())
    add_default_user(srv, "multi", "multi-pw")
    line = passwd_line(srv, "multi")
    assert line is not None
    field = line.split(":")[1]
    assert "{SCRAM-SHA-256}" in field and "{SCRAM-SHA-1}" in field, line
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        c = srv.connect()
        res = scram(c, mech, "multi", "multi-pw")
        assert res.ok, (mech, res.server_first, res.server_final, res.final_reply)
        c.quit()
        c = srv.connect()
        res = scram(c, mech, "multi", "wrong-pw")
        assert not res.ok and res.final_reply.startswith("-ERR [AUTH]"), (mech, res.final_reply)
        c.quit()
    # the same secret serves USER/PASS and PLAIN
    c = srv.login("multi", "multi-pw")
    c.quit()
    c = srv.connect()
    assert auth_plain(c, "multi", "multi-pw").startswith("+OK")
    c.quit()
    c = srv.connect()
    c.ok("USER multi")
    assert c.cmd("PASS wrong").startswith("-ERR [AUTH]")
    c.quit()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_wrong_password(make_server, mech):
    srv = make_server(scheme=mech)
    c = srv.connect()
    res = scram(c, mech, DEMO_USER, "not-the-password")
    assert not res.ok
    assert res.server_final is None or res.server_final.startswith("e="), res.server_final
    assert res.final_reply.startswith("-ERR [AUTH]"), res.final_reply
    assert not logged_in(c)
    c.quit()


def test_scram_unknown_user_looks_real(make_server):
    srv = make_server(scheme="SCRAM-SHA-256")
    real = scram(srv.connect(), "SCRAM-SHA-256", DEMO_USER, DEMO_PASS)
    assert real.ok
    first = []
    for _ in range(2):
        c = srv.connect()
        res = scram(c, "SCRAM-SHA-256", "nosuchuser", "whatever")
        assert res.server_first is not None, "unknown user refused at once: %r" % res.final_reply
        assert res.final_reply.startswith("-ERR [AUTH]"), res.final_reply
        assert res.server_final is None or res.server_final.startswith("e="), res.server_final
        first.append(res.attrs)
        c.quit()
    a, b = first
    assert len(a["s"]) == len(real.attrs["s"]), "fake salt length differs: %r vs %r" % (a, real.attrs)
    assert a["i"] == real.attrs["i"], "fake iteration count differs: %r vs %r" % (a, real.attrs)
    assert a["s"] == b["s"], "fake salt changes between tries (user enumeration): %r / %r" % (a, b)


def test_scram_channel_binding_mismatch_without_tls_fails(server):
    c = server.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, cbind_override=b"n,,garbage")
    assert not res.ok and res.final_reply.startswith("-ERR"), res.final_reply
    c.quit()


@pytest.mark.parametrize("what", ["nonce", "short-proof", "zero-proof"])
def test_scram_tampered_client_final(server, what):
    c = server.connect()
    kw = {"nonce": {"nonce_override": "forged-nonce-value"},
          "short-proof": {"proof_override": b"\x01" * 8},
          "zero-proof": {"proof_override": bytes(32)}}[what]
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, **kw)
    assert not res.ok and res.final_reply.startswith("-ERR"), (what, res.final_reply)
    assert res.server_final is None or res.server_final.startswith("e="), res.server_final
    assert not logged_in(c)
    c.quit()


def test_scram_malformed_client_first(server):
    c = server.connect()
    for cf in ("", "x", "n,,", "n,,r=abc", "q,,n=demo,r=abc", "n,,n=demo", "n,,n=de=ZZmo,r=abcdef",
               "n,,m=ext,n=demo,r=abcdef"):
        r = c.cmd("AUTH SCRAM-SHA-256 " + (b64(cf) if cf else "="))
        if r.startswith("+ "):
            r = c.cmd("*")
        assert r.startswith("-ERR"), "client-first %r -> %r" % (cf, r)
    assert not logged_in(c)
    c.login()
    c.quit()


def test_scram_cancel_after_server_first(server):
    c = server.connect()
    r = c.cmd("AUTH SCRAM-SHA-256 " + b64("n,,n=demo,r=abcdefghijkl"))
    assert r.startswith("+ "), r
    assert c.cmd("*").startswith("-ERR")
    assert not logged_in(c)
    c.login()
    c.quit()


def test_scram_authzid_other_user_fails(make_server):
    srv = make_server(users=((DEMO_USER, DEMO_PASS), ("other", "otherpw")))
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, authzid="other")
    assert not res.ok, "authzid=other accepted"
    c.quit()
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, authzid=DEMO_USER)
    assert res.ok, res.final_reply
    c.quit()


def test_scram_yescrypt_user_cannot(make_server):
    """A yescrypt hash cannot give SCRAM keys: SCRAM fails (USER/PASS works)."""
    srv = make_server(scheme="YESCRYPT")
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS)
    assert not res.ok and res.final_reply.startswith("-ERR"), res.final_reply
    c.quit()
    c = srv.login()
    c.quit()


def test_scram_gs2_y_without_tls_ok(server):
    """'y': the client supports channel binding but thinks the server does not. Without TLS the
    server indeed does not, so that is fine."""
    c = server.connect()
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, flag="y")
    assert res.ok, res.final_reply
    c.quit()


def test_scram_plus_refused_without_tls(server):
    c = server.connect()
    r = c.cmd("AUTH SCRAM-SHA-256-PLUS " + b64("p=tls-exporter,,n=demo,r=abcdefghijkl"))
    assert r.startswith("-ERR"), r
    c.quit()


def _tls13(srv, implicit=True):
    if implicit:
        return TPop3(srv.tls_port, context=client_context(srv.ca))
    c = TPop3(srv.port)
    c.starttls(client_context(srv.ca))
    return c


def test_scram_plus_tls_server_end_point(make_server):
    srv = tls_server(make_server, scheme="SCRAM-SHA-256")
    c = _tls13(srv)
    cb = tls_server_end_point(c.sock)
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-server-end-point", cb_data=cb)
    assert res.ok, (res.server_first, res.server_final, res.final_reply)
    c.quit()
    c = _tls13(srv, implicit=False)
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-server-end-point",
                cb_data=tls_server_end_point(c.sock))
    assert res.ok, ("over STLS", res.final_reply)
    c.quit()
    c = _tls13(srv)
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-server-end-point",
                cb_data=bytes(32))
    assert not res.ok and res.final_reply.startswith("-ERR"), "wrong channel binding accepted"
    assert res.server_final is None or res.server_final.startswith("e="), res.server_final
    c.quit()


def test_scram_plus_tls_exporter(make_server):
    srv = tls_server(make_server, scheme="SCRAM-SHA-256")
    c = _tls13(srv)
    assert c.sock.version() == "TLSv1.3"
    cb = tls_exporter(c.sock)
    if cb is None:
        c.close()
        pytest.skip("cannot compute tls-exporter from Python here")
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-exporter", cb_data=cb)
    assert res.ok, (res.server_first, res.server_final, res.final_reply)
    c.quit()
    c = _tls13(srv)
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-exporter", cb_data=cb)
    assert not res.ok, "the previous connection's exporter value was accepted"
    c.quit()


def test_scram_sha1_plus_and_unsupported_cb_type(make_server):
    srv = tls_server(make_server, settings={"auth": {"mechanisms": ALL_MECHS}})
    c = _tls13(srv)
    res = scram(c, "SCRAM-SHA-1-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-server-end-point",
                cb_data=tls_server_end_point(c.sock))
    assert res.ok, res.final_reply
    c.quit()
    c = _tls13(srv)
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-unique",
                cb_data=c.sock.get_channel_binding("tls-unique") or b"")
    assert not res.ok, "tls-unique on TLS 1.3 accepted"
    c.quit()


def test_scram_downgrade_detected(make_server):
    """Over TLS, where the server offers -PLUS, a client saying 'y' (I could bind, I think you
    cannot) reveals a stripped mechanism list: the server must fail it (RFC 5802 §6)."""
    srv = tls_server(make_server)
    for implicit in (True, False):
        c = _tls13(srv, implicit)
        assert "SCRAM-SHA-256-PLUS" in sasl_mechs(c.capa())
        res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, flag="y")
        assert not res.ok and res.final_reply.startswith("-ERR"), \
            "gs2 flag y over TLS accepted (implicit=%s): %r" % (implicit, res.final_reply)
        c.quit()
    # 'n' over TLS with the non-PLUS mechanism is fine
    c = _tls13(srv)
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS)
    assert res.ok, res.final_reply
    c.quit()


def test_scram_p_flag_with_non_plus_mechanism(make_server):
    srv = tls_server(make_server)
    c = _tls13(srv)
    res = scram(c, "SCRAM-SHA-256", DEMO_USER, DEMO_PASS, cb_type="tls-server-end-point",
                cb_data=tls_server_end_point(c.sock))
    assert not res.ok, "p= accepted with plain SCRAM-SHA-256"
    c.quit()


# ---------------------------------------------------------------------------------------------
# CRAM-MD5


@pytest.mark.parametrize("scheme", ["PLAIN", "CRAM-MD5"])
def test_cram_md5(make_server, scheme):
    srv = make_server(scheme=scheme, settings={"auth": {"mechanisms": "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256"}})
    c = srv.connect()
    assert "CRAM-MD5" in sasl_mechs(c.capa())
    r = auth_cram_md5(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("+OK"), "CRAM-MD5 for a %s user -> %r" % (scheme, r)
    assert c.stat() == (0, 0)
    c.quit()
    c = srv.connect()
    r = auth_cram_md5(c, DEMO_USER, "wrong")
    assert r.startswith("-ERR [AUTH]"), r
    c.quit()


def test_cram_md5_yescrypt_user_fails(make_server):
    srv = make_server(scheme="YESCRYPT", settings={"auth": {"mechanisms": "PLAIN CRAM-MD5"}})
    c = srv.connect()
    r = auth_cram_md5(c, DEMO_USER, DEMO_PASS)
    assert r.startswith("-ERR"), r
    c.quit()


def test_cram_md5_not_enabled_by_default(server):
    c = server.connect()
    assert "CRAM-MD5" not in sasl_mechs(c.capa())
    assert c.cmd("AUTH CRAM-MD5").startswith("-ERR")
    c.quit()


# ---------------------------------------------------------------------------------------------
# EXTERNAL


def _ext_server(make_server):
    return tls_server(make_server, client_ca=True,
                      settings={"auth": {"mechanisms": "PLAIN LOGIN SCRAM-SHA-256 EXTERNAL"}})


def test_external_with_client_certificate(make_server):
    srv = _ext_server(make_server)
    ctx = client_context(srv.ca, cert=srv.pki["client.pem"], key=srv.pki["client.key"])
    c = TPop3(srv.tls_port, context=ctx)
    assert "EXTERNAL" in sasl_mechs(c.capa())
    r = c.cmd("AUTH EXTERNAL =")
    assert r.startswith("+OK"), "AUTH EXTERNAL = with a client cert for CN=demo -> %r" % r
    assert c.stat() == (0, 0)
    c.quit()
    # empty response after an empty challenge; authzid equal to the cert's user
    for steps in (["AUTH EXTERNAL", ""], ["AUTH EXTERNAL " + b64(DEMO_USER)]):
        c = TPop3(srv.tls_port, context=ctx)
        r = c.cmd(steps[0])
        if len(steps) > 1:
            assert r == "+ ", r
            r = c.cmd(steps[1])
        assert r.startswith("+OK"), "%r -> %r" % (steps, r)
        c.quit()


def test_external_over_stls(make_server):
    srv = _ext_server(make_server)
    ctx = client_context(srv.ca, cert=srv.pki["client.pem"], key=srv.pki["client.key"])
    c = TPop3(srv.port)
    assert "EXTERNAL" not in (sasl_mechs(c.capa()) or [])
    assert c.cmd("AUTH EXTERNAL =").startswith("-ERR")
    c.starttls(ctx)
    assert "EXTERNAL" in sasl_mechs(c.capa())
    assert c.cmd("AUTH EXTERNAL =").startswith("+OK")
    c.quit()


def test_external_failures(make_server):
    srv = _ext_server(make_server)
    # no certificate
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    r = c.cmd("AUTH EXTERNAL =")
    assert r.startswith("-ERR"), "EXTERNAL without a client certificate -> %r" % r
    assert not logged_in(c)
    c.quit()
    # another authzid than the certificate's identity
    ctx = client_context(srv.ca, cert=srv.pki["client.pem"], key=srv.pki["client.key"])
    c = TPop3(srv.tls_port, context=ctx)
    r = c.cmd("AUTH EXTERNAL " + b64("other"))
    assert r.startswith("-ERR"), "EXTERNAL authzid=other -> %r" % r
    c.quit()
    # a certificate for CN=demo from a CA the server does not trust: handshake refused or no login
    rogue = client_context(srv.ca, cert=srv.pki["rogue-client.pem"], key=srv.pki["rogue-client.key"])
    try:
        c = TPop3(srv.tls_port, context=rogue)
    except (ssl.SSLError, ConnectionResetError):
        pass
    else:
        try:
            r = c.cmd("AUTH EXTERNAL =")
            assert r.startswith("-ERR"), "EXTERNAL with an untrusted certificate -> %r" % r
        except (ssl.SSLError, ConnectionResetError):
            pass  # TLS 1.3: the client learns of the rejected certificate only now
        c.close()
    # the server is fine
    c = TPop3(srv.tls_port, context=ctx)
    assert c.cmd("AUTH EXTERNAL =").startswith("+OK")
    c.quit()


def test_external_cert_user_unknown(make_server):
    srv = tls_server(make_server, client_ca=True, users=(("someoneelse", "pw"),),
                     settings={"auth": {"mechanisms": "PLAIN EXTERNAL"}})
    ctx = client_context(srv.ca, cert=srv.pki["client.pem"], key=srv.pki["client.key"])
    c = TPop3(srv.tls_port, context=ctx)
    r = c.cmd("AUTH EXTERNAL =")
    assert r.startswith("-ERR"), "EXTERNAL for a certificate user not in the passwd file -> %r" % r
    c.quit()


# ---------------------------------------------------------------------------------------------
# UTF8 (RFC 6856)

UTF8_USER = "jos\u00e9@example.org"
UTF8_PASS = "p\u00e4ssw\u00f6rd"


def test_utf8_capability_and_command(server):
    c = server.connect()
    caps = c.capa()
    assert "UTF8" in capa_names(caps), caps
    r = c.cmd("UTF8")
    assert r.startswith("+OK"), r
    c.login()
    assert c.cmd("UTF8").startswith("-ERR"), "UTF8 in TRANSACTION state must be refused"
    c.quit()


def test_utf8_capability_announces_user(server):
    c = server.connect()
    caps = c.capa()
    assert "UTF8 USER" in caps, "server takes UTF-8 user names but CAPA says %r (RFC 6856 §2.2)" % caps
    c.quit()


def test_utf8_user_login(make_server):
    srv = make_server(users=((UTF8_USER, UTF8_PASS),))
    # USER/PASS after UTF8
    c = srv.connect()
    assert c.cmd("UTF8").startswith("+OK")
    assert send_utf8(c, "USER " + UTF8_USER).startswith("+OK")
    r = send_utf8(c, "PASS " + UTF8_PASS)
    assert r.startswith("+OK"), r
    assert c.stat() == (0, 0)
    c.quit()
    # USER/PASS without the UTF8 command (allowed with "UTF8 USER")
    c = srv.connect()
    send_utf8(c, "USER " + UTF8_USER)
    assert send_utf8(c, "PASS " + UTF8_PASS).startswith("+OK")
    c.quit()
    # AUTH PLAIN is UTF-8 anyway
    c = srv.connect()
    r = auth_plain(c, UTF8_USER, UTF8_PASS)
    assert r.startswith("+OK"), r
    c.quit()
    # SCRAM with a UTF-8 name
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", UTF8_USER, UTF8_PASS)
    assert res.ok, res.final_reply
    c.quit()
    # the Latin-1 spelling is another user
    c = srv.connect()
    c.cmd("USER " + UTF8_USER)  # latin-1 bytes
    assert c.cmd(("PASS " + UTF8_PASS).encode("utf-8")).startswith("-ERR")
    c.quit()


def test_utf8_invalid_user_name_refused(server):
    c = server.connect()
    c.cmd("UTF8")
    r = c.cmd(b"USER jos\xc3")
    if r.startswith("+OK"):
        r = c.cmd("PASS x")
    assert r.startswith("-ERR"), r
    c.quit()


# ---------------------------------------------------------------------------------------------
# APOP

TIMESTAMP = re.compile(r"<[^<>\s]+@[^<>\s]+>$")


def test_apop_enabled(make_server):
    srv = make_server(settings={"auth": {"apop": "yes"}},
                      users=((DEMO_USER, DEMO_PASS),))
    # a yescrypt-only user (added with an explicit scheme)
    srv.add_user("ycrypt", "ypw", scheme="YESCRYPT")
    greetings = set()
    c = srv.connect()
    assert TIMESTAMP.search(c.greeting), "greeting has no <timestamp>: %r" % c.greeting
    greetings.add(TIMESTAMP.search(c.greeting).group(0))
    r = c.cmd("APOP %s %s" % (DEMO_USER, apop_digest(c.greeting, DEMO_PASS)))
    assert r.startswith("+OK"), r
    assert c.stat() == (0, 0)
    c.quit()
    # upper-case hex is hex too
    c = srv.connect()
    greetings.add(TIMESTAMP.search(c.greeting).group(0))
    assert c.cmd("APOP %s %s" % (DEMO_USER, apop_digest(c.greeting, DEMO_PASS).upper())).startswith("+OK")
    c.quit()
    # wrong digest; a digest for another connection's timestamp
    c = srv.connect()
    greetings.add(TIMESTAMP.search(c.greeting).group(0))
    r = c.cmd("APOP %s %s" % (DEMO_USER, apop_digest(c.greeting, "wrong")))
    assert r.startswith("-ERR [AUTH]"), r
    old = "+OK x <1.2@host>"
    r = c.cmd("APOP %s %s" % (DEMO_USER, apop_digest(old, DEMO_PASS)))
    assert r.startswith("-ERR [AUTH]"), r
    r = c.cmd("APOP %s %s" % (DEMO_USER, "zz" * 16))
    assert r.startswith("-ERR"), r
    r = c.cmd("APOP nosuchuser %s" % apop_digest(c.greeting, DEMO_PASS))
    assert r.startswith("-ERR [AUTH]"), r
    c.quit()
    # yescrypt-only user cannot use APOP
    c = srv.connect()
    r = c.cmd("APOP ycrypt %s" % apop_digest(c.greeting, "ypw"))
    assert r.startswith("-ERR [AUTH]"), "APOP for a yescrypt-only user -> %r" % r
    c.quit()
    c = srv.login("ycrypt", "ypw")
    c.quit()
    assert len(greetings) == 3, "APOP timestamps repeat: %r" % greetings


def test_apop_disabled(server):
    c = server.connect()
    assert not TIMESTAMP.search(c.greeting), "timestamp in greeting with apop = no: %r" % c.greeting
    r = c.cmd("APOP %s %s" % (DEMO_USER, "0" * 32))
    assert r.startswith("-ERR"), r
    c.login()
    c.quit()


# ---------------------------------------------------------------------------------------------
# which stored secret serves which mechanism

SCHEMES = ["PLAIN", "YESCRYPT", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"]
# mechanism -> schemes it must work with (None: USER/PASS)
WORKS = {
    "USER": set(SCHEMES),
    "PLAIN": set(SCHEMES),
    "SCRAM-SHA-256": {"PLAIN", "SCRAM-SHA-256"},
    "SCRAM-SHA-1": {"PLAIN", "SCRAM-SHA-1"},
    "CRAM-MD5": {"PLAIN", "CRAM-MD5"},
    "APOP": {"PLAIN"},
}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_mechanism_matrix(make_server, scheme):
    srv = make_server(scheme=scheme, settings={"auth": {"apop": "yes", "mechanisms": ALL_MECHS}})
    results = {}
    for mech in WORKS:
        c = srv.connect()
        if mech == "USER":
            c.ok("USER " + DEMO_USER)
            r = c.cmd("PASS " + DEMO_PASS)
        elif mech == "PLAIN":
            r = auth_plain(c, DEMO_USER, DEMO_PASS)
        elif mech.startswith("SCRAM"):
            r = scram(c, mech, DEMO_USER, DEMO_PASS).final_reply
        elif mech == "CRAM-MD5":
            r = auth_cram_md5(c, DEMO_USER, DEMO_PASS)
        else:
            r = c.cmd("APOP %s %s" % (DEMO_USER, apop_digest(c.greeting, DEMO_PASS)))
        results[mech] = r
        if r.startswith("+OK"):
            assert c.stat() == (0, 0)
        c.quit()
    wrong = {m: r for m, r in results.items() if r.startswith("+OK") != (scheme in WORKS[m])}
    assert not wrong, "scheme %s: unexpected outcomes %r" % (scheme, wrong)
    for m, r in results.items():
        if not r.startswith("+OK"):
            assert r.startswith("-ERR [AUTH]"), "scheme %s, %s: %r" % (scheme, m, r)


@pytest.mark.parametrize("user", ["we=ird", "com,ma", "a=2Cb"])
def test_scram_saslname_escaping(make_server, user):
    srv = make_server(users=((user, "pw-" + user),))
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", user, "pw-" + user)
    assert res.ok, "SCRAM for user %r (sent as %r): %r" % (user, res.server_first, res.final_reply)
    c.quit()
    c = srv.connect()
    assert auth_plain(c, user, "pw-" + user).startswith("+OK")
    c.quit()


def test_disabled_mechanism_named_inside_an_enabled_one(make_server):
    """mechanisms = PLAIN SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS: SCRAM-SHA-256 and SCRAM-SHA-1 are
    not enabled (their names are only substrings of enabled ones). AUTH with them must be refused
    like any other disabled mechanism (CRAM-MD5 here): "Unsupported authentication mechanism",
    not "[AUTH] Authentication failed" (which tells the client its password is wrong) with a
    login_failed log line (which log-watching ban tools count)."""
    srv = tls_server(make_server, settings={"auth": {"mechanisms": "PLAIN SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS"}})
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    assert set(sasl_mechs(c.capa())) == {"PLAIN", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"}
    ref = c.cmd("AUTH CRAM-MD5")
    assert ref.startswith("-ERR"), ref
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        r = c.cmd("AUTH %s %s" % (mech, b64("n,,n=demo,r=abcdefghijkl")))
        assert r == ref, "AUTH %s (not enabled) -> %r; a disabled mechanism gets %r" % (mech, r, ref)
    c.quit()
    log = srv.stderr_text()
    assert "event=login_failed" not in log, \
        "AUTH with a disabled mechanism was counted as a failed login:\n" + \
        "\n".join(l for l in log.splitlines() if "login_failed" in l)


def test_external_identity_prefers_email_san(make_server):
    """A certificate with CN=demo and an email SAN mail@example.org authenticates as the e-mail
    address (the first email SAN wins over the CN)."""
    srv = tls_server(make_server, client_ca=True, users=(("demo", "pw1"), ("mail@example.org", "pw2")),
                     settings={"auth": {"mechanisms": "PLAIN EXTERNAL"}})
    ctx = client_context(srv.ca, cert=srv.pki["client-email.pem"], key=srv.pki["client-email.key"])
    c = TPop3(srv.tls_port, context=ctx)
    assert c.cmd("AUTH EXTERNAL " + b64("demo")).startswith("-ERR"), "authzid = CN accepted"
    c.close()
    c = TPop3(srv.tls_port, context=ctx)
    assert c.cmd("AUTH EXTERNAL =").startswith("+OK")
    c.quit()
    log = srv.stderr_text()
    assert 'user=mail@example.org' in log or 'user="mail@example.org"' in log, \
        "the EXTERNAL login is not logged as mail@example.org:\n" + log[-2000:]


def test_scram_plus_over_tls12(make_server):
    srv = tls_server(make_server)
    ctx = client_context(srv.ca, maximum=ssl.TLSVersion.TLSv1_2)
    c = TPop3(srv.tls_port, context=ctx)
    assert c.sock.version() == "TLSv1.2"
    assert "SCRAM-SHA-256-PLUS" in sasl_mechs(c.capa())
    res = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-server-end-point",
                cb_data=tls_server_end_point(c.sock))
    assert res.ok, ("tls-server-end-point on TLS 1.2", res.final_reply)
    c.quit()
    # tls-exporter on TLS 1.2 (with extended master secret, OpenSSL's default) either works with
    # the right data or is refused; wrong data must never work
    c = TPop3(srv.tls_port, context=ctx)
    cb = tls_exporter(c.sock)
    if cb is not None:
        bad = scram(c, "SCRAM-SHA-256-PLUS", DEMO_USER, DEMO_PASS, cb_type="tls-exporter",
                    cb_data=bytes(len(cb)))
        assert not bad.ok
    c.close()


def test_utf8_saslprep_equivalence(make_server):
    """RFC 6856 §2.2 / RFC 4013: names and passwords are compared after SASLprep, so a decomposed
    'é' (e + U+0301) equals the composed one, and U+00A0 (no-break space) is a space."""
    import unicodedata
    user_nfc = unicodedata.normalize("NFC", "jos\u00e9")
    user_nfd = unicodedata.normalize("NFD", user_nfc)
    assert user_nfc != user_nfd
    pw = "caf\u00e9 au lait"
    srv = make_server(users=((user_nfc, pw),))
    pw_variant = unicodedata.normalize("NFD", pw).replace(" ", "\u00a0")
    c = srv.connect()
    send_utf8(c, "USER " + user_nfd)
    r = send_utf8(c, "PASS " + pw_variant)
    assert r.startswith("+OK"), "USER/PASS with decomposed name and NBSP password -> %r" % r
    c.quit()
    c = srv.connect()
    r = auth_plain(c, user_nfd, pw_variant)
    assert r.startswith("+OK"), "AUTH PLAIN with decomposed name -> %r" % r
    c.quit()
    c = srv.connect()
    res = scram(c, "SCRAM-SHA-256", user_nfd, pw)  # SCRAM clients SASLprep the password themselves
    assert res.ok, "SCRAM with a decomposed name: %r" % res.final_reply
    c.quit()


def test_utf8_prohibited_characters_refused(make_server):
    """SASLprep prohibits e.g. control characters and private-use code points in names."""
    srv = make_server(users=(), start=False)
    r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", "bad\u0007name",
                stdin="pw\n")
    assert r.returncode != 0, "user add accepted a name with a control character"
    r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", "pua\ue000",
                stdin="pw\n")
    assert r.returncode != 0, "user add accepted a name with a private-use character"
    srv.add_user(DEMO_USER, DEMO_PASS)
    srv.start()
    c = srv.connect()
    r = auth_plain(c, "pua\ue000", "pw")
    assert r.startswith("-ERR"), r
    c.quit()
