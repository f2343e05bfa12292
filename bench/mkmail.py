#!/usr/bin/python3
"""Deterministic Maildir data for `make bench`: the same users, passwords and message bytes on
every run (fixed seed), written once into a data directory outside the repository.

Layout of OUT (see bench/bench.py for how the servers use it):
  OUT/users             passwd-file read by buzon and Dovecot (`name:{SCHEME}secret`)
  OUT/mail/<user>/      one Maildir per user (cur/ new/ tmp/); messages in cur/ as a
                        previously-read mailbox: <time>.M<n>P4242.bench,S=<size>,W=<crlf size>:2,S
  OUT/stamp.json        generator version and parameters; bench.py regenerates when it differs

Sets (full / --quick):
  small   user00000.. 1000 / 50 users x 20 messages, 1-20 KB log-uniform, plain text
  big     big0 holds ~1000 / 10 messages of ~2 MiB (MIME, base64 attachment); big1..big7 see
          the same files through hard links (one maildrop lock per user, one copy in page cache)
  bigbox  bigbox0 with 100,000 / 5,000 messages of ~2 KB
  idle    idle00000.. 50,000 / 500 users in the passwd-file only (servers create the Maildir)
  hash    yes00000..yes00099 ({CRYPT} yescrypt) and sha00000..sha00099 ({SHA512-CRYPT}), no mail
Every password is `benchpw`. Messages use LF line ends, as Postfix's Maildir delivery writes
them; some body lines start with "." (a lone "." too) to exercise dot-stuffing.

usage: /usr/bin/python3 bench/mkmail.py OUT [--quick] [--owner UID:GID] [--check]
  --check   print whether OUT already holds this version's data (exit 0) or not (exit 1)
"""
import argparse
import base64
import json
import math
import os
import random
import shutil
import sys
import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated in 3.11, still the only stdlib binding of crypt(3)

VERSION = 1  # bump when the bytes written change
SEED = 20261126
PASSWORD = "benchpw"
DOMAIN = "bench.test"
PID_TAG = 4242  # the P<pid> part of every generated file name
TIME_BASE = 1700000000  # 2023-11-14 22:13:20 UTC, the first message's time

FULL = {
    "small_users": 1000,
    "small_messages": 20,
    "small_min": 1024,
    "small_max": 20 * 1024,
    "big_messages": 1000,
    "big_size": 2 * 1024 * 1024,
    "big_users": 8,
    "bigbox_messages": 100000,
    "bigbox_size": 2048,
    "idle_users": 50000,
    "hash_users": 100,
}
QUICK = dict(FULL, small_users=50, big_messages=10, bigbox_messages=5000, idle_users=500,
             hash_users=20)

SMALL_FMT = "user%05d"
BIG_FMT = "big%d"
BIGBOX_USER = "bigbox0"
IDLE_FMT = "idle%05d"
YES_FMT = "yes%05d"
SHA_FMT = "sha%05d"

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more can out up about into them some could other time these two may then do first any my now "
    "such like our over man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under never day "
    "same another know while last might us great old year off come since against go came right "
    "invoice meeting report budget server mailbox delivery quarterly schedule attached please "
    "regards thanks tomorrow review draft project deadline update customer order shipment"
).split()
FIRST = "Ana Bruno Carla Diego Elena Felipe Gloria Hugo Ines Jorge Karla Luis Marta Nico Olga".split()
LAST = "Garcia Lopez Martin Perez Sanchez Romero Navarro Torres Ruiz Diaz Moreno Alonso".split()
DOMAINS = "example.org example.com example.net mail.example.es lists.example.org".split()
DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


class Pools:
    """Pre-built text so that a message is a few random picks rather than one per word."""

    def __init__(self, rng):
        lines = []
        for i in range(20000):
            width = rng.choice((0, 12, 30, 50, 64, 72, 72, 76, 78, 120, 200))
            words = []
            n = 0
            while n < width:
                w = rng.choice(WORDS)
                words.append(w)
                n += len(w) + 1
            line = " ".join(words).encode()
            r = rng.random()
            if r < 0.01:
                line = b"."  # would end the message if the server forgot to stuff it
            elif r < 0.03:
                line = b"." + line
            elif r < 0.04:
                line = b".." + line
            lines.append(line + b"\n")
        self.lines = lines
        raw = rng.randbytes(3 * 1024 * 1024)
        b64 = base64.b64encode(raw)
        self.b64 = b"".join(b64[i:i + 76] + b"\n" for i in range(0, len(b64), 76))
        self.b64_line = 77


def rfc5322_date(t):
    tm = time.gmtime(t)
    return "%s, %02d %s %d %02d:%02d:%02d +0000" % (
        DAYS[tm.tm_wday], tm.tm_mday, MONTHS[tm.tm_mon - 1], tm.tm_year, tm.tm_hour, tm.tm_min,
        tm.tm_sec)


