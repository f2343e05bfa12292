"""The children of `buzon serve` are confined after their set-up (src/core/sandbox.c): a POP3 worker
and the LMTP process can open files only beneath the mail root (and [server] sandbox_extra_paths),
the auth process only its passwd-file's directory, and a system call outside a process's seccomp
list kills it (SIGSYS), which the master logs before it restarts the process.

The server's test hook BUZON_SANDBOX_PROBE=PATH:PATH… makes each process try to open every PATH
for reading and for appending right after its sandbox is applied and log the outcome;
BUZON_SANDBOX_PROBE_SYSCALL=pop3 makes the POP3 worker then open a socket, which it may not."""

import os
import re

import pytest

from buzontest import wait_until
from lmtptest import setup_lmtp, start_lmtp

PROBE_LINE = re.compile(
    r"event=sandbox_probe process=(\w+) access=(\w+) path=(\S+) result=(\w+)(?: errno=(\w+))?")
SIGSYS_KILL = re.compile(r"event=child_killed child=pop3 pid=\d+ signal=31 " + re.escape(
    'reason="killed by SIGSYS (seccomp: forbidden system call)"'))


def probe_results(srv):
    """{(process, access, path): "allowed" | "denied"} from the server's log."""
    return {m.group(1, 2, 3): m.group(4) for m in PROBE_LINE.finditer(srv.stderr_text())}


def make_confined_server(make_server, monkeypatch, sandbox):
    """A POP3 + LMTP server whose passwd-file has a directory of its own (as the docs advise), and
    the files to probe: one outside every allowed tree, one inside the mail root."""
    srv = make_server(start=False, users=())
    auth_dir = os.path.join(srv.base, "auth")
    os.makedirs(auth_dir, mode=0o755)
    srv.settings["auth"]["passwd_file"] = os.path.join(auth_dir, "users")
    srv.settings["server"]["sandbox"] = sandbox
    srv.write_config()
    srv.add_user("demo", "secret")
    paths = {
        "outside": os.path.join(srv.base, "outside.txt"),
        "inside": os.path.join(srv.maildir("demo"), "inside.txt"),
        "passwd": srv.settings["auth"]["passwd_file"],
    }
    srv.make_maildir("demo")
    for name in ("outside", "inside"):
        with open(paths[name], "w") as f:
            f.write("probe target\n")
        os.chmod(paths[name], 0o666)  # file modes allow everything: only the sandbox may refuse
    srv._own(paths["inside"])
    monkeypatch.setenv("BUZON_SANDBOX_PROBE", ":".join(paths.values()))
    setup_lmtp(srv, unix=False, start=False)
    start_lmtp(srv)
    expected = [(p, a, paths[n]) for p in ("pop3", "lmtp", "auth") for a in ("read", "write")
                for n in paths]
    assert wait_until(lambda: all(k in probe_results(srv) for k in expected), 5), srv.stderr_text()
    return srv, paths


def skip_unless_confined(srv, process, landlock=True, seccomp=True):
    """Skips the test where the kernel (or valgrind, under BUZON_VALGRIND=1) leaves that part off:
    the server then logs sandbox_degraded and runs without it."""
    m = wait_until(lambda: re.search(r"event=sandbox process=%s landlock_abi=(\d+) seccomp=(\w+)"
                                     % process, srv.stderr_text()), 10)
    assert m, srv.stderr_text()
    why = " ".join(re.findall(r"event=sandbox_degraded .*", srv.stderr_text()))
    if landlock and m.group(1) == "0":
        pytest.skip("no Landlock here: " + why)
    if seccomp and m.group(2) != "yes":
        pytest.skip("no seccomp here: " + why)


def test_processes_open_only_what_they_need(make_server, monkeypatch):
    srv, paths = make_confined_server(make_server, monkeypatch, "yes")
    for process in ("pop3", "lmtp", "auth"):
        skip_unless_confined(srv, process)
    text = srv.stderr_text()
    for process in ("pop3", "lmtp", "auth"):
        assert re.search(r"event=sandbox process=%s landlock_abi=[1-9]\d* seccomp=yes" % process,
                         text), text
    results = probe_results(srv)
    for process in ("pop3", "lmtp"):
        for access in ("read", "write"):
            assert results[(process, access, paths["outside"])] == "denied"
            assert results[(process, access, paths["passwd"])] == "denied"
            assert results[(process, access, paths["inside"])] == "allowed"
    assert results[("auth", "read", paths["passwd"])] == "allowed"
    assert results[("auth", "write", paths["passwd"])] == "denied"
    for name in ("outside", "inside"):
        for access in ("read", "write"):
            assert results[("auth", access, paths[name])] == "denied"
    assert "errno=EACCES" in text

    # the confined processes still do their work: a login, a delivery, a passwd-file that
    # `buzon user add` replaced (renamed over) after the auth process was confined
    srv.deliver(b"Subject: hello\n\nbody\n", user="demo")
    c = srv.login("demo", "secret")
    assert c.stat()[0] == 1
    c.quit()
    srv.add_user("later", "pw2")
    srv.make_maildir("later")
    c = srv.login("later", "pw2")
    c.quit()


def test_sandbox_off_allows_the_same_opens(make_server, monkeypatch):
    srv, paths = make_confined_server(make_server, monkeypatch, "no")
    assert 'event=sandbox_off process=pop3 reason="[server] sandbox = no"' in srv.stderr_text()
    results = probe_results(srv)
    for process in ("pop3", "lmtp", "auth"):
        for name in paths:
            assert results[(process, "read", paths[name])] == "allowed", (process, name)


def test_extra_paths_admit_a_maildir_moved_elsewhere(make_server):
    srv = make_server(start=False)
    moved = os.path.join(srv.base, "disk2", "demo")  # outside the mail root
    srv.make_maildir(maildir=moved)
    srv._own(moved)
    srv.deliver(b"Subject: moved\n\nbody\n", maildir=moved)
    os.symlink(moved, srv.maildir("demo"))
    srv.start()
    skip_unless_confined(srv, "pop3")
    c = srv.connect()
    c.ok("USER demo")
    assert c.cmd("PASS secret").startswith("-ERR [SYS/PERM]")
    c.close()
    assert re.search(r"event=mailbox_open_failed .*Permission denied", srv.stderr_text())
    srv.stop()
    srv.settings["server"]["sandbox_extra_paths"] = os.path.dirname(moved)
    srv.start()
    c = srv.login()
    assert c.stat()[0] == 1
    c.quit()


def test_forbidden_system_call_kills_the_worker(make_server, monkeypatch):
    monkeypatch.setenv("BUZON_SANDBOX_PROBE_SYSCALL", "pop3")
    srv = make_server(start=False)
    srv.start(wait=False)
    skip_unless_confined(srv, "pop3", landlock=False)
    # the worker is killed at start, restarted (after the master's 1 s pause) and killed again
    kills = lambda: SIGSYS_KILL.findall(srv.stderr_text())
    assert wait_until(lambda: len(kills()) >= 2, 10), srv.stderr_text()
    text = srv.stderr_text()
    assert "event=sandbox_probe process=pop3 syscall=socket" in text
    assert "syscall=socket result=allowed" not in text
    assert len(re.findall(r"event=worker_spawned worker=0 ", text)) >= 2
    assert srv.stop(check=False) == 1  # a child died: the exit status says so
    srv.problems.clear()
