"""Storage failures on the POP3 side: failed writes, fsyncs, renames and unlinks in the Maildir, and
a really full filesystem, never lose mail, never damage the UID index and never change a UIDL.

How: an LD_PRELOAD library (tests/fs_fault_shim.c, compiled here with cc into the test's temp
directory) makes chosen calls of the server fail with EIO or ENOSPC, for paths inside the user's
Maildir only, while a control file names them; the tests arm it in the middle of a session. The
last test mounts a small tmpfs as the Maildir (root only, as in CI; skipped otherwise) and fills it.

Proven:
  - a QUIT whose commit cannot be completed (unlink, fsync of cur/, the Seen rename, or any step of
    the index rewrite failing) answers "-ERR [SYS/TEMP]"; every message that was not DELEd is still
    there, unchanged; a DELEd one is gone only if its unlink succeeded (RFC 1939: "-ERR some deleted
    messages not removed"); the next login works and shows every survivor with its old UIDL, and a
    retried QUIT then succeeds;
  - a failed index rewrite leaves the previous index byte for byte (and no temp file); an index is
    always whole (header, one line per message, trailer with the right count);
  - a login that has to hand out new UIDs but cannot save them answers "-ERR [SYS/TEMP]" rather than
    show UIDs that could be handed out again; when the disk works again, old UIDLs are unchanged;
  - on a full filesystem: POP3 as above; LMTP answers 452 4.3.1 (RFC 5321's "insufficient system
    storage", RFC 3463's "mail system full"), `buzon deliver` exits 75 (EX_TEMPFAIL), no partial
    file is left; once there is space again everything works and nothing was lost.
"""

import os
import re
import shutil
import subprocess

import pytest

from buzontest import DEMO_PASS, DEMO_USER, TESTS_DIR, make_message, to_crlf
from lmtptest import Lmtp, setup_lmtp, wait_lmtp_ready

INDEX_NAME = "buzon-uidlist"
INDEX_TEMP_NAME = INDEX_NAME + ".tmp"
MESSAGE_ID_RE = re.compile(rb"^Message-ID: <([^@>]+)@buzon\.test>\r?$", re.M | re.I)

# ---------------------------------------------------------------------------------------------
# The fault library and its control file


@pytest.fixture(scope="module")
def fault_shim(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fault library")
    out = str(tmp_path_factory.mktemp("shim") / "fs_fault_shim.so")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", out,
                        os.path.join(TESTS_DIR, "fs_fault_shim.c"), "-ldl"], capture_output=True)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    os.chmod(os.path.dirname(out), 0o755)  # the server's user loads it
    return out


class Faults:
    """The control file of fs_fault_shim.c: arm(("write", "ENOSPC", "buzon-uidlist.tmp"), ...)."""

    def __init__(self, path):
        self.path = path
        self.disarm()

    def arm(self, *rules):
        self._write("".join("%s %s %s\n" % rule for rule in rules))

    def disarm(self):
        self._write("")

    def _write(self, text):
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, self.path)  # a server thread reading it sees the old or the new rules


@pytest.fixture
def faulty_server(make_server, fault_shim, monkeypatch):
    """A running server whose processes load the fault library, scoped to demo's Maildir. DELE
    unlinks here (no undelete window); test_retention.py has the faults of the window's moves."""
    srv = make_server(settings={"mail": {"deleted_retention": "0"}}, start=False)
    srv.make_maildir(DEMO_USER)
    # beside the Maildirs, where a sandboxed worker may read, but outside the faults' scope
    srv.faults = Faults(os.path.join(os.path.dirname(srv.maildir(DEMO_USER)), "fault-control"))
    monkeypatch.setenv("LD_PRELOAD", fault_shim)
    monkeypatch.setenv("BUZON_FAULT_CONTROL", srv.faults.path)
    monkeypatch.setenv("BUZON_FAULT_SCOPE", srv.maildir(DEMO_USER))
    # an ASan build insists on coming first among the preloaded libraries unless told otherwise
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "verify_asan_link_order=0")
    srv.start()
    return srv


