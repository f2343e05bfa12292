"""Real clients over TLS: fetchmail and mpop with implicit TLS and with STLS, downloading the seeded
messages byte-exactly; mpop with each SASL mechanism it has (GNU SASL), EXTERNAL with a client
certificate."""

import os
import pwd

import pytest

from buzontest import make_message
from clientlib import MESSAGES, check_delivered, make_out_maildir, need, read_dir, read_maildir, run, seed
from tlstest import tls_server

ALL_MECHS = "PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS SCRAM-SHA-1 SCRAM-SHA-1-PLUS CRAM-MD5 EXTERNAL"


def _log(r):
    return (r.stdout + r.stderr).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# fetchmail


def _fetchmail_setup(srv, tmp, implicit):
    home = os.path.join(tmp, "fetchmail-home")
    out = os.path.join(tmp, "fetchmail-out")
    os.makedirs(home, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    mda = os.path.join(home, "mda.sh")
    with open(mda, "w") as f:
        f.write('#!/bin/sh\nset -e\nf="%s/msg.$(date +%%s%%N).$$"\ncat > "$f.tmp"\nmv "$f.tmp" "$f"\n' % out)
    os.chmod(mda, 0o755)
    me = pwd.getpwuid(os.getuid()).pw_name
    tls = ("ssl sslproto tls1.2+" if implicit else "sslproto tls1.2+") + \
        " sslcertck sslcommonname localhost sslcertfile '%s'" % srv.ca
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(
            "set no bouncemail\n"
            "set no syslog\n"
            "poll localhost via 127.0.0.1 with proto POP3 port %d uidl timeout 30\n"
            '  user "demo" there with password "secret" is "%s" here\n'
            "  options no rewrite %s\n"
            '  mda "%s"\n' % (srv.tls_port if implicit else srv.port, me, tls, mda)
        )
    os.chmod(rc, 0o600)
    env = dict(os.environ)
    env.update(HOME=home, FETCHMAILHOME=home, FETCHMAILUSER=me, LC_ALL="C")
    return rc, out, env, home


def _fetchmail(rc, env, home, *args):
    fm = need("fetchmail")
    return run([fm, "-f", rc, "--idfile", os.path.join(home, "ids"), "--pidfile", os.path.join(home, "pid"),
                "-v"] + list(args), env=env)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-tls", "stls"])
def test_fetchmail_tls(make_server, tmp_path, implicit):
    need("fetchmail")
    srv = tls_server(make_server)
    bases = seed(srv)
    rc, out, env, home = _fetchmail_setup(srv, str(tmp_path), implicit)
    r = _fetchmail(rc, env, home, "--keep")
    log = _log(r)
    assert r.returncode == 0, "fetchmail exited %d:\n%s" % (r.returncode, log)
    check_delivered(MESSAGES, read_dir(out), "fetchmail over TLS")
    assert sorted(srv.files()) == sorted(bases)
    if not implicit:
        assert "STLS" in log, "fetchmail did not use STLS:\n" + log
    # the session ran over TLS
    assert "tls=yes" in srv.stderr_text() or "tls_established" in srv.stderr_text(), srv.stderr_text()[-2000:]
    # second run: nothing new; then a no-keep run empties the maildrop
    r = _fetchmail(rc, env, home, "--keep")
    assert r.returncode == 1, "second run: exit %d:\n%s" % (r.returncode, _log(r))
    for name in os.listdir(out):
        os.unlink(os.path.join(out, name))
    r = _fetchmail(rc, env, home, "--nokeep", "--all")
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES, read_dir(out), "fetchmail no-keep over TLS")
    assert srv.files() == {}


def test_fetchmail_refuses_untrusted_server(make_server, tmp_path):
    """Sanity check of the setup: with another CA file fetchmail must fail the certificate check."""
    need("fetchmail")
    srv = tls_server(make_server)
    seed(srv)
    rc, out, env, home = _fetchmail_setup(srv, str(tmp_path), True)
    with open(rc) as f:
        text = f.read()
    with open(rc, "w") as f:
        f.write(text.replace(srv.ca, srv.pki["rogue-ca.pem"]))
    r = _fetchmail(rc, env, home, "--keep")
    assert r.returncode not in (0, 1), _log(r)
    assert read_dir(out) == []


# ---------------------------------------------------------------------------------------------
# mpop


