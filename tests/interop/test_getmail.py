"""getmail6 against buzon: SimplePOP3Retriever into a Maildir, keep (read_all = false, delete = false),
a second run that finds nothing new, then a run that deletes."""

import os
import pwd

from buzontest import make_message
from clientlib import MESSAGES, check_delivered, make_out_maildir, need, read_maildir, run, seed


def _setup(srv, tmp, delete=False):
    # Under the server's directory (0755 when running as root), so that getmail's delivery user
    # can reach it; pytest's tmp_path is private to root.
    tmp = os.path.join(srv.base, "getmail")
    os.makedirs(tmp, exist_ok=True)
    out = make_out_maildir(os.path.join(tmp, "getmail-out"))
    gdir = os.path.join(tmp, "getmail-dir")
    os.makedirs(gdir, exist_ok=True)
    rc = os.path.join(gdir, "getmailrc")
    user_line = ""
    if os.geteuid() == 0:
        # getmail refuses to deliver to a Maildir as root; it delivers as this user instead.
        user = os.environ.get("BUZON_TEST_USER", "nobody")
        pw = pwd.getpwnam(user)
        for sub in ("", "new", "cur", "tmp"):
            os.chown(os.path.join(out, sub), pw.pw_uid, pw.pw_gid)
        os.chmod(tmp, 0o755)
        user_line = "user = %s\n" % user
    with open(rc, "w") as f:
        f.write(
            "[retriever]\n"
            "type = SimplePOP3Retriever\n"
            "server = 127.0.0.1\n"
            "port = %d\n"
            "username = demo\n"
            "password = secret\n"
            "timeout = 30\n"
            "\n"
            "[destination]\n"
            "type = Maildir\n"
            "path = %s/\n"
            "%s"
            "\n"
            "[options]\n"
            "verbose = 1\n"
            "read_all = false\n"
            "delete = %s\n"
            "received = false\n"
            "delivered_to = false\n" % (srv.port, out, user_line, "true" if delete else "false")
        )
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=tmp)
    return rc, gdir, out, env


def _getmail(gdir, env, *args):
    gm = need("getmail")
    return run([gm, "--getmaildir", gdir, "--rcfile", "getmailrc"] + list(args), env=env)


def _log(r):
    return (r.stdout + r.stderr).decode("utf-8", "replace")


def test_getmail_keep_then_delete(server, tmp_path):
    bases = seed(server)
    rc, gdir, out, env = _setup(server, str(tmp_path))

    r = _getmail(gdir, env)
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES, read_maildir(out), "getmail keep run")
    assert sorted(server.files()) == sorted(bases)

    r = _getmail(gdir, env)
    assert r.returncode == 0, _log(r)
    assert len(read_maildir(out)) == len(MESSAGES), "second run fetched again:\n" + _log(r)

    extra = make_message("interop-late-getmail", b"late\n.\n")
    server.deliver(extra)
    r = _getmail(gdir, env)
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES + [extra], read_maildir(out), "getmail run after new mail")

    # Deleting run, fetching everything again (--all) and deleting it from the server.
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(out, sub)):
            os.unlink(os.path.join(out, sub, name))
    r = _getmail(gdir, env, "--all", "--delete")
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES + [extra], read_maildir(out), "getmail delete run")
    assert server.files() == {}, "getmail --delete left %r" % server.files()


def test_getmail_delete_new_only(server, tmp_path):
    seed(server)
    rc, gdir, out, env = _setup(server, str(tmp_path), delete=True)
    r = _getmail(gdir, env)
    assert r.returncode == 0, _log(r)
    check_delivered(MESSAGES, read_maildir(out), "getmail delete=true run")
    assert server.files() == {}
