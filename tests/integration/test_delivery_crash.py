"""Crash safety of delivery: LMTP deliveries while the whole server process group is SIGKILLed at
random moments, the server being restarted after each kill.

Afterwards: every message that got a 250 for a recipient is in that recipient's Maildir exactly
once and complete (byte for byte); no file in new/ or cur/ is partial or unknown; POP3 lists
exactly the files in new/ and cur/ (never what a crash left in tmp/) and serves them intact; the
server started cleanly every time (stale UNIX socket, TCP port in TIME_WAIT, leftover tmp/ files).

Runs BUZON_CRASH_TRIALS trials (default 300) or until BUZON_CRASH_SECONDS (default 60) have
passed, and fails if fewer than BUZON_CRASH_MIN_TRIALS (default 200) ran. BUZON_CRASH_SEED repeats
a run (the seed is printed in the failure message).
"""

import os
import random
import re
import signal
import socket
import threading
import time

from buzontest import to_crlf, valgrind_unsuitable
from crashtest import sigkill_server, use_port_outside_ephemeral_range
from lmtptest import (
    Lmtp,
    LmtpClosed,
    check_name_sizes,
    delivered,
    dotstuff_smtp,
    setup_lmtp,
    start_lmtp,
    stored_expected,
    tmp_files,
)

USERS = (("demo", "secret"), ("alice", "alicepw"))
SENDER = "crash@example.org"
TRIALS = int(os.environ.get("BUZON_CRASH_TRIALS", "300"))
MIN_TRIALS = min(TRIALS, int(os.environ.get("BUZON_CRASH_MIN_TRIALS", "200")))
SECONDS = float(os.environ.get("BUZON_CRASH_SECONDS", "60"))
MAX_KILL_DELAY = 0.030


def make_message(rng, token):
    n = rng.random()
    if n < 0.7:
        lines = rng.randint(1, 40)
    elif n < 0.95:
        lines = rng.randint(100, 1000)
    else:
        lines = rng.randint(2000, 4000)  # ~150-300 KB: the kill often lands mid-write
    body = bytearray()
    for i in range(lines):
        k = rng.random()
        if k < 0.1:
            body += b"." + token.encode() + b" dotted line %d\n" % i
        elif k < 0.15:
            body += b".\n"
        else:
            body += b"line %d of %s: %s\n" % (i, token.encode(), b"x" * rng.randint(0, 70))
    return (b"From: Crash <crash@example.org>\n"
            b"To: demo@example.org\n"
            b"Subject: " + token.encode() + b"\n"
            b"Message-ID: <" + token.encode() + b"@crash.test>\n"
            b"\n" + bytes(body) + b"end of " + token.encode() + b"\n")


class Ledger:
    def __init__(self):
        self.expected = {}  # (token, user) -> exact stored bytes
        self.acked = set()  # (token, user) that got a 250 after DATA/BDAT LAST
        self.sent = 0

    def plan(self, token, message, rcpts):
        users = [u for u, _ in rcpts]
        for user, addr in rcpts:
            self.expected[(token, user)] = stored_expected(
                message, SENDER, addr if len(rcpts) == 1 else None)
        return users


def client_run(srv, rng, trial, ledger, stop_at):
    """Delivers messages until the connection breaks (the kill) or stop_at."""
    target = ("127.0.0.1", srv.lmtp_port) if rng.random() < 0.5 else srv.lmtp_path
    c = Lmtp(target, timeout=3)
    try:
        c.lhlo()
        k = 0
        while time.monotonic() < stop_at and k < 200:
            token = "crash-%d-%d" % (trial, k)
            k += 1
            message = make_message(rng, token)
            rcpts = [("demo", "demo@example.org")]
            if rng.random() < 0.4:
                rcpts.append(("alice", "alice"))
            users = ledger.plan(token, message, rcpts)
            r = c.cmd("MAIL FROM:<%s>" % SENDER)
            assert r[0] == 250, r
            for _, addr in rcpts:
                r = c.cmd("RCPT TO:<%s>" % addr)
                assert r[0] == 250, r
            ledger.sent += 1
            if rng.random() < 0.3:
                wire = to_crlf(message)
                cut = rng.randint(0, len(wire))
                c.send(b"BDAT %d\r\n" % cut + wire[:cut])
                assert c.reply()[0] == 250
                c.send(b"BDAT %d LAST\r\n" % (len(wire) - cut) + wire[cut:])
            else:
                r = c.cmd("DATA")
                assert r[0] == 354, r
                c.send(dotstuff_smtp(message) + b".\r\n")
            for user in users:
                r = c.reply()
                if r[0] == 250:
                    ledger.acked.add((token, user))
                else:
                    raise AssertionError("trial %d: %s got %r" % (trial, token, r))
    finally:
        c.close()


def killer(pgid, delay, done, killed):
    if not done.wait(delay):
        killed.set()
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


TOKEN_RE = re.compile(rb"^Message-ID: <(crash-\d+-\d+)@crash\.test>$", re.M)