def headers(rng, user, t, seq, extra=""):
    name = "%s %s" % (rng.choice(FIRST), rng.choice(LAST))
    addr = "%s.%s@%s" % (name.split()[0].lower(), name.split()[1].lower(), rng.choice(DOMAINS))
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))).capitalize()
    h = (
        "Return-Path: <{addr}>\n"
        "Delivered-To: {user}@{dom}\n"
        "Received: from mx{mx}.example.org (mx{mx}.example.org [192.0.2.{mx}])\n"
        "\tby mail.{dom} (Postfix) with ESMTPS id {qid:X}\n"
        "\tfor <{user}@{dom}>; {date}\n"
        "From: {name} <{addr}>\n"
        "To: {user}@{dom}\n"
        "Subject: {subject}\n"
        "Date: {date}\n"
        "Message-ID: <{t}.{seq}.{qid:x}@{host}>\n"
        "MIME-Version: 1.0\n"
        "{extra}"
    ).format(addr=addr, user=user, dom=DOMAIN, mx=rng.randint(1, 9), qid=rng.getrandbits(40),
             date=rfc5322_date(t), name=name, subject=subject, t=t, seq=seq,
             host=addr.split("@")[1], extra=extra)
    return h.encode()


def text_message(rng, pools, user, t, seq, size):
    head = headers(rng, user, t, seq, "Content-Type: text/plain; charset=utf-8\n"
                                      "Content-Transfer-Encoding: 8bit\n") + b"\n"
    parts = [head]
    n = len(head)
    lines = pools.lines
    while n < size:
        line = lines[rng.randrange(len(lines))]
        parts.append(line)
        n += len(line)
    return b"".join(parts)


def big_message(rng, pools, user, t, seq, size):
    boundary = "=_bench_%d_%d" % (t, seq)
    head = headers(rng, user, t, seq, 'Content-Type: multipart/mixed; boundary="%s"\n' % boundary)
    intro = b"".join(pools.lines[rng.randrange(len(pools.lines))] for _ in range(12))
    pre = (head + b"\nThis is a multi-part message in MIME format.\n\n--" + boundary.encode()
           + b"\nContent-Type: text/plain; charset=utf-8\n\n" + intro + b"\n--" + boundary.encode()
           + b"\nContent-Type: application/octet-stream; name=\"scan%d.bin\"\n"
             b"Content-Transfer-Encoding: base64\n"
             b"Content-Disposition: attachment; filename=\"scan%d.bin\"\n\n" % (seq, seq))
    post = b"\n--" + boundary.encode() + b"--\n"
    want = max(0, size - len(pre) - len(post))
    nlines = want // pools.b64_line
    total_lines = len(pools.b64) // pools.b64_line
    start = rng.randrange(total_lines - nlines) if total_lines > nlines else 0
    body = pools.b64[start * pools.b64_line:(start + nlines) * pools.b64_line]
    return pre + body + post


def maildir_create(root, user, owner):
    top = os.path.join(root, "mail", user)
    for sub in ("", "cur", "new", "tmp"):
        p = os.path.join(top, sub)
        os.makedirs(p, exist_ok=True)
        if owner:
            os.chown(p, *owner)
    return top


def file_name(t, n, data):
    return "%d.M%dP%d.bench,S=%d,W=%d:2,S" % (t, n, PID_TAG, len(data), len(data) + data.count(b"\n"))


def write_file(path, data, owner, t):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    os.utime(path, (t, t))


def gen_small(root, p, pools, rng, owner):
    total = 0
    lo, hi = math.log(p["small_min"]), math.log(p["small_max"])
    for u in range(p["small_users"]):
        user = SMALL_FMT % u
        cur = os.path.join(maildir_create(root, user, owner), "cur")
        for m in range(p["small_messages"]):
            t = TIME_BASE + u * 1000 + m * 37
            data = text_message(rng, pools, user, t, m, int(math.exp(rng.uniform(lo, hi))))
            write_file(os.path.join(cur, file_name(t, m, data)), data, owner, t)
            total += len(data)
    return total


def gen_big(root, p, pools, rng, owner):
    total = 0
    first = os.path.join(maildir_create(root, BIG_FMT % 0, owner), "cur")
    names = []
    for m in range(p["big_messages"]):
        t = TIME_BASE + m * 61
        size = int(p["big_size"] * rng.uniform(0.8, 1.2))
        data = big_message(rng, pools, BIG_FMT % 0, t, m, size)
        name = file_name(t, m, data)
        write_file(os.path.join(first, name), data, owner, t)
        names.append(name)
        total += len(data)
    for u in range(1, p["big_users"]):
        cur = os.path.join(maildir_create(root, BIG_FMT % u, owner), "cur")
        for name in names:
            os.link(os.path.join(first, name), os.path.join(cur, name))
    return total


