"""Crash points of the POP3 side: the whole server process group is SIGKILLed at random moments
and the server restarted, over and over, on one Maildir that another tool (this test) keeps
changing the way MDAs and mail clients do. Each trial is one of:

  (a) quit_deletes: a session DELEs a random part of 50 to about 250 messages, then QUIT; the kill
      lands before QUIT is sent, or at a random delay after it (while the commit unlinks, fsyncs and
      rewrites the UID index, or just after the +OK);
  (b) open: another tool has delivered into new/ (and renamed files in cur/), so the login moves
      new/ to cur/ and rewrites the UID index; the kill lands at a random delay after PASS;
  (d) flags: a session RETRs messages (the commit renames them to add the Seen flag) while another
      tool renames files in cur/ and moves new/ to cur/ under the session's feet; the kill lands
      around QUIT. Between sessions the tool also changes flags, moves, delivers and deletes.
  (Case (c), kills during LMTP deliveries, is test_delivery_crash.py.)
Now and then the tool moves the directories' times back as if the mailbox had been quiet, and a
login records them, so that opens from the index alone (no readdir) are among the crash points.

Proven after every kill, on disk with the server down, and at the next login over POP3:
  - every message the tool delivered is present exactly once (one base name over new/ and cur/),
    byte for byte, unless a QUIT that DELEd it was sent or the tool deleted it;
  - QUIT: if its +OK arrived, every DELEd message is gone; if QUIT was never sent, none is gone;
    if it was sent but no +OK came, any part of the DELEd messages may be gone: buzon does not
    make a commit atomic (it unlinks one file after another, see maildir_commit_run; RFC 1939
    allows "-ERR some deleted messages not removed"), so the test only demands that no message
    outside the DELEd set goes and that a message once gone never comes back;
  - after a +OK, every RETRieved message that was not deleted has the Seen flag;
  - a message keeps the UIDL it was shown with across every restart (also UIDLs shown by a login
    that was killed right after), and no UIDL ever names two different messages: a kill that
    loses an index rewrite must not make buzon hand out a UID again;
  - STAT/LIST/UIDL/TOP show exactly the files of new/ and cur/, with the right sizes: never the
    incomplete deliveries the tool leaves in tmp/, the index's temp file or the lock file;
  - the server starts after every kill without any repair, and kills during index rewrites leave
    at most one index temp file behind (they do not pile up).

Runs BUZON_CRASH_POINTS_TRIALS trials (default 500) or until BUZON_CRASH_POINTS_SECONDS (default
40) have passed, and fails if fewer than BUZON_CRASH_POINTS_MIN_TRIALS (default 100) ran;
BUZON_CRASH_POINTS_SEED repeats a run's choices (kill timing still varies). The summary (printed
with -s, and part of any failure message) gives the seed, trials per second and how often each
kind of crash point was hit.
"""

import os
import random
import re
import socket
import time

from buzontest import Closed, to_crlf, valgrind_unsuitable
from crashtest import DelayedKill, port_sockets, sigkill_server, use_port_outside_ephemeral_range

TRIALS = int(os.environ.get("BUZON_CRASH_POINTS_TRIALS", "500"))
MIN_TRIALS = min(TRIALS, int(os.environ.get("BUZON_CRASH_POINTS_MIN_TRIALS", "100")))
SECONDS = float(os.environ.get("BUZON_CRASH_POINTS_SECONDS", "40"))

USER, PASSWORD = "demo", "secret"
MAILBOX_MIN, MAILBOX_MAX = 50, 200
INDEX_NAME = "buzon-uidlist"
# Kill delays are drawn from [0, KILL_SPREAD x the recent duration of the step being hit], so
# that most kills land inside it and some just after its reply.
KILL_SPREAD = 1.5
MESSAGE_ID_RE = re.compile(rb"^Message-ID: <(cp-\d+)@crash-points\.test>\r?$", re.M | re.I)
UIDL_RE = re.compile(r"[0-9a-f]{16}")
FLAG_LETTERS = "DFRST"


class ServerGone(Exception):
    """The connection broke: the kill landed."""


# ---------------------------------------------------------------------------------------------
# The other tool: an MDA and a mail client working on the Maildir beside buzon


class Message:
    def __init__(self, token, base, content):
        self.token = token
        self.base = base
        self.content = content
        self.uidl = None  # as last shown over POP3