# ---------------------------------------------------------------------------------------------
# Looking at the mailbox


def deliver_messages(srv, first, count):
    """count messages named m<first>... into new/; returns {token: content}."""
    out = {}
    for i in range(first, first + count):
        token = "m%d" % i
        out[token] = make_message(token, b"Body of %s.\n" % token.encode() * (i % 7 + 1))
        srv.deliver(out[token])
    return out


def files_by_token(srv):
    """{token: (name in new/ or cur/, content)} read from disk."""
    out = {}
    for base, (sub, flags, path) in srv.files().items():
        with open(path, "rb") as f:
            content = f.read()
        m = MESSAGE_ID_RE.search(content)
        assert m, "unknown file %s" % path
        assert m.group(1).decode() not in out, "%s present twice" % m.group(1)
        out[m.group(1).decode()] = (os.path.basename(path), content)
    return out


def uidls_by_token(p):
    """{token: UIDL} of a logged-in session, messages identified by TOP n 0."""
    out = {}
    for n, uidl in p.uidl().items():
        m = MESSAGE_ID_RE.search(p.top(n, 0))
        assert m, "message %d has no Message-ID" % n
        out[m.group(1).decode()] = uidl
    return out


def numbers_by_token(p):
    return {MESSAGE_ID_RE.search(p.top(n, 0)).group(1).decode(): n for n in p.uidl()}


def read_index(srv):
    with open(os.path.join(srv.maildir(DEMO_USER), INDEX_NAME), "rb") as f:
        return f.read()


def assert_index_whole(data):
    """The index as uidlist.c writes it: header, message lines, a trailer that counts them."""
    assert data.endswith(b"\n"), "index does not end with a newline: %r" % data[-80:]
    lines = data[:-1].split(b"\n")
    head = re.fullmatch(rb"buzon-uidlist 3 (\d+) (\d+) (- -|\d+\.\d{9} \d+\.\d{9})", lines[0])
    tail = re.fullmatch(rb"end (\d+) (\d+) (\d+)", lines[-1])
    assert head and tail, "index header or trailer damaged: %r ... %r" % (lines[0], lines[-1])
    assert head.group(1, 2) == tail.group(1, 2), (lines[0], lines[-1])
    assert int(tail.group(3)) == len(lines) - 2, "trailer counts %s lines, index has %d" % (
        tail.group(3), len(lines) - 2)
    for line in lines[1:-1]:
        # the retrieval and deletion times (format 3) are there only when one is set
        assert re.fullmatch(rb"\d+ (\d+|-) (\d+|-)( (\d+|-) (\d+|-))? [^ :/]+(:\S*)?", line), (
            "damaged line %r" % line)


def index_temp_exists(srv):
    return os.path.exists(os.path.join(srv.maildir(DEMO_USER), INDEX_TEMP_NAME))


# ---------------------------------------------------------------------------------------------
# A QUIT whose commit fails


COMMIT_FAULTS = {
    # name: (rules, DELEs applied anyway, Seen renames applied anyway, index rewrite fails)
    "unlink_eio": ((("unlink", "EIO", "/cur/"),), False, True, False),
    "cur_fsync_eio": ((("fsync", "EIO", "/cur"),), True, True, False),
    "seen_rename_eio": ((("rename", "EIO", "/cur/"),), True, False, False),
    "index_create_enospc": ((("open", "ENOSPC", INDEX_TEMP_NAME),), True, True, True),
    "index_write_enospc": ((("write", "ENOSPC", INDEX_TEMP_NAME),), True, True, True),
    "index_fsync_eio": ((("fsync", "EIO", INDEX_TEMP_NAME),), True, True, True),
    "index_rename_eio": ((("rename", "EIO", INDEX_TEMP_NAME),), True, True, True),
}