def gen_bigbox(root, p, pools, rng, owner):
    total = 0
    cur = os.path.join(maildir_create(root, BIGBOX_USER, owner), "cur")
    size = p["bigbox_size"]
    for m in range(p["bigbox_messages"]):
        t = TIME_BASE + m * 7
        data = text_message(rng, pools, BIGBOX_USER, t, m, int(size * rng.uniform(0.75, 1.25)))
        write_file(os.path.join(cur, file_name(t, m, data)), data, owner, t)
        total += len(data)
    return total


def yescrypt_setting(rng):
    """A `$y$j9T$<salt>$` setting (the Debian default cost) that libxcrypt accepts."""
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    for _ in range(100):
        # 22 characters encode 16 bytes; the last one carries 2 bits, so it is one of "./01"
        salt = "".join(rng.choice(alphabet) for _ in range(21)) + rng.choice("./01")
        setting = "$y$j9T$%s$" % salt
        if not crypt.crypt(PASSWORD, setting).startswith("*"):
            return setting
    raise RuntimeError("libxcrypt refuses every yescrypt salt: no yescrypt support?")


def sha512_setting(rng):
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "$6$%s$" % "".join(rng.choice(alphabet) for _ in range(16))


def hash_of(setting):
    h = crypt.crypt(PASSWORD, setting)
    if not h or h.startswith("*"):
        raise RuntimeError("crypt(3) failed for setting %r" % setting)
    return h


def write_users(root, p, rng, owner):
    lines = []
    for u in range(p["small_users"]):
        lines.append("%s:{PLAIN}%s\n" % (SMALL_FMT % u, PASSWORD))
    for u in range(p["big_users"]):
        lines.append("%s:{PLAIN}%s\n" % (BIG_FMT % u, PASSWORD))
    lines.append("%s:{PLAIN}%s\n" % (BIGBOX_USER, PASSWORD))
    for u in range(p["idle_users"]):
        lines.append("%s:{PLAIN}%s\n" % (IDLE_FMT % u, PASSWORD))
    for u in range(p["hash_users"]):
        lines.append("%s:{CRYPT}%s\n" % (YES_FMT % u, hash_of(yescrypt_setting(rng))))
    for u in range(p["hash_users"]):
        lines.append("%s:{SHA512-CRYPT}%s\n" % (SHA_FMT % u, hash_of(sha512_setting(rng))))
    path = os.path.join(root, "users")
    with open(path, "w") as f:
        f.writelines(lines)
    os.chmod(path, 0o644)  # Dovecot's auth process runs as `dovecot`, buzon's as the mail user
    if owner:
        os.chown(path, *owner)
    for u in range(p["hash_users"]):
        maildir_create(root, YES_FMT % u, owner)
        maildir_create(root, SHA_FMT % u, owner)


def stamp_for(p):
    return {"version": VERSION, "seed": SEED, "params": p}


def stamp_matches(out, p):
    try:
        with open(os.path.join(out, "stamp.json")) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return False
    return all(old.get(k) == v for k, v in stamp_for(p).items())


def generate(out, p, owner):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "mail"))
    os.chmod(out, 0o755)
    if owner:
        os.chown(os.path.join(out, "mail"), *owner)
    rng = random.Random(SEED)
    pools = Pools(rng)
    sets = {}
    t0 = time.monotonic()
    # each set has its own generator so that changing one set's size leaves the others' bytes
    sets["small_bytes"] = gen_small(out, p, pools, random.Random(SEED + 1), owner)
    sets["big_bytes"] = gen_big(out, p, pools, random.Random(SEED + 2), owner)
    sets["bigbox_bytes"] = gen_bigbox(out, p, pools, random.Random(SEED + 3), owner)
    write_users(out, p, random.Random(SEED + 4), owner)
    stamp = stamp_for(p)
    stamp.update(sets)
    stamp["seconds"] = round(time.monotonic() - t0, 1)
    with open(os.path.join(out, "stamp.json"), "w") as f:
        json.dump(stamp, f, indent=1)
    return stamp


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--owner", help="UID:GID to own the Maildirs and the passwd-file")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    p = QUICK if args.quick else FULL
    if args.check:
        ok = stamp_matches(args.out, p)
        print("up to date" if ok else "missing or stale")
        return 0 if ok else 1
    owner = tuple(int(x) for x in args.owner.split(":")) if args.owner else None
    stamp = generate(args.out, p, owner)
    print("generated in %.1f s: small %.1f MB (%d users x %d), big %.1f MB (%d messages, %d users), "
          "bigbox %.1f MB (%d messages), %d idle users, %d+%d hash users"
          % (stamp["seconds"], stamp["small_bytes"] / 1e6, p["small_users"], p["small_messages"],
             stamp["big_bytes"] / 1e6, p["big_messages"], p["big_users"],
             stamp["bigbox_bytes"] / 1e6, p["bigbox_messages"], p["idle_users"], p["hash_users"],
             p["hash_users"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
