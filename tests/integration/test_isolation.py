"""A slow mailbox open or commit runs beside the event loop: other sessions of the same worker keep
getting answers meanwhile (issue 5: no event loop blocks on disk)."""

import os
import select
import time

from buzontest import valgrind_unsuitable

BIG_MESSAGES = 20000


def _fill_new(srv, maildir, count):
    """count small messages straight into new/, as an MTA would leave them."""
    new = os.path.join(maildir, "new")
    body = b"Subject: bulk\n\nline\n"
    owner = (srv._uid, srv._gid) if srv.run_as else None
    for i in range(count):
        fd = os.open(os.path.join(new, "1700000000.M%dP1.bench" % i),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, body)
        if owner:
            os.fchown(fd, *owner)
        os.close(fd)


@valgrind_unsuitable
def test_big_first_open_does_not_stall_other_sessions(make_server):
    srv = make_server(users=(("demo", "secret"), ("big", "secret")), workers=1)
    maildir = srv.make_maildir("big")
    _fill_new(srv, maildir, BIG_MESSAGES)

    idle = srv.login("demo", "secret")
    big = srv.connect()
    big.ok("USER big")
    started = time.monotonic()
    big.send(b"PASS secret\r\n")
    # while the worker moves 20,000 files and builds the index, the idle session still answers
    worst = 0.0
    noops = 0
    while True:
        t0 = time.monotonic()
        idle.ok("NOOP")
        worst = max(worst, time.monotonic() - t0)
        noops += 1
        if big.buf or select.select([big.sock], [], [], 0)[0]:
            break
        if time.monotonic() - started > 60:
            break
        time.sleep(0.005)
    reply = big.readline()
    opened = time.monotonic() - started
    assert reply.startswith("+OK"), reply
    assert str(BIG_MESSAGES) in reply, reply
    # the open took long enough to matter, and NOOPs were answered during it, each quickly
    assert noops >= 3, (noops, opened)
    assert worst < 0.1, "a NOOP waited %.0f ms while a mailbox opened (%.0f ms)" % (
        worst * 1000, opened * 1000)
    assert big.stat()[0] == BIG_MESSAGES
    big.quit()
    idle.quit()
