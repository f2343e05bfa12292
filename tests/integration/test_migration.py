"""Migration keeping UIDLs (store/uidl_import.h): a Maildir that the real Dovecot (dovecot-pop3d)
served, or that a hand-written Courier courierpop3dsizelist describes, is opened by buzon, and
every client sees exactly the UIDLs it saw before; later mail gets new UIDLs, a second open changes
nothing, and `buzon import --dry-run` changes no file."""

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from buzontest import DEMO_PASS, DEMO_USER, Pop3, free_port, retr_expected

DOVECOT_BIN = shutil.which("dovecot")
HAVE_DOVECOT = DOVECOT_BIN is not None and os.path.exists("/usr/lib/dovecot/pop3")

needs_dovecot = pytest.mark.skipif(
    not HAVE_DOVECOT or os.geteuid() != 0,
    reason="needs root and Dovecot's POP3 server (Debian dovecot-pop3d; "
    "scripts/install-deps.sh test installs it)")

DOVECOT_CONF = """\
# written by tests/integration/test_migration.py
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
# the Maildir is buzon's, and Dovecot keeps its dovecot-uidlist in it, as on a real server
mail_location = maildir:{maildir}
pop3_uidl_format = {uidl_format}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={maildir}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


class Dovecot:
    """Dovecot's POP3 server on 127.0.0.1 with its own configuration in a temporary directory,
    serving one Maildir to the users given (name, password, extra userdb fields)."""

    def __init__(self, maildir, owner, users, uidl_format="%08Xu%08Xv"):
        self.root = tempfile.mkdtemp(prefix="dovecot-")
        os.chmod(self.root, 0o755)
        self.port = free_port()
        pw = pwd.getpwnam(owner)
        with open(os.path.join(self.root, "users"), "w") as f:
            for name, password, extra in users:
                # userdb fields go through Dovecot's variable expansion: %% is a percent sign
                fields = " ".join("userdb_%s=%s" % (k, v.replace("%", "%%"))
                                  for k, v in extra.items())
                f.write("%s:{PLAIN}%s::::::%s\n" % (name, password, fields))
        with open(os.path.join(self.root, "dovecot.conf"), "w") as f:
            f.write(DOVECOT_CONF.format(root=self.root, maildir=maildir, uid=pw.pw_uid,
                                        gid=pw.pw_gid, port=self.port, uidl_format=uidl_format))
        self.proc = subprocess.Popen(
            [DOVECOT_BIN, "-F", "-c", os.path.join(self.root, "dovecot.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("dovecot exited with %s:\n%s" % (self.proc.returncode,
                                                                      self.log()))
            try:
                c = Pop3(self.port, timeout=2)
                c.close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("dovecot not ready within %ss:\n%s" % (timeout, self.log()))

    def log(self):
        try:
            with open(os.path.join(self.root, "dovecot.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def login(self, user, password=DEMO_PASS):
        c = Pop3(self.port)
        assert c.greeting.startswith("+OK"), c.greeting
        try:
            c.login(user, password)
        except AssertionError as e:
            raise AssertionError("%s\ndovecot.log:\n%s" % (e, self.log())) from None
        return c

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # its login and auth processes go away after the master: wait, so that the Maildir is
        # buzon's alone and the directory can go
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def dovecot():
    """Factory: dovecot(maildir, owner, users, uidl_format); every instance stops at teardown."""
    started = []

    def factory(*args, **kw):
        d = Dovecot(*args, **kw)
        started.append(d)
        return d

    yield factory
    for d in started:
        d.stop()


def mailbox_view(c):
    """{UIDL: message} as a POP3 client sees the mailbox."""
    uidls = c.uidl()
    return {uidl: c.retr(n) for n, uidl in uidls.items()}


def message(subject):
    return b"From: a@example.org\nSubject: " + subject.encode() + b"\n\nbody of " + \
        subject.encode() + b"\n"


def tree_state(top):
    """Every file below top with its size, mode, owner, mtime and content: what a dry run must
    leave alone."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            content = None
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    content = f.read()
            state[os.path.relpath(path, top)] = (st.st_size, st.st_mode, st.st_uid,
                                                 st.st_mtime_ns, content)
    return state


def native_uidl(uid, uidvalidity):
    return "%08x%08x" % (uid, uidvalidity)


