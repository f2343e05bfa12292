"""fetchmail against buzon: keep+UIDL run, a second run that finds nothing new, a no-keep run."""

import os
import pwd

from buzontest import make_message
from clientlib import MESSAGES, check_delivered, need, read_dir, run, seed


def _setup(srv, tmp):
    home = os.path.join(tmp, "fetchmail-home")
    out = os.path.join(tmp, "fetchmail-out")
    os.makedirs(home, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    mda = os.path.join(home, "mda.sh")
    with open(mda, "w") as f:
        f.write('#!/bin/sh\nset -e\nf="%s/msg.$(date +%%s%%N).$$"\ncat > "$f.tmp"\nmv "$f.tmp" "$f"\n' % out)
    os.chmod(mda, 0o755)
    rc = os.path.join(home, "fetchmailrc")
    with open(rc, "w") as f:
        f.write(
            "set no bouncemail\n"
            "set no syslog\n"
            "poll 127.0.0.1 with proto POP3 port %d uidl timeout 30\n"
            '  user "demo" there with password "secret" is "%s" here\n'
            "  options no rewrite sslproto ''\n"
            '  mda "%s"\n' % (srv.port, pwd.getpwuid(os.getuid()).pw_name, mda)
        )
    os.chmod(rc, 0o600)
    env = dict(os.environ)
    env.update(HOME=home, FETCHMAILHOME=home, FETCHMAILUSER=pwd.getpwuid(os.getuid()).pw_name,
               LC_ALL="C")
    return rc, out, env, home


def _fetchmail(rc, env, home, *args):
    fm = need("fetchmail")
    return run([fm, "-f", rc, "--idfile", os.path.join(home, "ids"), "--pidfile", os.path.join(home, "pid"),
                "-v"] + list(args), env=env)


def test_fetchmail_keep_uidl_then_nokeep(server, tmp_path):
    bases = seed(server)
    rc, out, env, home = _setup(server, str(tmp_path))

    r = _fetchmail(rc, env, home, "--keep")
    log = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, "fetchmail exited %d:\n%s" % (r.returncode, log)
    check_delivered(MESSAGES, read_dir(out), "fetchmail keep run")
    assert sorted(server.files()) == sorted(bases), "keep run deleted messages"

    # Second keep run: UIDL says everything is old, nothing is fetched (exit 1 = no mail).
    r = _fetchmail(rc, env, home, "--keep")
    log = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 1, "second run: exit %d (expected 1, no new mail):\n%s" % (r.returncode, log)
    assert len(read_dir(out)) == len(MESSAGES)

    # A new message arrives: only that one is fetched.
    extra = make_message("interop-late", b"arrived later\n")
    server.deliver(extra)
    r = _fetchmail(rc, env, home, "--keep")
    assert r.returncode == 0, (r.stdout + r.stderr).decode("utf-8", "replace")
    check_delivered(MESSAGES + [extra], read_dir(out), "fetchmail run after new mail")

    # No-keep run fetching everything: the server's maildrop ends up empty.
    for name in os.listdir(out):
        os.unlink(os.path.join(out, name))
    r = _fetchmail(rc, env, home, "--nokeep", "--all")
    log = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, "no-keep run: exit %d:\n%s" % (r.returncode, log)
    check_delivered(MESSAGES + [extra], read_dir(out), "fetchmail no-keep run")
    assert server.files() == {}, "fetchmail --nokeep left %r" % server.files()
    # and the session ended properly: a new login works at once
    c = server.login()
    assert c.stat() == (0, 0)
    c.quit()
