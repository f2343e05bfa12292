#!/usr/bin/python3
"""Soak test: buzon under mixed load for DURATION seconds, then the mail invariants.

One server on loopback in a temporary directory, with a plain and an implicit-TLS POP3 listener and
LMTP over TCP. The load, all at once:
  - two bench/loadgen runs in `mixed` mode, one plain and one TLS, each on its own users with
    20 seeded messages apiece and its own LMTP deliveries: 70 % of sessions check (STAT, UIDL), 25 %
    download what arrived (RETR, DELE, QUIT), 5 % fetch everything and keep it;
  - ledger clients in Python threads on users of their own: one delivers over LMTP (some messages
    to two recipients) and records every message the server acknowledged with 250; two POP3
    clients, one plain and one TLS, alternate sessions that keep mail (downloading only UIDLs they
    have not seen, as a keep-mail client does) and sessions that RETR and DELE everything, and
    record the deletions of every session whose QUIT got +OK. Every RETR is compared byte for byte
    with what was delivered, and every UIDL must stay attached to one message;
  - a sampler that reads the PSS of every buzon process every few seconds;
  - with --reload-every S, a `buzon reload` every S seconds: each reload starts a new generation of
    children and retires the old one under the load, which must cost no session and no error.

Afterwards the server gets SIGTERM and must exit 0 within 10 s without a sanitizer report, and:
  - ledger users: every acknowledged delivery is in the Maildir exactly once with exactly the
    delivered bytes (and sizes in its name that match), unless a session that got +OK for QUIT
    deleted it, in which case it is gone; nothing else is there;
  - loadgen users: every seeded message is still there, and the messages each loadgen delivered
    that remain are its deliveries minus its deletions, each once (by Message-ID) and complete;
  - no client reported an error and the server logged no line at level error.

It prints a summary whose last line is `soak: 1 passed, 0 failed` (or `0 passed, 1 failed`), and
exits 0 only when it passed.

usage: /usr/bin/python3 scripts/soak.py [--duration S] [--build DIR] [--workers N]
                                        [--reload-every S] [--keep]
  Runs as root (the server drops to nobody, like the tests) or as an ordinary user.
  BUZON_BIN overrides DIR/buzon; the load generator is DIR/bench/loadgen (make bench-tools).
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "bench"))

from buzontest import BuzonServer, Closed, free_port, group_processes, process_pss_kb, retr_expected  # noqa: E402
from lmtptest import Lmtp, LmtpClosed, check_name_sizes, setup_lmtp, start_lmtp, stored_expected  # noqa: E402
from tlstest import TPop3, client_context, install_pki, wait_tls_ready  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import mkmail  # noqa: E402  (seeded messages: the benchmark's generator)

PASSWORD = "soakpw"

# loadgen users: user00000.. (plain run) and user<LOADGEN_USERS>.. (TLS run), each with SEEDED
# messages; one session per user at a time, so concurrency stays below the user count.
LOADGEN_USERS = 24
SEEDED = 20
LOADGEN_CONCURRENCY = {"plain": 6, "tls": 4}
LOADGEN_LMTP_RATE = 10.0  # messages per second per loadgen run

# ledger users, split between the plain and the TLS POP3 client
LEDGER_USERS = 8
LEDGER_DELIVERY_RATE = 10.0  # LMTP transactions per second
LEDGER_TWO_RECIPIENTS = 0.25  # share of transactions addressed to two ledger users
LEDGER_BIG_SHARE = 0.01  # share of messages of about 512 KB rather than 1-30 KB
LEDGER_KEEP_SESSIONS = 2  # keep-mail sessions per deleting session
LEDGER_PAUSE_S = 0.05  # between one POP3 client's sessions

SAMPLE_INTERVAL_S = 5.0
PROGRESS_INTERVAL_S = 30.0
IO_TIMEOUT = 30.0
SENDER = "soak@example.org"


def log(text):
    print("soak: " + text, flush=True)


# ---------------------------------------------------------------------------------------------
# The server


def make_server(args, base):
    """A BuzonServer (tests/buzontest.py) with plain and implicit-TLS POP3 and LMTP over TCP."""
    settings = {
        "server": {"log_level": "warn"},
        "pop3": {"max_prelogin_per_ip": "1000", "max_sessions_per_ip": "1000",
                 "max_connections": "5000"},
        # a directory of its own: the auth process needs to read nothing else
        "auth": {"ban_failures": "0", "passwd_file": os.path.join(base, "auth", "users")},
    }
    os.makedirs(os.path.join(base, "auth"))
    os.chmod(base, 0o755)
    srv = BuzonServer(base=base, settings=settings, workers=args.workers)
    if srv.run_as:
        os.chown(os.path.join(base, "auth"), srv._uid, srv._gid)
    pki = install_pki(srv)
    srv.ca = pki["ca.pem"]
    srv.settings["tls"] = {"cert": pki["server.pem"], "key": pki["server.key"]}
    srv.tls_port = free_port()
    while srv.tls_port == srv.port:
        srv.tls_port = free_port()
    srv.settings["pop3"]["listen_tls"] = "127.0.0.1:%d" % srv.tls_port
    setup_lmtp(srv, tcp=True, unix=False, start=False)
    while srv.lmtp_port == srv.tls_port:
        srv.lmtp_port = free_port()
    srv.settings["lmtp"]["listen"] = "127.0.0.1:%d" % srv.lmtp_port
    return srv


def loadgen_user(number):
    return "user%05d" % number


def ledger_user(number):
    return "ledger%02d" % number


def seed_loadgen_users(srv):
    """SEEDED messages per loadgen user, already read (cur/, :2,S), as mkmail.py writes them."""
    rng = random.Random(mkmail.SEED)
    pools = mkmail.Pools(rng)
    owner = (srv._uid, srv._gid) if srv.run_as else None
    for u in range(2 * LOADGEN_USERS):
        user = loadgen_user(u)
        cur = os.path.join(srv.make_maildir(user), "cur")
        for m in range(SEEDED):
            t = mkmail.TIME_BASE + u * 1000 + m * 37
            size = int(rng.uniform(1024, 20 * 1024))
            data = mkmail.text_message(rng, pools, user, t, m, size)
            mkmail.write_file(os.path.join(cur, mkmail.file_name(t, m, data)), data, owner, t)


def add_users(srv):
    """All users in one passwd-file write (one `buzon user add` per user would take a while)."""
    names = [loadgen_user(u) for u in range(2 * LOADGEN_USERS)]
    names += [ledger_user(u) for u in range(LEDGER_USERS)]
    path = srv.settings["auth"]["passwd_file"]
    with open(path, "w") as f:
        f.writelines("%s:{PLAIN}%s\n" % (name, PASSWORD) for name in names)
    os.chmod(path, 0o600)
    srv.own_passwd_file()


def prime_mailboxes(srv):
    """One login per loadgen user before any delivery, so the seeded messages take UIDs (and
    message numbers) 1..SEEDED, which loadgen's downloads never delete."""
    for u in range(2 * LOADGEN_USERS):
        c = TPop3(srv.port)
        c.login(loadgen_user(u), PASSWORD)
        count, _ = c.stat()
        assert count == SEEDED, "%s: %d messages after seeding" % (loadgen_user(u), count)
        c.quit()
        c.close()