@pytest.mark.parametrize("fault", sorted(COMMIT_FAULTS))
def test_failed_quit_commit_loses_nothing(faulty_server, fault):
    srv = faulty_server
    rules, deletes_applied, seen_applied, index_fails = COMMIT_FAULTS[fault]
    sent = deliver_messages(srv, 1, 10)
    p = srv.login()
    uidls_before = uidls_by_token(p)
    p.quit()
    index_before = read_index(srv)
    assert_index_whole(index_before)

    p = srv.login()
    numbers = numbers_by_token(p)
    dele = ["m2", "m5", "m9"]
    retr = ["m3", "m4"]
    for token in retr:
        assert p.retr(numbers[token]) == to_crlf(sent[token])
    for token in dele:
        p.ok("DELE %d" % numbers[token])
    srv.faults.arm(*rules)
    r = p.cmd("QUIT")
    p.expect_closed()
    p.close()
    srv.faults.disarm()
    assert r.startswith("-ERR [SYS/TEMP] "), r

    on_disk = files_by_token(srv)
    for token, content in sent.items():
        if token in dele and deletes_applied:
            assert token not in on_disk, "%s was DELEd and unlinked, yet is there" % token
            continue
        assert token in on_disk, "%s is lost" % token
        name, data = on_disk[token]
        assert data == content, "%s changed" % token
        if token in retr:
            assert name.endswith(":2,S") == seen_applied, name
    index_after = read_index(srv)
    assert_index_whole(index_after)
    assert not index_temp_exists(srv)
    if index_fails:
        assert index_after == index_before, "a failed rewrite changed the index"

    p = srv.login()
    assert uidls_by_token(p) == {t: u for t, u in uidls_before.items() if t in on_disk}
    numbers = numbers_by_token(p)
    for token in dele:
        if token in numbers:
            p.ok("DELE %d" % numbers[token])
    assert p.quit().startswith("+OK")
    p = srv.login()
    assert sorted(uidls_by_token(p).items()) == sorted(
        (t, u) for t, u in uidls_before.items() if t not in dele)
    p.quit()


# ---------------------------------------------------------------------------------------------
# A login with new mail whose UIDs cannot be saved


@pytest.mark.parametrize("rule", [("open", "ENOSPC"), ("write", "ENOSPC"), ("fsync", "EIO"),
                                  ("rename", "EIO")], ids=lambda r: "_".join(r).lower())
def test_login_refused_while_new_uids_cannot_be_saved(faulty_server, rule):
    srv = faulty_server
    sent = deliver_messages(srv, 1, 6)
    p = srv.login()
    uidls_before = uidls_by_token(p)
    p.quit()
    index_before = read_index(srv)
    sent.update(deliver_messages(srv, 7, 3))  # new mail: the next login must number it

    srv.faults.arm(rule + (INDEX_TEMP_NAME,))
    p = srv.connect()
    p.ok("USER " + DEMO_USER)
    r = p.cmd("PASS " + DEMO_PASS)
    p.close()
    srv.faults.disarm()
    assert r.startswith("-ERR [SYS/TEMP] "), r
    assert read_index(srv) == index_before, "a failed rewrite changed the index"
    assert not index_temp_exists(srv)
    assert set(files_by_token(srv)) == set(sent)

    p = srv.login()
    uidls = uidls_by_token(p)
    p.quit()
    assert set(uidls) == set(sent)
    assert {t: uidls[t] for t in uidls_before} == uidls_before
    assert len(set(uidls.values())) == len(uidls)
    assert_index_whole(read_index(srv))


# ---------------------------------------------------------------------------------------------
# A really full filesystem


@pytest.fixture
def full_disk_server(make_server):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    srv = make_server(start=False)
    mount_point = srv.maildir(DEMO_USER)
    os.makedirs(mount_point, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mount_point],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.decode(errors="replace"))
    try:
        os.chown(mount_point, srv._uid, srv._gid)
        srv.make_maildir(DEMO_USER)
        setup_lmtp(srv, unix=False)
        yield srv
    finally:
        srv.stop(check=False)
        subprocess.run(["umount", "-l", mount_point], capture_output=True)