@valgrind_unsuitable  # its trial count is bounded by time
def test_sigkill_during_delivery(make_server):
    seed = int(os.environ.get("BUZON_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    srv = make_server(users=USERS, start=False)
    # a killed worker's offload threads may hold the listening socket a moment longer; a port
    # outside the ephemeral range cannot be taken meanwhile by some client's connection
    use_port_outside_ephemeral_range(srv)
    setup_lmtp(srv, start=False)
    ledger = Ledger()
    unexpected = []  # client-side failures that are not a dropped connection
    t_start = time.monotonic()
    start_durations = []
    trials = 0
    while trials < TRIALS and time.monotonic() - t_start < SECONDS:
        t0 = time.monotonic()
        if trials % 7 == 3:
            # kill during start-up
            srv.start(wait=False)
            time.sleep(rng.uniform(0, MAX_KILL_DELAY))
            sigkill_server(srv)
            trials += 1
            continue
        try:
            start_lmtp(srv)
        except AssertionError as e:
            raise AssertionError("seed %d, trial %d: server did not start cleanly after a SIGKILL:\n%s"
                                 % (seed, trials, e))
        start_durations.append(time.monotonic() - t0)
        done, killed = threading.Event(), threading.Event()
        k = threading.Thread(target=killer,
                             args=(srv.proc.pid, rng.uniform(0, MAX_KILL_DELAY), done, killed))
        k.start()
        try:
            client_run(srv, rng, trials, ledger, time.monotonic() + 2.0)
        except (OSError, LmtpClosed, socket.timeout):
            pass
        except AssertionError as e:
            # a reply other than the expected one before the kill
            if not killed.is_set():
                unexpected.append(str(e))
        finally:
            k.join(5)
            done.set()
            sigkill_server(srv)
        trials += 1
    elapsed = time.monotonic() - t_start

    # Final start: must be clean, and POP3 must show exactly what new/ and cur/ hold.
    start_lmtp(srv)
    problems = []
    if trials < MIN_TRIALS:
        problems.append("only %d of %d trials in %.0f s (mean start-up %.3f s)"
                        % (trials, MIN_TRIALS, elapsed, sum(start_durations) / max(1, len(start_durations))))
    problems.extend("unexpected reply: " + u for u in unexpected[:10])
    per_user_tokens = {}
    for user, _ in USERS:
        seen = {}
        for name, path, content in delivered(srv, user):
            m = TOKEN_RE.search(content)
            if not m:
                problems.append("%s/%s: no known Message-ID (partial or foreign file), %d octets"
                                % (user, name, len(content)))
                continue
            token = m.group(1).decode()
            if token in seen:
                problems.append("%s: %s present twice (%s and %s)" % (user, token, seen[token], name))
            seen[token] = name
            exp = ledger.expected.get((token, user))
            if exp is None:
                problems.append("%s/%s: %s was never sent to this user" % (user, name, token))
            elif content != exp:
                problems.append("%s/%s: content differs from what was sent (%d octets, expected %d)"
                                % (user, name, len(content), len(exp)))
            else:
                try:
                    check_name_sizes(name, content)
                except AssertionError as e:
                    problems.append(str(e))
        for token, u in sorted(ledger.acked):
            if u == user and token not in seen:
                problems.append("%s: %s got 250 but is not in the Maildir" % (user, token))
        per_user_tokens[user] = seen

    # POP3: exactly the files of new/ and cur/, byte for byte; tmp/ leftovers never listed.
    for user, password in USERS:
        files = {name.split(":")[0]: content for name, _, content in delivered(srv, user)}
        by_token = {}
        for content in files.values():
            m = TOKEN_RE.search(content)
            if m:
                by_token[m.group(1)] = content
        p = srv.login(user, password)
        count, _ = p.stat()
        if count != len(files):
            problems.append("%s: POP3 STAT says %d messages, new/+cur/ hold %d (tmp/ holds %d)"
                            % (user, count, len(files), len(tmp_files(srv, user))))
        for n in range(1, count + 1):
            data = p.retr(n)
            m = TOKEN_RE.search(data.replace(b"\r\n", b"\n"))
            if not m or m.group(1) not in by_token:
                problems.append("%s: POP3 message %d is not a file of new/ or cur/ (%r...)"
                                % (user, n, data[:80]))
            elif data != to_crlf(by_token[m.group(1)]):
                problems.append("%s: POP3 message %d differs from its file" % (user, n))
        p.cmd("QUIT")
        p.close()

    acked = len(ledger.acked)
    summary = ("seed %d: %d trials in %.1f s, %d transactions sent, %d recipient acks, "
               "files: %s, tmp leftovers: %s" % (
                   seed, trials, elapsed, ledger.sent, acked,
                   {u: len(t) for u, t in per_user_tokens.items()},
                   {u: len(tmp_files(srv, u)) for u, _ in USERS}))
    print(summary)
    assert not problems, summary + "\n" + "\n".join(problems[:40])
    assert acked > 0, "no delivery was ever acknowledged: " + summary