def total_pss_kb(srv):
    """The PSS of all the server's processes together (one that just ended counts 0)."""
    return sum(process_pss_kb(pid) or 0 for pid, _ in group_processes(srv.proc.pid))


class MemorySampler(threading.Thread):
    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv = srv
        self.samples = []  # (seconds since start, KiB)
        self.started = time.monotonic()
        self.stopping = threading.Event()

    def sample(self):
        self.samples.append((time.monotonic() - self.started, total_pss_kb(self.srv)))

    def run(self):
        while not self.stopping.wait(SAMPLE_INTERVAL_S):
            self.sample()


# ---------------------------------------------------------------------------------------------
# The ledger


class Ledger:
    """What the ledger clients delivered and deleted. Keys are (user, soak id)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending = {}  # sent, not yet acknowledged: stored bytes
        self.acked = {}  # acknowledged with 250: stored bytes
        self.unsure = set()  # the client cannot know (a reply went missing): an error already
        self.deleted = set()  # deleted by a session whose QUIT got +OK
        self.uidl_of = {}  # (user, id) -> UIDL
        self.id_of = {}  # (user, UIDL) -> id
        self.errors = []
        self.sessions = 0
        self.transactions = 0
        self.retrieved = 0

    def error(self, text):
        with self.lock:
            self.errors.append(text)
        if len(self.errors) <= 20:
            log("ledger error: " + text)

    def stored(self, key):
        with self.lock:
            return self.acked.get(key) or self.pending.get(key)


class Stoppable(threading.Thread):
    def __init__(self, ledger, deadline):
        super().__init__(daemon=True)
        self.ledger = ledger
        self.deadline = deadline
        self.stopping = threading.Event()

    def running(self):
        return not self.stopping.is_set() and time.monotonic() < self.deadline


def soak_message(rng, soak_id):
    """A message that says who it is (X-Soak-Id), with dot-led lines for transparency and a size
    from 1 KB to 30 KB (sometimes about 512 KB)."""
    size = 512 * 1024 if rng.random() < LEDGER_BIG_SHARE else rng.randint(1024, 30 * 1024)
    lines = [b"From: Soak <%s>" % SENDER.encode(), b"To: ledger users <ledger@soak.test>",
             b"Subject: soak message %d" % soak_id, b"Message-ID: <soak.%d@soak.test>" % soak_id,
             b"X-Soak-Id: %d" % soak_id, b""]
    total = 0
    while total < size:
        line = b"%d %s" % (total, hashlib.sha256(b"%d.%d" % (soak_id, total)).hexdigest().encode())
        if rng.random() < 0.05:
            line = b"." + line
        elif rng.random() < 0.01:
            line = b"."
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines) + b"\n"


class LedgerDeliverer(Stoppable):
    """LMTP transactions at LEDGER_DELIVERY_RATE over one connection (reconnecting after a
    failure); every recipient that gets 250 after DATA is recorded as acknowledged."""

    def __init__(self, ledger, deadline, target):
        super().__init__(ledger, deadline)
        self.target = target
        self.rng = random.Random(7)
        self.conn = None

    def run(self):
        next_id = 1
        due = time.monotonic()
        while self.running():
            due += 1.0 / LEDGER_DELIVERY_RATE
            try:
                self.transaction(next_id)
            except (OSError, LmtpClosed, AssertionError) as e:
                self.ledger.error("LMTP transaction %d: %r" % (next_id, e))
                self.close()
            next_id += 1
            self.stopping.wait(max(0.0, due - time.monotonic()))
        if self.conn is not None:
            try:
                self.conn.cmd("QUIT")
            except (OSError, LmtpClosed, AssertionError):
                pass
        self.close()

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def transaction(self, soak_id):
        count = 2 if self.rng.random() < LEDGER_TWO_RECIPIENTS else 1
        users = self.rng.sample(range(LEDGER_USERS), count)
        rcpts = [ledger_user(u) for u in users]
        message = soak_message(self.rng, soak_id)
        if self.conn is None:
            self.conn = Lmtp(self.target, timeout=IO_TIMEOUT)
            self.conn.lhlo("soak.test")
        self.conn.expect("MAIL FROM:<%s>" % SENDER, 250)
        for rcpt in rcpts:
            self.conn.expect("RCPT TO:<%s>" % rcpt, 250)
        keys = [(rcpt, soak_id) for rcpt in rcpts]
        with self.ledger.lock:
            for rcpt, key in zip(rcpts, keys):
                self.ledger.pending[key] = stored_expected(message, SENDER, rcpt if count == 1 else None)
        replies = self.conn.data(message, count)
        with self.ledger.lock:
            self.ledger.transactions += 1
            for key, reply in zip(keys, replies):
                stored = self.ledger.pending.pop(key)
                if reply[0] == 250:
                    self.ledger.acked[key] = stored
                else:
                    self.ledger.unsure.add(key)  # a 4xx/5xx may still leave nothing: checked
            for key in keys[len(replies):]:
                del self.ledger.pending[key]
                self.ledger.unsure.add(key)
        bad = [r for r in replies if r[0] != 250]
        if bad or len(replies) != count:
            raise AssertionError("DATA replies %r for %d recipients" % (replies, count))


class LedgerReader(Stoppable):
    """POP3 sessions over one transport on its own ledger users: LEDGER_KEEP_SESSIONS sessions
    that keep mail, then one that RETRs and DELEs everything."""

    def __init__(self, ledger, deadline, srv, users, tls):
        super().__init__(ledger, deadline)
        self.srv = srv
        self.users = users
        self.port = srv.tls_port if tls else srv.port
        self.context = client_context(srv.ca) if tls else None
        self.name = "TLS" if tls else "plain"
        self.known = {user: set() for user in users}  # UIDLs a keep-mail client has downloaded

    def run(self):
        turn = 0
        while self.running():
            user = self.users[turn % len(self.users)]
            deleting = (turn // len(self.users)) % (LEDGER_KEEP_SESSIONS + 1) == LEDGER_KEEP_SESSIONS
            try:
                self.session(user, deleting)
            except (OSError, Closed, AssertionError) as e:
                self.ledger.error("%s POP3 session of %s: %r" % (self.name, user, e))
            turn += 1
            self.stopping.wait(LEDGER_PAUSE_S)

    def session(self, user, deleting):
        c = TPop3(self.port, context=self.context, timeout=IO_TIMEOUT)
        try:
            c.login(user, PASSWORD)
            uidls = c.uidl()
            retrieved = {}
            for n, uidl in sorted(uidls.items()):
                if not deleting and uidl in self.known[user]:
                    continue
                retrieved[n] = self.check_message(user, uidl, c.retr(n))
            deletions = []
            if deleting:
                for n in sorted(uidls):
                    c.ok("DELE %d" % n)
                    deletions.append((user, retrieved[n]))
            try:
                reply = c.cmd("QUIT")
            except (OSError, Closed) as e:
                reply = repr(e)
        finally:
            c.close()
        with self.ledger.lock:
            self.ledger.sessions += 1
            self.ledger.retrieved += len(retrieved)
        if not reply.startswith("+OK"):
            # the deletions may or may not have been committed: the client cannot know
            with self.ledger.lock:
                self.ledger.unsure.update(deletions)
            raise AssertionError("QUIT -> %s" % reply)
        with self.ledger.lock:
            self.ledger.deleted.update(deletions)
        self.known[user].update(uidls[n] for n in retrieved)

    def check_message(self, user, uidl, content):
        """The soak id of a retrieved message, after checking its bytes and its UIDL."""
        m = re.search(rb"^X-Soak-Id: (\d+)\r$", content, re.M)
        assert m, "%s UIDL %s: no X-Soak-Id in %r" % (user, uidl, content[:200])
        key = (user, int(m.group(1)))
        stored = self.ledger.stored(key)
        assert stored is not None, "%s: message %d was never delivered to this user" % key
        assert content == retr_expected(stored), "%s: message %d differs from what was delivered" % key
        with self.ledger.lock:
            first_uidl = self.ledger.uidl_of.setdefault(key, uidl)
            first_id = self.ledger.id_of.setdefault((user, uidl), key[1])
        assert first_uidl == uidl, "%s: message %d had UIDL %s, now %s" % (user, key[1], first_uidl, uidl)
        assert first_id == key[1], "%s: UIDL %s was message %d, now %d" % (user, uidl, first_id, key[1])
        return key[1]


# ---------------------------------------------------------------------------------------------
# loadgen


def start_loadgen(args, srv, kind, duration):
    first = 0 if kind == "plain" else LOADGEN_USERS
    cmd = [args.loadgen, "--mode", "mixed", "--port", str(srv.tls_port if kind == "tls" else srv.port),
           "--password", PASSWORD, "--user-format", "user%05u", "--user-first", str(first),
           "--user-count", str(LOADGEN_USERS), "--threads", "1",
           "--concurrency", str(LOADGEN_CONCURRENCY[kind]), "--duration", str(duration),
           "--seeded", str(SEEDED), "--seed", "1" if kind == "plain" else "2",
           "--lmtp-port", str(srv.lmtp_port), "--lmtp-rate", str(LOADGEN_LMTP_RATE),
           "--timeout", str(duration + 120)]
    if kind == "tls":
        cmd.insert(1, "--tls")
    out = open(os.path.join(srv.base, "loadgen-%s.out" % kind), "w+b")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), out


def finish_loadgen(proc, out, duration):
    try:
        proc.wait(duration + 180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out.seek(0)
    text = out.read().decode("utf-8", "replace")
    out.close()
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if not lines:
        return None, text
    return json.loads(lines[-1]), text


# ---------------------------------------------------------------------------------------------
# The invariants


def maildir_messages(srv, user):
    """[(file name, content)] of user's new/ and cur/."""
    out = []
    md = srv.maildir(user)
    for sub in ("new", "cur"):
        d = os.path.join(md, sub)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            with open(os.path.join(d, name), "rb") as f:
                out.append((name, f.read()))
    return out