class OtherTool:
    """Delivers, renames, moves and deletes message files the way other Maildir software does,
    and remembers what each file must hold."""

    def __init__(self, srv, rng):
        self.srv = srv
        self.rng = rng
        self.maildir = srv.make_maildir(USER)
        self.seq = 0
        self.by_base = {}  # base name -> Message, for every message ever delivered

    def _chown(self, path):
        if self.srv.run_as:
            os.chown(path, self.srv._uid, self.srv._gid)

    def _content(self, token):
        rng = self.rng
        lines = rng.randint(1, 30) if rng.random() < 0.9 else rng.randint(200, 1500)
        body = b"".join(b"%s line %d %s\n" % (token.encode(), i, b"y" * rng.randint(0, 60))
                        if rng.random() > 0.05 else b".\n" for i in range(lines))
        return (b"From: Tool <tool@example.org>\nTo: demo@example.org\nSubject: " + token.encode()
                + b"\nMessage-ID: <" + token.encode() + b"@crash-points.test>\n\n" + body)

    def deliver(self, into_cur=False):
        """A complete message: written to tmp/, then renamed into new/ (or into cur/ with flags,
        as an LDA that files a message as already read does)."""
        self.seq += 1
        token = "cp-%d" % self.seq
        content = self._content(token)
        base = "%d.M%dP%dQ%d.crashtool" % (1700000000 + self.seq, self.seq, os.getpid(), self.seq)
        if self.rng.random() < 0.3:  # the sizes our own delivery writes into the name
            base += ",S=%d,W=%d" % (len(content), len(to_crlf(content)))
        tmp = os.path.join(self.maildir, "tmp", base)
        with open(tmp, "wb") as f:
            f.write(content)
        self._chown(tmp)
        dest = (os.path.join(self.maildir, "cur", base + ":2,S") if into_cur
                else os.path.join(self.maildir, "new", base))
        os.rename(tmp, dest)
        msg = Message(token, base, content)
        self.by_base[base] = msg
        return msg

    def leave_incomplete(self):
        """A delivery that crashed half-way: a partial file in tmp/, which nobody may list."""
        self.seq += 1
        name = "%d.M0P%d.crashtool-partial" % (1700000000 + self.seq, os.getpid())
        path = os.path.join(self.maildir, "tmp", name)
        with open(path, "wb") as f:
            f.write(b"Message-ID: <partial-%d@crash-points.test>\n\nhalf a mess" % self.seq)
        self._chown(path)

    def listing(self):
        """[(subdir, name, base name)] of the message files in new/ and cur/ now."""
        out = []
        for sub in ("new", "cur"):
            for name in os.listdir(os.path.join(self.maildir, sub)):
                if not name.startswith("."):
                    out.append((sub, name, name.split(":", 1)[0]))
        return out

    def change_flags(self, only_add):
        """Renames a file in cur/ to other flags (only adding some while a session is open, so
        that the Seen flag a commit adds stays checkable)."""
        cur = [(n, b) for s, n, b in self.listing() if s == "cur" and ":2," in n]
        if not cur:
            return
        name, base = self.rng.choice(cur)
        old = set(name.split(":2,", 1)[1])
        new = set(self.rng.sample(FLAG_LETTERS, self.rng.randint(0, 3)))
        flags = "".join(sorted(old | new if only_add else new))
        self._rename("cur", name, "cur", base + ":2," + flags)

    def move_new_to_cur(self, every=False):
        new = [(n, b) for s, n, b in self.listing() if s == "new"]
        for name, base in new if every else self.rng.sample(new, min(1, len(new))):
            self._rename("new", name, "cur", base + ":2," + self.rng.choice(("", "S", "RS")))

    def _rename(self, sub, name, to_sub, to_name):
        # never while buzon itself renames (server down, or a session idle): no race to lose
        if (sub, name) != (to_sub, to_name):
            os.rename(os.path.join(self.maildir, sub, name),
                      os.path.join(self.maildir, to_sub, to_name))

    def let_time_pass(self):
        """Moves the times of cur/ and new/ 10 s into the past, as if the mailbox had been quiet:
        the next open may then record them in the index and the one after may trust the index
        alone (the open without readdir of maildir_snapshot_from_index). Any later change sets
        them to now again, so a stale index can never look current."""
        past = time.time_ns() - 10 * 10**9
        for sub in ("cur", "new"):
            os.utime(os.path.join(self.maildir, sub), ns=(past, past))

    def index_matches_directories(self):
        """Whether the times buzon-uidlist records for cur/ and new/ (the last two fields of its
        header) are theirs now: then the next open builds its snapshot from the index alone."""
        try:
            with open(os.path.join(self.maildir, INDEX_NAME), "rb") as f:
                fields = f.readline().split()
        except FileNotFoundError:
            return False
        now = [b"%d.%09d" % divmod(os.stat(os.path.join(self.maildir, sub)).st_mtime_ns, 10**9)
               for sub in ("cur", "new")]
        return len(fields) == 6 and fields[4:] == now

    def delete_one(self):
        """A webmail deletes a message behind buzon's back. Returns the Message, or None."""
        listing = self.listing()
        if not listing:
            return None
        sub, name, base = self.rng.choice(listing)
        os.unlink(os.path.join(self.maildir, sub, name))
        return self.by_base.get(base)


