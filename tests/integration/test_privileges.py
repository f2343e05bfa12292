"""Who the processes run as: started as root, the children drop to [server] user (and the auth
process is not dumpable, so same-user workers cannot ptrace it for hashes); without [server] user
root is refused with a clear message; started as an ordinary user, everything runs as that user."""

import os
import pwd
import subprocess

import pytest

from buzontest import wait_until

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change users")


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def status_field(pid, name):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1:]
    raise KeyError(name)


def role_of(pid):
    """The master names its children (prctl PR_SET_NAME): buzon-auth, buzon-pop3, buzon-lmtp,
    buzon-admin."""
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip().replace("buzon-", "")


@needs_root
def test_root_without_server_user_is_refused(make_server):
    srv = make_server(settings={"server": {"user": None}}, start=False)
    r = srv.cli("serve", "-c", srv.conf, timeout=10)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "[server] user" in err and "root" in err, err


@needs_root
def test_root_with_unknown_user_is_refused(make_server):
    srv = make_server(settings={"server": {"user": "no-such-user-buzon"}}, start=False)
    r = srv.cli("serve", "-c", srv.conf, timeout=10)
    assert r.returncode != 0
    assert "no-such-user-buzon" in r.stderr.decode()


@needs_root
def test_children_drop_to_server_user(server):
    nobody = pwd.getpwnam(server.run_as).pw_uid
    master = server.proc.pid
    kids = wait_until(lambda: len(children_of(master)) >= 3 and children_of(master), 5)
    # one worker (workers = 1), the auth process and the admin process
    assert kids and len(kids) == 3, kids
    assert status_field(master, "Uid")[0] == "0"  # the master keeps root to restart children
    # the auth process starts its hashing threads after making its dummy hash
    roles = wait_until(lambda: sorted(role_of(k) for k in kids) == ["admin", "auth", "pop3"], 5)
    assert roles, sorted(role_of(k) for k in kids)
    for k in kids:
        uids = status_field(k, "Uid")
        assert all(int(u) == nobody for u in uids), (k, uids)
        assert status_field(k, "NoNewPrivs") == ["1"]
    # logging in still works as that user
    c = server.login()
    c.quit()


@needs_root
def test_ordinary_user_runs_as_itself(make_server):
    """Started by an ordinary user (no [server] user needed), every process is that user."""
    srv = make_server(settings={"server": {"user": None}}, start=False)
    nobody = pwd.getpwnam(srv.run_as)
    # the control socket goes where that user may create it (the test directory is root's)
    srv.settings["server"]["control_socket"] = os.path.join(srv.base, "mail", "control.sock")
    srv.write_config()
    proc = subprocess.Popen(
        ["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid, "--clear-groups",
         srv.bin, "serve", "-c", srv.conf],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        kids = wait_until(lambda: len(children_of(proc.pid)) >= 3 and children_of(proc.pid), 5)
        assert kids, "no children started"
        for pid in [proc.pid] + kids:
            assert int(status_field(pid, "Uid")[0]) == nobody.pw_uid
        srv.proc = proc
        srv.wait_ready()
        assert wait_until(lambda: sorted(role_of(k) for k in kids) == ["admin", "auth", "pop3"], 5)
        # the auth process is not dumpable (its /proc files turn root's), so a worker of the
        # same user cannot ptrace it or read its memory; the worker is an ordinary process
        for pid in kids:
            owner = os.stat("/proc/%d/status" % pid).st_uid
            assert owner == (0 if role_of(pid) == "auth" else nobody.pw_uid), (pid, owner)
        c = srv.login()
        c.quit()
    finally:
        srv.proc = None
        proc.terminate()
        assert proc.wait(10) == 0
        err = proc.stderr.read().decode()
        assert "AddressSanitizer" not in err and "LeakSanitizer" not in err, err