@needs_dovecot
def test_dovecot_default_uidls_survive(make_server, dovecot):
    srv = make_server(start=False)
    md = srv.make_maildir()
    for i in range(1, 6):
        srv.deliver(message("m%d" % i), subdir="new" if i % 2 else "cur",
                    flags=None if i % 2 else "S")
    d = dovecot(md, srv.run_as or pwd.getpwuid(os.geteuid()).pw_name,
                [(DEMO_USER, DEMO_PASS, {})])
    c = d.login(DEMO_USER)
    c.ok("DELE 2")
    c.ok("DELE 5")  # the highest UID: Dovecot's next UID stays above it
    c.quit()
    c = d.login(DEMO_USER)
    before = mailbox_view(c)
    c.quit()
    d.stop()
    assert len(before) == 3
    with open(os.path.join(md, "dovecot-uidlist")) as f:
        header = f.readline()
    uidvalidity = int(re.search(r" V(\d+)", header).group(1))
    next_uid = int(re.search(r" N(\d+)", header).group(1))
    assert next_uid == 6
    assert all(u.endswith("%08x" % uidvalidity) for u in before)
    # arrived while the servers were switched: Dovecot never listed it
    srv.deliver(message("between"))

    srv.start()
    c = srv.login()
    after = mailbox_view(c)
    c.quit()
    assert {u: after[u] for u in before} == before
    new = set(after) - set(before)
    assert new == {native_uidl(next_uid, uidvalidity)}
    assert after[native_uidl(next_uid, uidvalidity)] == retr_expected(message("between"))
    with open(os.path.join(md, "buzon-uidl-import")) as f:
        assert f.read() == "buzon-uidl-import 1 done %d dovecot-uidlist\nend 0\n" % uidvalidity

    # a second open changes nothing; new mail gets the next UID
    state = tree_state(md)
    c = srv.login()
    assert mailbox_view(c) == after
    c.quit()
    assert tree_state(md)["buzon-uidl-import"] == state["buzon-uidl-import"]
    srv.deliver(message("later"))
    c = srv.login()
    latest = mailbox_view(c)
    c.quit()
    assert set(latest) - set(after) == {native_uidl(next_uid + 1, uidvalidity)}
    srv.restart()
    c = srv.login()
    assert mailbox_view(c) == latest
    c.quit()


@needs_dovecot
def test_dovecot_saved_and_custom_uidls_survive(make_server, dovecot):
    """Dovecot with pop3_save_uidl kept each message's first UIDL (the P field of its list) even
    after pop3_uidl_format changed; later messages got the new format. buzon, told that format in
    import_uidl_format, shows both kinds as Dovecot did."""
    srv = make_server(settings={"mail": {"import_uidl_format": "%u.%Xv"}}, start=False)
    md = srv.make_maildir()
    for i in range(1, 4):
        srv.deliver(message("old%d" % i))
    owner = srv.run_as or pwd.getpwuid(os.geteuid()).pw_name
    # two users of one Maildir: the one who saved UIDLs with %g, the one who reads with %u.%Xv
    d = dovecot(md, owner, [("saver", "pw", {"pop3_uidl_format": "%g", "pop3_save_uidl": "yes"}),
                            (DEMO_USER, DEMO_PASS, {"pop3_uidl_format": "%u.%Xv"})])
    c = d.login("saver", "pw")
    saved = c.uidl()
    c.quit()
    srv.deliver(message("new1"))
    srv.deliver(message("new2"))
    c = d.login(DEMO_USER)
    before = mailbox_view(c)
    c.quit()
    d.stop()
    # the saved ones keep their %g (base name) UIDLs; the new ones have %u.%Xv
    assert set(saved.values()) < set(before)
    assert len([u for u in before if re.fullmatch(r"\d+\.[0-9a-f]+", u)]) == 2
    with open(os.path.join(md, "dovecot-uidlist")) as f:
        # Dovecot saves a UIDL equal to the base file name as an empty P field
        assert len(re.findall(r" P\S* ", f.read())) == 3

    srv.start()
    c = srv.login()
    after = mailbox_view(c)
    c.quit()
    assert after == before
    srv.deliver(message("after"))
    c = srv.login()
    latest = mailbox_view(c)
    c.quit()
    added = set(latest) - set(after)
    assert len(added) == 1 and re.fullmatch(r"[0-9a-f]{16}", added.pop())
    assert {u: latest[u] for u in after} == after


COURIER_UIDVALIDITY = 1700000000