# ---------------------------------------------------------------------------------------------
# What must hold


class Ledger:
    """What the mailbox must hold, as far as the acknowledged operations tell."""

    def __init__(self):
        self.present = {}  # token -> Message: must exist (or may be gone, if in maybe_gone)
        self.maybe_gone = set()  # DELEd by a QUIT whose +OK never came
        self.gone = set()  # deleted for sure: must never come back
        self.uidl_owner = {}  # every UIDL ever shown with its message -> token
        self.unmapped_uidls = set()  # shown by a killed login before its messages were identified
        self.must_be_seen = set()  # RETRieved in a session whose QUIT got +OK (until next check)
        self.problems = []

    def add(self, msg):
        self.present[msg.token] = msg

    def remove(self, token):
        self.present.pop(token, None)
        self.maybe_gone.discard(token)
        self.gone.add(token)


def check_disk(tool, ledger, where):
    """With the server down: new/ + cur/ hold each expected message once and complete. Settles the
    fate of maybe-deleted messages. Returns the number of index temp files in the Maildir root."""
    problems = ledger.problems
    seen = {}
    for sub, name, base in tool.listing():
        if base in seen:
            problems.append("%s: %s is present twice (%s and %s/%s)"
                            % (where, base, seen[base], sub, name))
        seen[base] = "%s/%s" % (sub, name)
        msg = tool.by_base.get(base)
        if msg is None:
            problems.append("%s: unknown file %s/%s" % (where, sub, name))
            continue
        if msg.token in ledger.gone:
            problems.append("%s: %s came back after its deletion was acknowledged (%s/%s)"
                            % (where, msg.token, sub, name))
            continue
        with open(os.path.join(tool.maildir, sub, name), "rb") as f:
            if f.read() != msg.content:
                problems.append("%s: %s/%s is not the message delivered" % (where, sub, name))
        if msg.token in ledger.must_be_seen:
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            if "S" not in flags:
                problems.append("%s: %s was RETRieved and QUIT got +OK, but %s/%s has no Seen"
                                % (where, msg.token, sub, name))
    ledger.must_be_seen.clear()
    present_tokens = {tool.by_base[b].token for b in seen if b in tool.by_base}
    for token, msg in list(ledger.present.items()):
        if token in present_tokens:
            continue
        if token in ledger.maybe_gone:
            ledger.remove(token)  # the commit got to it before the kill
        else:
            problems.append("%s: %s (%s) is lost: it was never deleted" % (where, token, msg.base))
    ledger.maybe_gone.clear()  # those still present stay, and must stay
    return sum(1 for n in os.listdir(tool.maildir) if n.startswith(INDEX_NAME + "."))