def fill_disk(srv):
    """Takes every free block of the Maildir's filesystem with a file that is not mail."""
    path = os.path.join(srv.maildir(DEMO_USER), "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while os.write(fd, b"\0" * 4096) > 0:
            pass
    except OSError as e:
        assert e.errno == 28, e  # ENOSPC
    finally:
        os.close(fd)
    return path


def lmtp_deliver(srv, token):
    with Lmtp(("127.0.0.1", srv.lmtp_port)) as c:
        c.lhlo()
        c.expect("MAIL FROM:<sender@example.test>", 250)
        c.expect("RCPT TO:<%s@example.test>" % DEMO_USER, 250)
        return c.data(make_message(token, b"Delivered over LMTP.\n"), 1)[0]


def deliver_command(srv, token):
    cmd = [srv.bin, "deliver", "-c", srv.conf, "-u", DEMO_USER, "-f", "sender@example.test"]
    if srv.run_as:
        cmd = ["setpriv", "--reuid=%d" % srv._uid, "--regid=%d" % srv._gid, "--clear-groups"] + cmd
    return subprocess.run(cmd, input=make_message(token, b"Delivered by buzon deliver.\n"),
                          capture_output=True, timeout=30)


def test_full_filesystem_loses_nothing_and_recovers(full_disk_server):
    srv = full_disk_server
    sent = deliver_messages(srv, 1, 12)
    p = srv.login()
    uidls_before = uidls_by_token(p)
    p.quit()

    # Full: a session that deletes may or may not manage to rewrite the index (the unlinks free
    # some space first), but it loses nothing else and leaves a whole index either way.
    filler = fill_disk(srv)
    p = srv.login()
    numbers = numbers_by_token(p)
    assert p.retr(numbers["m3"]) == to_crlf(sent["m3"])
    p.ok("DELE %d" % numbers["m1"])
    r = p.cmd("QUIT")
    assert r.startswith("+OK") or r.startswith("-ERR [SYS/TEMP] "), r
    on_disk = files_by_token(srv)
    assert "m1" not in on_disk
    assert {t: c for t, (_, c) in on_disk.items()} == {t: c for t, c in sent.items() if t != "m1"}
    assert_index_whole(read_index(srv))
    del sent["m1"], uidls_before["m1"]

    # New mail that arrived before the disk filled up cannot be numbered: the login waits.
    os.unlink(filler)
    sent.update(deliver_messages(srv, 13, 2))
    fill_disk(srv)
    index_before = read_index(srv)
    p = srv.connect()
    p.ok("USER " + DEMO_USER)
    r = p.cmd("PASS " + DEMO_PASS)
    p.close()
    assert r.startswith("-ERR [SYS/TEMP] "), r
    assert read_index(srv) == index_before
    assert not index_temp_exists(srv)

    # Delivery is refused as temporary, with the code for a full disk, and leaves nothing behind.
    code, text = lmtp_deliver(srv, "lmtpfull")
    assert (code, text[0].split()[0]) == (452, "4.3.1"), (code, text)
    r = deliver_command(srv, "deliverfull")
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert os.listdir(os.path.join(srv.maildir(DEMO_USER), "tmp")) == []
    assert set(files_by_token(srv)) == set(sent)

    # Space returns: everything works, and every UIDL shown before is unchanged.
    os.unlink(os.path.join(srv.maildir(DEMO_USER), "filler"))
    assert lmtp_deliver(srv, "lmtplater")[0] == 250
    r = deliver_command(srv, "deliverlater")
    assert r.returncode == 0, (r.returncode, r.stderr)
    p = srv.login()
    uidls = uidls_by_token(p)
    p.quit()
    assert set(uidls) == set(sent) | {"lmtplater", "deliverlater"}
    assert {t: uidls[t] for t in uidls_before} == uidls_before
    assert len(set(uidls.values())) == len(uidls)
    wait_lmtp_ready(srv)  # the LMTP side survived the full disk too