def courier_fixture(srv):
    """A Maildir as Courier left it: courierpop3dsizelist in its real format (version 3: file
    name, size, UID:UIDVALIDITY:UTF-8 flag), with a message it lists but that is gone, a line a
    crash cut off, and a file it never listed. Returns {UIDL: message} as Courier showed it."""
    md = srv.make_maildir()
    shown = {}
    lines = ["/3 9 %d" % COURIER_UIDVALIDITY]
    for uid, subdir, flags in ((1, "cur", "S"), (2, "cur", ""), (4, "new", None), (7, "cur", "RS")):
        data = message("courier%d" % uid)
        base = srv.deliver(data, subdir=subdir, flags=flags)
        name = base if flags is None else base + ":2," + flags
        lines.append("%s %d %d:%d:0" % (name, len(data) + data.count(b"\n"), uid,
                                        COURIER_UIDVALIDITY))
        shown["UID%d-%d" % (uid, COURIER_UIDVALIDITY)] = retr_expected(data)
    lines.append("1690000000.M5P5.gone:2,S 100 5:%d:0" % COURIER_UIDVALIDITY)
    srv.deliver(message("unlisted"))
    with open(os.path.join(md, "courierpop3dsizelist"), "w") as f:
        f.write("\n".join(lines) + "\n" + "1690000001.M6P6.cut 100 6:17")
    srv._own(os.path.join(md, "courierpop3dsizelist"))
    return md, shown


def test_courier_uidls_survive(make_server):
    srv = make_server(start=False)
    md, shown = courier_fixture(srv)
    srv.start()
    c = srv.login()
    after = mailbox_view(c)
    c.quit()
    assert {u: after[u] for u in shown} == shown
    # the file Courier never listed gets the UID after Courier's next UID (9)
    assert set(after) - set(shown) == {native_uidl(9, COURIER_UIDVALIDITY)}
    with open(os.path.join(md, "buzon-uidl-import")) as f:
        assert f.readline().startswith("buzon-uidl-import 1 done %d courierpop3dsizelist"
                                       % COURIER_UIDVALIDITY)
    srv.deliver(message("later"))
    c = srv.login()
    latest = mailbox_view(c)
    c.ok("DELE 1")
    c.quit()
    assert set(latest) - set(after) == {native_uidl(10, COURIER_UIDVALIDITY)}
    c = srv.login()
    remaining = mailbox_view(c)
    c.quit()
    assert remaining == {u: m for u, m in latest.items() if u != "UID1-%d" % COURIER_UIDVALIDITY}


def test_import_command_dry_run_then_import(make_server):
    srv = make_server(start=False)
    md, shown = courier_fixture(srv)
    state = tree_state(md)
    r = srv.cli("import", "-c", srv.conf, "--dry-run", DEMO_USER)
    out = r.stdout.decode()
    assert r.returncode == 0, (out, r.stderr)
    assert tree_state(md) == state
    for uidl in shown:
        assert "  %s -> %s  " % (uidl, uidl) in out, out
    assert "-> (no such file in the Maildir, skipped)  1690000000.M5P5.gone" in out
    assert "(new) -> %s" % native_uidl(9, COURIER_UIDVALIDITY) in out
    assert "cannot import: line 7: cut off" in out
    assert "demo: 4 keep their UIDL, 0 change, 1 new, 1 listed but missing" in out

    r = srv.cli("import", "-c", srv.conf, DEMO_USER)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "demo: imported" in r.stdout.decode()
    for name in ("buzon-uidlist", "buzon-uidl-import"):
        st = os.stat(os.path.join(md, name))
        if srv.run_as:
            assert st.st_uid == pwd.getpwnam(srv.run_as).pw_uid  # the server's, not root's
    r = srv.cli("import", "-c", srv.conf, "--dry-run", DEMO_USER)
    assert r.returncode == 0
    assert "already has buzon-uidlist (imported before): nothing to import" in r.stdout.decode()

    srv.start()
    c = srv.login()
    after = mailbox_view(c)
    c.quit()
    assert {u: after[u] for u in shown} == shown
    assert len(after) == len(shown) + 1


def test_import_command_refusals(make_server):
    srv = make_server(start=False)
    srv.make_maildir()
    r = srv.cli("import", "-c", srv.conf, DEMO_USER)
    assert r.returncode == 0
    assert "no dovecot-uidlist or courierpop3dsizelist: nothing to import" in r.stdout.decode()
    r = srv.cli("import", "-c", srv.conf, "nosuchuser")
    assert r.returncode == 67 and b"no such user" in r.stderr
    r = srv.cli("import", "-c", srv.conf)
    assert r.returncode == 64
    # a format buzon cannot reproduce is refused when the configuration is read
    srv.settings["mail"]["import_uidl_format"] = "%m"
    srv.write_config()
    r = srv.cli("check-config", "-c", srv.conf)
    assert r.returncode != 0
    assert b"import_uidl_format: %m (header MD5) is not supported" in r.stderr