def _mpop_setup(srv, tmp, implicit, auth="user", extra=""):
    out = make_out_maildir(os.path.join(tmp, "mpop-out"))
    conf = os.path.join(tmp, "mpoprc")
    with open(conf, "w") as f:
        f.write(
            "defaults\n"
            "timeout 30\n"
            "account test\n"
            "host 127.0.0.1\n"
            "port %d\n"
            "tls on\n"
            "tls_starttls %s\n"
            "tls_trust_file %s\n"
            "tls_certcheck on\n"
            "auth %s\n"
            "user demo\n"
            "password secret\n"
            "delivery maildir %s\n"
            "uidls_file %s\n"
            "keep on\n"
            "only_new on\n%s" % (srv.tls_port if implicit else srv.port, "off" if implicit else "on",
                                  srv.ca, auth, out, os.path.join(tmp, "mpop-uidls"), extra)
        )
    os.chmod(conf, 0o600)
    env = dict(os.environ, HOME=tmp)
    return conf, out, env


def _mpop(conf, env, *args):
    mpop = need("mpop")
    return run([mpop, "-C", conf, "--half-quiet"] + list(args) + ["test"], env=env)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit-tls", "stls"])
def test_mpop_tls(make_server, tmp_path, implicit):
    need("mpop")
    srv = tls_server(make_server)
    bases = seed(srv)
    conf, out, env = _mpop_setup(srv, str(tmp_path), implicit)
    r = _mpop(conf, env)
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES, read_maildir(out), "mpop over TLS")
    assert sorted(srv.files()) == sorted(bases)
    r = _mpop(conf, env)
    assert r.returncode == 0, _log(r)
    assert len(read_maildir(out)) == len(MESSAGES), "second run fetched again:\n" + _log(r)
    extra = make_message("tls-late-mpop", b"late\n.\n..\n")
    srv.deliver(extra)
    r = _mpop(conf, env, "--keep=off", "--only-new=off")
    assert r.returncode == 0, _log(r)
    assert srv.files() == {}, "mpop --keep=off left %r" % srv.files()
    assert "tls_established" in srv.stderr_text() or "tls=yes" in srv.stderr_text()


@pytest.mark.parametrize("auth", ["plain", "login", "scram-sha-1", "scram-sha-256", "cram-md5", "on"])
def test_mpop_sasl_mechanisms(make_server, tmp_path, auth):
    """mpop (GNU SASL) with each mechanism, over implicit TLS; 'on' lets mpop choose the best one."""
    need("mpop")
    srv = tls_server(make_server, settings={"auth": {"mechanisms": ALL_MECHS}})
    msg = make_message("mpop-" + auth, b"mechanism " + auth.encode() + b"\n")
    srv.deliver(msg)
    conf, out, env = _mpop_setup(srv, str(tmp_path), True, auth=auth)
    r = _mpop(conf, env)
    assert r.returncode == 0, "mpop auth %s:\n%s\nserver log:\n%s" % (auth, _log(r), srv.stderr_text()[-2000:])
    check_delivered([msg], read_maildir(out), "mpop auth " + auth)


def test_mpop_scram_over_stls(make_server, tmp_path):
    need("mpop")
    srv = tls_server(make_server, scheme="SCRAM-SHA-256")
    msg = make_message("mpop-stls-scram", b"scram after STLS\n")
    srv.deliver(msg)
    conf, out, env = _mpop_setup(srv, str(tmp_path), False, auth="scram-sha-256")
    r = _mpop(conf, env)
    assert r.returncode == 0, "%s\nserver log:\n%s" % (_log(r), srv.stderr_text()[-2000:])
    check_delivered([msg], read_maildir(out), "mpop scram-sha-256 after STLS")


def test_mpop_external_client_certificate(make_server, tmp_path):
    need("mpop")
    srv = tls_server(make_server, client_ca=True, settings={"auth": {"mechanisms": ALL_MECHS}})
    msg = make_message("mpop-external", b"client certificate\n")
    srv.deliver(msg)
    # mpop may refuse a key file readable by others
    conf, out, env = _mpop_setup(srv, str(tmp_path), True, auth="external",
                                 extra="tls_cert_file %s\ntls_key_file %s\n" % (srv.pki["client.pem"],
                                                                                srv.pki["client.key"]))
    r = _mpop(conf, env)
    assert r.returncode == 0, "%s\nserver log:\n%s" % (_log(r), srv.stderr_text()[-2000:])
    check_delivered([msg], read_maildir(out), "mpop auth external")


def test_mpop_apop(make_server, tmp_path):
    need("mpop")
    srv = tls_server(make_server, settings={"auth": {"apop": "yes"}})
    msg = make_message("mpop-apop", b"apop\n")
    srv.deliver(msg)
    conf, out, env = _mpop_setup(srv, str(tmp_path), True, auth="apop")
    r = _mpop(conf, env)
    assert r.returncode == 0, "%s\nserver log:\n%s" % (_log(r), srv.stderr_text()[-2000:])
    check_delivered([msg], read_maildir(out), "mpop auth apop")
