"""A full disk is a temporary failure for the recipient on it (451 4.x.x over LMTP, exit 75 from
buzon deliver); other recipients still get the message, nothing partial is left in new/, and
delivery works again once there is space. Uses a small tmpfs mounted as one user's Maildir (needs
root, as CI has)."""

import os
import subprocess

import pytest

from buzontest import DEMO_PASS
from lmtptest import Lmtp, delivered, lmtp_targets, msg, setup_lmtp

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def full_server(make_server):
    srv = make_server(users=(("demo", DEMO_PASS), ("full", DEMO_PASS)), start=False)
    mount_point = srv.maildir("full")
    os.makedirs(mount_point, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", mount_point],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.decode(errors="replace"))
    try:
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(mount_point, sub), exist_ok=True)
        if srv.run_as:
            for d in [mount_point] + [os.path.join(mount_point, s) for s in ("cur", "new", "tmp")]:
                os.chown(d, srv._uid, srv._gid)
        setup_lmtp(srv, unix=False)
        srv.full_mount = mount_point
        yield srv
    finally:
        srv.stop(check=False)
        subprocess.run(["umount", "-l", mount_point], capture_output=True)


def big_message(token, size=300 * 1024):
    return msg(token, body=(b"x" * 76 + b"\n") * (size // 77))


@needs_root
def test_lmtp_disk_full_is_temporary_and_others_still_get_it(full_server):
    srv = full_server
    target = lmtp_targets(srv)[0]
    with Lmtp(target) as c:
        c.lhlo()
        c.expect("MAIL FROM:<sender@example.test>", 250)
        c.expect("RCPT TO:<full@example.test>", 250)
        c.expect("RCPT TO:<demo@example.test>", 250)
        replies = c.data(big_message("disk-full-1"), 2)
    assert 400 <= replies[0][0] < 500, replies  # full: retry later, never a bounce
    assert replies[0][1][0].startswith("4."), replies  # with an enhanced status code
    assert replies[1][0] == 250, replies
    assert delivered(srv, "full") == [] or all(b"disk-full-1" not in open(p, "rb").read()
                                                for p in delivered(srv, "full"))
    assert len(delivered(srv, "demo")) == 1
    assert os.listdir(os.path.join(srv.full_mount, "new")) == []
    # a small message still fits
    with Lmtp(target) as c:
        c.lhlo()
        c.expect("MAIL FROM:<sender@example.test>", 250)
        c.expect("RCPT TO:<full@example.test>", 250)
        assert c.data(msg("small-one"), 1)[0][0] == 250


@needs_root
def test_deliver_command_disk_full_exits_75(full_server):
    srv = full_server
    cmd = [srv.bin, "deliver", "-c", srv.conf, "-u", "full", "-f", "sender@example.test"]
    if srv.run_as:
        cmd = ["setpriv", "--reuid=%d" % srv._uid, "--regid=%d" % srv._gid, "--clear-groups"] + cmd
    r = subprocess.run(cmd, input=big_message("disk-full-2"), capture_output=True, timeout=30)
    assert r.returncode == 75, (r.returncode, r.stderr)
    assert os.listdir(os.path.join(srv.full_mount, "new")) == []
    # space returns (a bigger mount): the same delivery succeeds
    subprocess.run(["mount", "-o", "remount,size=2m", srv.full_mount], check=True)
    r = subprocess.run(cmd, input=big_message("disk-full-3"), capture_output=True, timeout=30)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert len(os.listdir(os.path.join(srv.full_mount, "new"))) == 1