def read_listing(c, ledger, where):
    """STAT, LIST, UIDL and a pipelined TOP n 0 per message: checks that POP3 shows exactly the
    messages of the ledger with their sizes and their old UIDLs. Returns [(uidl, Message)] in
    message-number order. Raises ServerGone if the connection breaks (UIDLs read before that are
    remembered as shown)."""
    problems = ledger.problems
    try:
        count, _ = c.stat()
        sizes = c.list()
        uidls = c.uidl()
    except (OSError, Closed) as e:
        raise ServerGone(str(e))
    for n, u in uidls.items():
        if not UIDL_RE.fullmatch(u):
            problems.append("%s: malformed UIDL %r" % (where, u))
    if not (count == len(sizes) == len(uidls)):
        problems.append("%s: STAT %d, LIST %d and UIDL %d lines disagree"
                        % (where, count, len(sizes), len(uidls)))
    lost = ledger.unmapped_uidls - set(uidls.values())
    if lost:
        problems.append("%s: UIDLs shown by a killed login are gone, nothing was deleted since: %s"
                        % (where, sorted(lost)[:5]))
    ledger.unmapped_uidls = set(uidls.values())  # shown now; tied to their messages below
    tokens = []
    try:
        c.send("".join("TOP %d 0\r\n" % n for n in range(1, count + 1)))
        for n in range(1, count + 1):
            r = c.readline()
            head = c.read_multi_wire() if r.startswith("+OK") else b""
            m = MESSAGE_ID_RE.search(head)
            tokens.append(m.group(1).decode() if m else None)
            if not m:
                problems.append("%s: message %d is not one the tool delivered: %r %r"
                                % (where, n, r, head[:120]))
    except (OSError, Closed) as e:
        raise ServerGone(str(e))
    out = []
    listed = set()
    for n, token in enumerate(tokens, 1):
        msg = ledger.present.get(token)
        uidl = uidls.get(n)
        if token is None:
            continue
        if msg is None:
            problems.append("%s: POP3 lists %s, which %s" % (
                where, token, "was deleted" if token in ledger.gone else "is not in the Maildir"))
            continue
        if token in listed:
            problems.append("%s: POP3 lists %s twice" % (where, token))
        listed.add(token)
        if sizes.get(n) != len(to_crlf(msg.content)):
            problems.append("%s: LIST says %s octets for %s, the file has %d with CRLF"
                            % (where, sizes.get(n), token, len(to_crlf(msg.content))))
        if msg.uidl is not None and msg.uidl != uidl:
            problems.append("%s: the UIDL of %s changed from %s to %s"
                            % (where, token, msg.uidl, uidl))
        owner = ledger.uidl_owner.setdefault(uidl, token)
        if owner != token:
            problems.append("%s: UIDL %s was %s's and now names %s" % (where, uidl, owner, token))
        msg.uidl = uidl
        out.append((uidl, msg))
    for token in set(ledger.present) - listed:
        problems.append("%s: %s is in the Maildir but POP3 does not list it" % (where, token))
    ledger.unmapped_uidls.clear()
    return out


# ---------------------------------------------------------------------------------------------
# The trials