def check_ledger(srv, ledger):
    """Problems with the ledger users' Maildirs; returns (problems, messages present)."""
    problems = []
    present = {}
    for u in range(LEDGER_USERS):
        user = ledger_user(u)
        for name, content in maildir_messages(srv, user):
            m = re.search(rb"^X-Soak-Id: (\d+)$", content, re.M)
            if not m:
                problems.append("%s: %s is not a soak message" % (user, name))
                continue
            key = (user, int(m.group(1)))
            if key in present:
                problems.append("%s: message %d is there twice (%s, %s)" % (user, key[1], present[key], name))
            present[key] = name
            if name.split(":")[0].count(",S=") == 0:
                problems.append("%s: %s has no ,S= size" % (user, name))
            else:
                try:
                    check_name_sizes(name, content)
                except AssertionError as e:
                    problems.append(str(e))
            stored = ledger.acked.get(key)
            if stored is None:
                if key not in ledger.unsure:
                    problems.append("%s: message %d is there but was never acknowledged" % key)
            elif content != stored:
                problems.append("%s: message %d is not what was delivered" % key)
            if key in ledger.deleted:
                problems.append("%s: message %d is there after a committed DELE" % key)
    for key in ledger.acked:
        if key not in present and key not in ledger.deleted and key not in ledger.unsure:
            problems.append("%s: acknowledged message %d is lost" % key)
    return problems, len(present)


