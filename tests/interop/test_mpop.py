"""mpop against buzon: keep run into a Maildir, a second run that finds nothing new (UIDLs), a no-keep
run that deletes."""

import os

from buzontest import make_message
from clientlib import MESSAGES, check_delivered, make_out_maildir, need, read_maildir, run, seed


def _setup(srv, tmp, pipelining="auto"):
    out = make_out_maildir(os.path.join(tmp, "mpop-out"))
    conf = os.path.join(tmp, "mpoprc")
    with open(conf, "w") as f:
        f.write(
            "defaults\n"
            "timeout 30\n"
            "account test\n"
            "host 127.0.0.1\n"
            "port %d\n"
            "tls off\n"
            "auth user\n"
            "user demo\n"
            "password secret\n"
            "pipelining %s\n"
            "delivery maildir %s\n"
            "uidls_file %s\n"
            "keep on\n"
            "only_new on\n" % (srv.port, pipelining, out, os.path.join(tmp, "mpop-uidls"))
        )
    os.chmod(conf, 0o600)
    env = dict(os.environ, HOME=tmp)
    return conf, out, env


def _mpop(conf, env, *args):
    mpop = need("mpop")
    return run([mpop, "-C", conf, "--half-quiet"] + list(args) + ["test"], env=env)


def _log(r):
    return (r.stdout + r.stderr).decode("utf-8", "replace")


def _run_all(server, tmp_path, pipelining):
    bases = seed(server)
    conf, out, env = _setup(server, str(tmp_path), pipelining)

    r = _mpop(conf, env)
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES, read_maildir(out), "mpop keep run")
    assert sorted(server.files()) == sorted(bases)

    r = _mpop(conf, env)
    assert r.returncode == 0, _log(r)
    assert len(read_maildir(out)) == len(MESSAGES), "second run fetched again:\n" + _log(r)

    extra = make_message("interop-late-mpop", b"late\n.\n..\n")
    server.deliver(extra)
    r = _mpop(conf, env)
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES + [extra], read_maildir(out), "mpop run after new mail")

    # no-keep, all messages: everything is fetched once more and deleted on the server.
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(out, sub)):
            os.unlink(os.path.join(out, sub, name))
    r = _mpop(conf, env, "--keep=off", "--only-new=off")
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES + [extra], read_maildir(out), "mpop no-keep run")
    assert server.files() == {}, "mpop --keep=off left %r" % server.files()


def test_mpop_keep_then_nokeep(server, tmp_path):
    _run_all(server, tmp_path, "auto")


def test_mpop_no_pipelining(server, tmp_path):
    _run_all(server, tmp_path, "off")


def test_mpop_serverinfo(server, tmp_path):
    conf, out, env = _setup(server, str(tmp_path))
    mpop = need("mpop")
    r = run([mpop, "-C", conf, "--serverinfo", "test"], env=env)
    assert r.returncode == 0, _log(r)
    lines = [l.strip() for l in _log(r).splitlines()]
    for cap in ("PIPELINING:", "TOP:", "UIDL:", "RESP-CODES:", "AUTH-RESP-CODE:", "EXPIRE NEVER:"):
        assert cap in lines, (cap, lines)
    # mpop shows the user/pass method; no STLS offered
    assert "STLS:" not in lines


def test_mpop_wrong_password(server, tmp_path):
    seed(server)
    conf, out, env = _setup(server, str(tmp_path))
    with open(conf) as f:
        text = f.read().replace("password secret", "password wrong")
    with open(conf, "w") as f:
        f.write(text)
    r = _mpop(conf, env)
    assert r.returncode != 0
    assert read_maildir(out) == []
    assert len(server.files()) == len(MESSAGES)