class Run:
    def __init__(self, srv, seed):
        self.srv = srv
        self.seed = seed
        self.rng = random.Random(seed)
        self.tool = OtherTool(srv, self.rng)
        self.ledger = Ledger()
        # how long the steps being hit take here, measured as the run goes
        self.quit_seconds = 0.010
        self.open_seconds = 0.010
        self.stats = {}
        self.max_index_temps = 0
        self.trial = 0
        self.quiet = False  # this trial follows a quiet spell

    def count(self, what):
        self.stats[what] = self.stats.get(what, 0) + 1

    def where(self, kind):
        return "seed %d, trial %d (%s)" % (self.seed, self.trial, kind)

    def deliver(self, n):
        for _ in range(n):
            self.ledger.add(self.tool.deliver(into_cur=self.rng.random() < 0.1))

    def tool_between_sessions(self):
        """Whatever other software does while no session is open."""
        rng = self.rng
        self.quiet = rng.random() < 0.2
        if self.quiet:
            # a mail client files everything in new/, then the mailbox stays quiet: a login
            # records the directories' times and the trial's own login trusts the index alone
            self.tool.move_new_to_cur(every=True)
            self.tool.let_time_pass()
            return
        if len(self.ledger.present) < MAILBOX_MIN:
            self.deliver(rng.randint(MAILBOX_MIN, MAILBOX_MAX) - len(self.ledger.present))
        for _ in range(rng.randint(0, 4)):
            self.tool.change_flags(only_add=False)
        if rng.random() < 0.3:
            self.tool.move_new_to_cur()
        # (not while UIDLs of a killed login still wait to be checked at the next listing)
        if rng.random() < 0.1 and not self.ledger.unmapped_uidls:
            msg = self.tool.delete_one()
            if msg is not None:
                self.ledger.remove(msg.token)
        if rng.random() < 0.2:
            self.tool.leave_incomplete()
        if rng.random() < 0.4:
            self.tool.let_time_pass()

    def start(self, kind):
        try:
            self.srv.start()
        except AssertionError as e:
            raise AssertionError("%s: the server did not start after a SIGKILL:\n%s\n"
                                 "sockets on its port:\n%s"
                                 % (self.where(kind), e, port_sockets(self.srv.port)))
        if self.quiet:
            c = self.login()  # a full scan that finds the directories settled: records them
            read_listing(c, self.ledger, self.where(kind) + " warm-up")
            c.quit()
            c.close()
            if self.rng.random() < 0.5:
                # the commonest case of all: one new mail after a quiet spell; the recorded
                # times no longer match, and the open must find it
                self.deliver(self.rng.randint(1, 2))
                self.count("%s: new mail after the directories were recorded" % kind)
        if self.tool.index_matches_directories():
            self.count("%s: the login opens from the index alone" % kind)

    def login(self):
        c = self.srv.connect()
        assert c.greeting.startswith("+OK"), c.greeting
        c.login(USER, PASSWORD)
        return c

    def finish_trial(self, kind, kill):
        if kill is not None:
            kill.join()
        sigkill_server(self.srv)
        temps = check_disk(self.tool, self.ledger, self.where(kind) + " after the kill")
        self.max_index_temps = max(self.max_index_temps, temps)
        if temps:
            self.count("%s: kill left an index temp file" % kind)

    def trial_open(self):
        """(b) A login that has new mail to index (unless after a quiet spell), killed somewhere
        after PASS."""
        rng = self.rng
        if not self.quiet:
            self.deliver(rng.randint(1, 40) if len(self.ledger.present) < MAILBOX_MAX + 50 else 0)
            for _ in range(rng.randint(0, 3)):
                self.tool.change_flags(only_add=False)
        self.start("open")
        c = self.srv.connect()
        kill = None
        try:
            c.ok("USER " + USER)
            kill = DelayedKill(self.srv.proc.pid, rng.uniform(0, KILL_SPREAD * self.open_seconds))
            t0 = time.monotonic()
            r = c.cmd("PASS " + PASSWORD)
            if not r.startswith("+OK"):
                self.ledger.problems.append("%s: PASS answered %r" % (self.where("open"), r))
                raise ServerGone(r)
            self.open_seconds = 0.8 * self.open_seconds + 0.2 * (time.monotonic() - t0)
            self.count("open: login done before the kill")
            read_listing(c, self.ledger, self.where("open"))
            self.count("open: listing read before the kill")
        except (ServerGone, OSError, Closed):
            self.count("open: killed during the login")
        finally:
            c.close()
            self.finish_trial("open", kill)

    def session_changes(self, kind, listing):
        """Picks the DELEs and RETRs of a (a) or (d) session. Returns (deleted, retrieved) as sets
        of message numbers."""
        rng = self.rng
        numbers = list(range(1, len(listing) + 1))
        if kind == "quit_deletes":
            deleted = set(rng.sample(numbers, int(len(numbers) * rng.uniform(0.1, 0.9))))
            retrieved = set(rng.sample(numbers, min(len(numbers), rng.randint(0, 5))))
        else:
            deleted = set(rng.sample(numbers, min(len(numbers), rng.randint(0, 3))))
            retrieved = set(rng.sample(numbers, min(len(numbers), rng.randint(5, 40))))
        return deleted, retrieved - deleted

    def retrieve(self, c, n, msg, kind):
        wire = c.retr(n)
        expected = to_crlf(msg.content)
        if not expected.endswith(b"\r\n"):
            expected += b"\r\n"
        if wire != expected:
            self.ledger.problems.append("%s: RETR %d (%s) differs from the file"
                                        % (self.where(kind), n, msg.token))

    def trial_session(self, kind):
        """(a) and (d): a session that changes the mailbox, killed before QUIT or around it."""
        rng = self.rng
        self.start(kind)
        where = self.where(kind)
        c = self.login()
        listing = read_listing(c, self.ledger, where)
        deleted, retrieved = self.session_changes(kind, listing)
        for n in sorted(retrieved):
            self.retrieve(c, n, listing[n - 1][1], kind)
        if kind == "flags":
            # other software renames files while the session holds its snapshot: the commit must
            # find the new names (only flags are added, so a commit's Seen stays checkable)
            for _ in range(rng.randint(1, 8)):
                self.tool.change_flags(only_add=True)
            if rng.random() < 0.5:
                self.tool.move_new_to_cur()
            self.deliver(rng.randint(0, 3))  # not in the snapshot: untouched by the commit
        if deleted:
            c.send("".join("DELE %d\r\n" % n for n in sorted(deleted)))
            for n in sorted(deleted):
                r = c.readline()
                if not r.startswith("+OK"):
                    self.ledger.problems.append("%s: DELE %d answered %r" % (where, n, r))
        dele_tokens = {listing[n - 1][1].token for n in deleted}
        retr_tokens = {listing[n - 1][1].token for n in retrieved}
        kill = None
        if rng.random() < 0.12:
            sigkill_server(self.srv)  # QUIT never sent: nothing may change
            self.count("%s: killed before QUIT" % kind)
        else:
            kill = DelayedKill(self.srv.proc.pid, rng.uniform(0, KILL_SPREAD * self.quit_seconds))
            t0 = time.monotonic()
            try:
                r = c.cmd("QUIT")
            except (OSError, Closed, socket.timeout):
                r = None
            if r is not None and r.startswith("+OK"):
                self.quit_seconds = 0.8 * self.quit_seconds + 0.2 * (time.monotonic() - t0)
                self.ledger.must_be_seen |= retr_tokens
                for token in dele_tokens:
                    self.ledger.remove(token)
                self.count("%s: QUIT +OK, then killed" % kind)
            else:
                if r is not None:
                    self.ledger.problems.append("%s: QUIT answered %r" % (where, r))
                self.ledger.maybe_gone |= dele_tokens
                self.count("%s: killed between QUIT and its +OK" % kind)
        c.close()
        before = set(self.ledger.maybe_gone)
        self.finish_trial(kind, kill)
        gone = before & self.ledger.gone
        if before and 0 < len(gone) < len(before):
            self.count("%s: commit cut in the middle (some DELEs applied)" % kind)
        elif before and gone:
            self.count("%s: killed after the unlinks, before the +OK was read" % kind)

    def run_one(self):
        kind = self.rng.choices(("quit_deletes", "open", "flags"), (0.4, 0.3, 0.3))[0]
        self.tool_between_sessions()
        if kind == "open":
            self.trial_open()
        else:
            self.trial_session(kind)
        self.trial += 1

    def final_check(self):
        """A last clean start and login: everything settled must be listed as the ledger says,
        and every UIDL shown by a killed login must still be there."""
        self.start("final")
        c = self.login()
        read_listing(c, self.ledger, self.where("final"))
        c.quit()
        c.close()
        self.srv.stop()