LOADGEN_ID = re.compile(rb"^Message-ID: <loadgen\.(\d+)\.(\d+)\.(\d+)@example\.org>$", re.M)


def check_loadgen_users(srv, kind, report):
    """Problems with one loadgen run's users; returns (problems, its messages present)."""
    problems = []
    first = 0 if kind == "plain" else LOADGEN_USERS
    seed = b"1" if kind == "plain" else b"2"
    seeded = 0
    seen = {}
    for u in range(first, first + LOADGEN_USERS):
        user = loadgen_user(u)
        for name, content in maildir_messages(srv, user):
            if "P%d.bench," % mkmail.PID_TAG in name:
                seeded += 1
                continue
            m = LOADGEN_ID.search(content)
            if not m or m.group(1) != seed:
                problems.append("%s: unexpected message %s" % (user, name))
                continue
            if m.group(0) in seen:
                problems.append("%s: %s is there twice" % (user, m.group(0).decode()))
            seen[m.group(0)] = name
            # loadgen bodies are whole lines "... the lazy dog"; a cut file ends elsewhere
            if not content.endswith(b"lazy dog\n"):
                problems.append("%s: %s is incomplete" % (user, name))
            try:
                check_name_sizes(name, content)
            except AssertionError as e:
                problems.append(str(e))
    if seeded != SEEDED * LOADGEN_USERS:
        problems.append("%s: %d seeded messages left of %d" % (kind, seeded, SEEDED * LOADGEN_USERS))
    if report is not None and len(seen) != report["deliveries"] - report["deleted"]:
        problems.append("%s: %d delivered messages left; delivered %d, deleted %d" % (
            kind, len(seen), report["deliveries"], report["deleted"]))
    return problems, len(seen)


