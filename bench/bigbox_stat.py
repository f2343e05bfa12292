#!/usr/bin/env python3
"""Times PASS, STAT and UIDL on a big Maildir: the first login (which builds buzon-uidlist) and the
following ones (warm). A quick measurement for development; the side-by-side comparison with
Dovecot is `make bench` (issue 5).

usage: bench/bigbox_stat.py [--messages N] [--logins K] [--names plain|sized]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import buzontest  # noqa: E402


def make_mailbox(srv, count, sized):
    cur = os.path.join(srv.make_maildir("demo"), "new")
    for i in range(count):
        body = b"From: a@example.org\nSubject: message %d\n\n%s\n" % (i, b"x" * (200 + i % 300))
        name = "%d.M%dP1.bench" % (1700000000 + i, i)
        if sized:
            name += ",S=%d,W=%d" % (len(body), len(body) + body.count(b"\n"))
        with open(os.path.join(cur, name), "wb") as f:
            f.write(body)
    if srv.run_as:
        for d, _, names in os.walk(srv.maildir("demo")):
            for n in [d] + [os.path.join(d, x) for x in names]:
                os.chown(n, srv._uid, srv._gid)


def timed(conn, line, multi=False):
    start = time.perf_counter()
    if multi:
        conn.multi(line)
    else:
        conn.ok(line)
    return (time.perf_counter() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--logins", type=int, default=5)
    ap.add_argument("--names", choices=("plain", "sized"), default="plain")
    args = ap.parse_args()
    srv = buzontest.BuzonServer(settings={"auth": {"failure_delay": "0"}})
    srv.add_user("demo", buzontest.DEMO_PASS)
    make_mailbox(srv, args.messages, args.names == "sized")
    srv.start()
    try:
        rows = []
        for i in range(args.logins):
            c = srv.connect()
            c.ok("USER demo")
            t_pass = timed(c, "PASS " + buzontest.DEMO_PASS)
            t_stat = timed(c, "STAT")
            t_uidl = timed(c, "UIDL", multi=True)
            t_list = timed(c, "LIST", multi=True)
            c.quit()
            rows.append((t_pass, t_stat, t_uidl, t_list))
            print("login %d: PASS %.1f ms, STAT %.2f ms, UIDL %.1f ms, LIST %.1f ms" % (i + 1, *rows[-1]))
        warm = rows[1:]
        print("messages=%d names=%s first PASS=%.1f ms; warm median PASS=%.1f ms STAT=%.2f ms "
              "UIDL=%.1f ms" % (args.messages, args.names, rows[0][0],
                                statistics.median(r[0] for r in warm),
                                statistics.median(r[1] for r in warm),
                                statistics.median(r[2] for r in warm)))
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
