"""The `buzon user` and `buzon hash` subcommands, and their effect on logins."""

import os

from buzontest import BuzonServer


def _srv(tmp_path):
    srv = BuzonServer(base=str(tmp_path))
    srv.write_config()
    return srv


def _login_result(srv, user, password):
    c = srv.connect()
    c.ok("USER " + user)
    r = c.cmd("PASS " + password)
    c.cmd("QUIT")
    c.close()
    return r


def test_user_add_list_del(tmp_path):
    srv = _srv(tmp_path)
    for u in ("alice", "bob@example.com"):
        r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", u, stdin="pw\n")
        assert r.returncode == 0, r.stderr
    r = srv.cli("user", "list", "-c", srv.conf)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "alice" in out and "bob@example.com" in out
    # adding twice fails and keeps the original
    r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", "alice", stdin="other\n")
    assert r.returncode != 0
    assert r.stderr.strip(), "no error message"
    # delete
    r = srv.cli("user", "del", "-c", srv.conf, "alice")
    assert r.returncode == 0, r.stderr
    r = srv.cli("user", "list", "-c", srv.conf)
    assert "alice" not in r.stdout.decode() and "bob@example.com" in r.stdout.decode()
    # deleting a missing user fails
    r = srv.cli("user", "del", "-c", srv.conf, "alice")
    assert r.returncode != 0
    r = srv.cli("user", "del", "-c", srv.conf, "nobody")
    assert r.returncode != 0


def test_passwd_file_not_world_readable(tmp_path):
    srv = _srv(tmp_path)
    srv.add_user("alice", "pw", scheme="YESCRYPT")
    path = srv.settings["auth"]["passwd_file"]
    assert os.path.exists(path)
    assert os.stat(path).st_mode & 0o004 == 0, oct(os.stat(path).st_mode)


def test_user_passwd_and_del_affect_login(make_server, tmp_path):
    srv = make_server(users=[("alice", "old-pass"), ("bob", "bobpw")], scheme="YESCRYPT", start=False)
    srv.start()
    assert _login_result(srv, "alice", "old-pass").startswith("+OK")
    srv.stop()
    r = srv.cli("user", "passwd", "-c", srv.conf, "--scheme", "YESCRYPT", "--password-stdin", "alice",
                stdin="new-pass\n")
    assert r.returncode == 0, r.stderr
    r = srv.cli("user", "passwd", "-c", srv.conf, "--password-stdin", "nobody", stdin="x\n")
    assert r.returncode != 0, "passwd for a missing user succeeded"
    r = srv.cli("user", "del", "-c", srv.conf, "bob")
    assert r.returncode == 0, r.stderr
    srv.start()
    assert _login_result(srv, "alice", "old-pass").startswith("-ERR [AUTH]")
    assert _login_result(srv, "alice", "new-pass").startswith("+OK")
    assert _login_result(srv, "bob", "bobpw").startswith("-ERR [AUTH]")


def test_schemes_login(make_server):
    srv = make_server(users=[], start=False)
    srv.add_user("p", "plainpw", scheme="PLAIN")
    srv.add_user("y", "yespw", scheme="YESCRYPT")
    srv.start()
    assert _login_result(srv, "p", "plainpw").startswith("+OK")
    assert _login_result(srv, "y", "yespw").startswith("+OK")
    assert _login_result(srv, "y", "plainpw").startswith("-ERR [AUTH]")


def test_hash(tmp_path):
    srv = _srv(tmp_path)
    r = srv.cli("hash", "--scheme", "YESCRYPT", "--password-stdin", stdin="hunter2\n")
    assert r.returncode == 0, r.stderr
    h1 = r.stdout.decode().strip()
    assert h1 and "hunter2" not in h1 and "\n" not in h1
    r = srv.cli("hash", "--scheme", "YESCRYPT", "--password-stdin", stdin="hunter2\n")
    h2 = r.stdout.decode().strip()
    assert h1 != h2, "two hashes of the same password are identical: no salt?"
    r = srv.cli("hash", "--scheme", "NO-SUCH-SCHEME", "--password-stdin", stdin="x\n")
    assert r.returncode != 0


def test_user_add_bad_scheme(tmp_path):
    srv = _srv(tmp_path)
    r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "NO-SUCH-SCHEME", "--password-stdin", "x", stdin="x\n")
    assert r.returncode != 0
    r = srv.cli("user", "list", "-c", srv.conf)
    assert "x" not in r.stdout.decode().split()


def test_user_add_rejects_unsafe_names_and_passwords(tmp_path):
    srv = _srv(tmp_path)
    srv.add_user("good", "pw")
    with open(srv.settings["auth"]["passwd_file"], "rb") as f:
        before = f.read()
    for name in ("a:b", "x\ny", "../../etc", "a/b", ""):
        r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", name, stdin="pw\n")
        assert r.returncode != 0, "user name %r accepted" % name
    for pw in ("", "p:w", "p\x01w"):
        r = srv.cli("user", "add", "-c", srv.conf, "--scheme", "PLAIN", "--password-stdin", "newuser",
                    stdin=pw + "\n")
        assert r.returncode != 0, "PLAIN password %r accepted" % pw
    with open(srv.settings["auth"]["passwd_file"], "rb") as f:
        assert f.read() == before


def test_concurrent_user_adds_lose_nothing(make_server):
    """Edits are serialised by a lock beside the passwd-file: parallel adds all land."""
    import subprocess

    srv = make_server(start=False, users=())
    procs = [
        subprocess.Popen([srv.bin, "user", "add", "-c", srv.conf, "--scheme", "PLAIN",
                          "--password-stdin", "user%02d" % i],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(20)
    ]
    for p in procs:
        out, err = p.communicate(b"pw\n", timeout=30)
        assert p.returncode == 0, (out, err)
    r = srv.cli("user", "list", "-c", srv.conf)
    listed = [l.split()[0] for l in r.stdout.decode().splitlines()]
    assert sorted(listed) == ["user%02d" % i for i in range(20)], listed