@valgrind_unsuitable  # its trial count is bounded by time
def test_sigkill_at_pop3_crash_points(make_server):
    seed = int(os.environ.get("BUZON_CRASH_POINTS_SEED", str(random.randrange(1 << 30))))
    srv = make_server(users=((USER, PASSWORD),), start=False)
    use_port_outside_ephemeral_range(srv)
    run = Run(srv, seed)
    t_start = time.monotonic()
    try:
        while (run.trial < TRIALS and time.monotonic() - t_start < SECONDS
               and not run.ledger.problems):
            run.run_one()
        elapsed = time.monotonic() - t_start
        if not run.ledger.problems:
            run.final_check()
    except Exception as e:
        raise AssertionError("%s: %s: %s" % (run.where("?"), type(e).__name__, e)) from e
    problems = run.ledger.problems
    if run.trial < MIN_TRIALS:
        problems.append("only %d of %d trials in %.0f s" % (run.trial, MIN_TRIALS, elapsed))
    if run.max_index_temps > 1:
        problems.append("index temp files pile up after kills: %d at once" % run.max_index_temps)
    summary = "seed %d: %d trials in %.1f s (%.1f/s), %d messages left, %d deleted; %s" % (
        seed, run.trial, elapsed, run.trial / max(elapsed, 1e-9), len(run.ledger.present),
        len(run.ledger.gone), ", ".join("%s: %d" % kv for kv in sorted(run.stats.items())))
    print(summary)
    assert not problems, summary + "\n" + "\n".join(problems[:40])