# ---------------------------------------------------------------------------------------------
# The run


def run(args):
    # Under AddressSanitizer freed memory waits in a 256 MB quarantine per process, so the memory
    # curve would show churn rather than use; a small one keeps it meaningful (a build without
    # ASan ignores the variable).
    if "quarantine_size_mb" not in os.environ.get("ASAN_OPTIONS", ""):
        os.environ["ASAN_OPTIONS"] = ":".join(filter(None, (
            os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=1:thread_local_quarantine_size_kb=64")))
    base = tempfile.mkdtemp(prefix="buzon-soak-")
    srv = make_server(args, base)
    add_users(srv)
    log("seeding %d users with %d messages each in %s" % (2 * LOADGEN_USERS, SEEDED, base))
    seed_loadgen_users(srv)
    for u in range(LEDGER_USERS):
        srv.make_maildir(ledger_user(u))
    loadgens = {}
    try:
        start_lmtp(srv)
        wait_tls_ready(srv)
        prime_mailboxes(srv)
        return load(args, srv, loadgens)
    except BaseException:
        # an interrupted or broken run leaves nothing behind it running
        for proc, _ in loadgens.values():
            if proc.poll() is None:
                proc.kill()
        srv.kill()
        raise


def load(args, srv, loadgens):
    sampler = MemorySampler(srv)
    sampler.sample()
    ledger = Ledger()
    started = time.monotonic()
    deadline = started + args.duration
    log("load for %d s: loadgen mixed plain and TLS with LMTP, ledger clients, %d workers"
        % (args.duration, args.workers))
    for kind in ("plain", "tls"):
        loadgens[kind] = start_loadgen(args, srv, kind, args.duration)
    threads = [LedgerDeliverer(ledger, deadline, ("127.0.0.1", srv.lmtp_port))]
    half = LEDGER_USERS // 2
    threads.append(LedgerReader(ledger, deadline, srv, [ledger_user(u) for u in range(half)], False))
    threads.append(LedgerReader(ledger, deadline, srv, [ledger_user(u) for u in range(half, LEDGER_USERS)],
                                True))
    for t in threads + [sampler]:
        t.start()
    next_reload = started + args.reload_every if args.reload_every else None
    while time.monotonic() < deadline:
        wake = min(time.monotonic() + PROGRESS_INTERVAL_S, deadline)
        if next_reload is not None and next_reload < deadline - 1:
            wake = min(wake, next_reload)
        time.sleep(max(0.0, wake - time.monotonic()))
        if next_reload is not None and time.monotonic() >= next_reload and \
                time.monotonic() < deadline - 1:
            args.reloads_sent += 1
            r = srv.cli("reload", "-c", srv.conf, timeout=30)
            if r.returncode == 0:
                args.reloads_done += 1
            else:
                ledger.error("buzon reload exited %d: %s" % (
                    r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace").strip()))
            next_reload += args.reload_every
        if sampler.samples and time.monotonic() < deadline - 1:
            log("%3.0f s: PSS %.1f MiB, ledger %d transactions, %d sessions, %d errors" % (
                time.monotonic() - started, sampler.samples[-1][1] / 1024, ledger.transactions,
                ledger.sessions, len(ledger.errors)))
    reports = {}
    outputs = {}
    for kind, (proc, out) in loadgens.items():
        reports[kind], outputs[kind] = finish_loadgen(proc, out, args.duration)
    for t in threads:
        t.stopping.set()
    for t in threads:
        t.join(IO_TIMEOUT + 10)
    sampler.stopping.set()
    sampler.join()
    sampler.sample()
    return summarize(args, srv, ledger, reports, outputs, sampler, threads)


def summarize(args, srv, ledger, reports, outputs, sampler, threads):
    failures = []
    srv.stop(check=False)
    failures.extend(srv.problems)
    for t in threads:
        if t.is_alive():
            failures.append("a ledger client did not stop")
    loadgen_errors = 0
    for kind, report in reports.items():
        if report is None:
            failures.append("loadgen %s printed no report:\n%s" % (kind, outputs[kind][-3000:]))
            continue
        loadgen_errors += report["errors"]
        if report["errors"]:
            failures.append("loadgen %s: %d errors:\n%s" % (kind, report["errors"], outputs[kind][-3000:]))
    # transactions cut short by an error: the client cannot know whether they were delivered
    ledger.unsure.update(ledger.pending)
    problems, ledger_present = check_ledger(srv, ledger)
    loadgen_present = {}
    for kind in ("plain", "tls"):
        p, loadgen_present[kind] = check_loadgen_users(srv, kind, reports.get(kind))
        problems.extend(p)
    failures.extend(problems[:50])
    failures.extend("ledger: " + e for e in ledger.errors[:50])
    log_errors = [l for l in srv.all_stderr().splitlines() if " level=error " in l]
    failures.extend("server log: " + l for l in log_errors[:20])

    def total(key):
        return sum(r[key] for r in reports.values() if r is not None)

    mem = [kb for _, kb in sampler.samples]
    log("summary after %d s (%d POP3 workers)" % (args.duration, args.workers))
    print("  sessions:   %d (loadgen plain %s, loadgen TLS %s, ledger %d)" % (
        total("sessions") + ledger.sessions,
        *(reports[k]["sessions"] if reports.get(k) else "?" for k in ("plain", "tls")), ledger.sessions))
    print("  deliveries: %d acknowledged (loadgen %d, ledger %d in %d LMTP transactions)" % (
        total("deliveries") + len(ledger.acked), total("deliveries"), len(ledger.acked),
        ledger.transactions))
    print("  deleted:    %d (loadgen %d, ledger %d)" % (total("deleted") + len(ledger.deleted),
                                                        total("deleted"), len(ledger.deleted)))
    print("  retrieved:  %d messages (loadgen %d, ledger %d)" % (
        total("messages") + ledger.retrieved, total("messages"), ledger.retrieved))
    print("  left:       ledger %d, loadgen plain %d, loadgen TLS %d (plus %d seeded)" % (
        ledger_present, loadgen_present["plain"], loadgen_present["tls"], 2 * LOADGEN_USERS * SEEDED))
    print("  errors:     %d (loadgen %d, ledger %d, server log %d, invariants %d)" % (
        loadgen_errors + len(ledger.errors) + len(log_errors) + len(problems), loadgen_errors,
        len(ledger.errors), len(log_errors), len(problems)))
    for kind in ("plain", "tls"):
        r = reports.get(kind)
        if r:
            print("  loadgen %-5s %.0f sessions/s, latency p50 %.1f ms p99 %.1f ms max %.1f ms" % (
                kind, r["sessions_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"],
                r["latency_ms"]["max"]))
    print("  memory:     PSS of all buzon processes: start %.1f MiB, end %.1f MiB, max %.1f MiB "
          "(%d samples)" % (mem[0] / 1024, mem[-1] / 1024, max(mem) / 1024, len(mem)))
    print("  reloads:    %d of %d under load (`buzon reload` every %s)" % (
        args.reloads_done, args.reloads_sent,
        "%d s" % args.reload_every if args.reload_every else "-: none"))
    print("  server:     %s" % ("exit 0 on SIGTERM, no sanitizer report" if not srv.problems
                                else "; ".join(p.splitlines()[0] for p in srv.problems)))
    for f in failures:
        print("FAIL: " + f)
    if not failures and not args.keep:
        shutil.rmtree(srv.base, ignore_errors=True)
    elif args.keep or failures:
        print("  files kept in " + srv.base)
    print("soak: %d passed, %d failed" % ((0, 1) if failures else (1, 0)))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    ap.add_argument("--build", default="build", help="build tree (default build)")
    ap.add_argument("--workers", type=int, default=2, help="POP3 workers (default 2)")
    ap.add_argument("--reload-every", type=int, default=0,
                    help="run `buzon reload` every S seconds under the load (default 0: never)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.reloads_sent = args.reloads_done = 0
    build = os.path.join(REPO, args.build) if not os.path.isabs(args.build) else args.build
    os.environ.setdefault("BUZON_BIN", os.path.join(build, "buzon"))
    args.loadgen = os.path.join(build, "bench", "loadgen")
    for path in (os.environ["BUZON_BIN"], args.loadgen):
        if not os.access(path, os.X_OK):
            sys.exit("soak: %s is missing (make all bench-tools)" % path)
    if args.duration < 1:
        sys.exit("soak: --duration must be at least 1 second")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
