#!/usr/bin/env python3
"""LMTP deliveries per second of ~10 KB messages, buzon against Dovecot's LMTP, on loopback.

Cases: 1 connection and 8 connections (processes, each: LHLO once, then MAIL/RCPT/DATA per
message, one recipient per message, recipients spread over 100 users). Every server runs twice per
round: as is (both fsync deliveries: buzon always, Dovecot through mail_fsync = optimized) and under
`eatmydata` (fsync made a no-op by LD_PRELOAD), so the fsync cost shows as the difference.
Servers alternate (buzon, Dovecot, buzon, Dovecot...) for ROUNDS rounds per case; each run is
bounded by SECONDS (default 5) or MAX_MESSAGES (default 5000), whichever comes first, after an
untimed warm-up of one delivery per user (which creates the maildirs). Every reply must be 250
(354 after DATA) or the run fails; after each run the delivered files are counted and must match,
and every server process must have libeatmydata mapped exactly when run under eatmydata. Each run
starts a fresh server on a fresh mail directory (on the disk of /tmp), stops it afterwards and
calls sync(2) so its writeback does not land in the next run.

Prints a Markdown table and writes it to bench/results/<YYYY-MM-DD>-lmtp.md.

Needs root, Debian packages dovecot-core, dovecot-lmtpd and eatmydata.
usage: sudo /usr/bin/python3 bench/lmtp_deliveries.py [--buzon PATH] [--rounds N] [--seconds S]
                                                      [--max-messages N] [--connections 1,8]
"""
import argparse
import datetime
import multiprocessing
import os
import pwd
import grp
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
USERS = 100
MESSAGE_SIZE = 10 * 1024
READY_TIMEOUT = 15.0
IO_TIMEOUT = 30.0


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- client

def make_body():
    """~10 KB of CRLF text lines, no line starting with '.', ending with CRLF."""
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n"
    lines = []
    total = 0
    while total + len(line) <= MESSAGE_SIZE - 200:
        lines.append(line)
        total += len(line)
    return b"".join(lines)


class Lmtp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.expect(b"220", "greeting")

    def reply(self):
        lines = []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                raise BenchError("connection closed by server (after %r)" % lines)
            lines.append(line.rstrip(b"\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def expect(self, code, what):
        lines = self.reply()
        if not lines[-1].startswith(code + b" ") and lines[-1] != code:
            raise BenchError("%s: expected %s, got %r" % (what, code.decode(), lines))
        return lines

    def cmd(self, line, code, what):
        self.sock.sendall(line)
        return self.expect(code, what)

    def deliver(self, rcpt, header, body):
        self.cmd(b"MAIL FROM:<bench@example.org>\r\n", b"250", "MAIL")
        self.cmd(b"RCPT TO:<%s>\r\n" % rcpt, b"250", "RCPT " + rcpt.decode())
        self.cmd(b"DATA\r\n", b"354", "DATA")
        self.sock.sendall(header + body + b".\r\n")
        self.expect(b"250", "end of DATA for " + rcpt.decode())

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, BenchError):
            pass
        self.sock.close()


def rcpt_address(user):
    return b"user%d@example.org" % user


def worker(port, index, nconn, quota, seconds, barrier, results):
    """One connection: warm-up deliveries (untimed), then the timed loop. Puts
    (index, count, warm, start, end, error) on results."""
    count = warm = 0
    start = end = 0.0
    error = None
    conn = None
    body = make_body()
    try:
        conn = Lmtp(port)
        conn.cmd(b"LHLO bench.example.org\r\n", b"250", "LHLO")
        seq = 0

        def one(user):
            nonlocal seq
            seq += 1
            header = (b"From: <bench@example.org>\r\nTo: <%s>\r\nSubject: bench %d.%d\r\n"
                      b"Message-ID: <%d.%d.%d@bench.example.org>\r\n\r\n"
                      % (rcpt_address(user), index, seq, os.getpid(), index, seq))
            conn.deliver(rcpt_address(user), header, body)

        for user in range(index, USERS, nconn):  # one delivery per user overall
            one(user)
            warm += 1
    except Exception as e:  # still reach the barrier so the others are not stuck
        error = "connection %d warm-up: %s" % (index, e)
    try:
        barrier.wait(timeout=120)
    except Exception as e:
        error = error or "connection %d barrier: %s" % (index, e)
    if error is None:
        start = time.monotonic()
        deadline = start + seconds
        user = (index * USERS) // nconn
        try:
            while count < quota and time.monotonic() < deadline:
                one(user)
                count += 1
                user = (user + 1) % USERS
        except Exception as e:
            error = "connection %d after %d messages: %s" % (index, count, e)
        end = time.monotonic()
    if conn is not None:
        conn.close()
    results.put((index, count, warm, start, end, error))


def load(port, nconn, seconds, max_messages):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(nconn)
    results = ctx.Queue()
    quota = max(1, max_messages // nconn)
    procs = [ctx.Process(target=worker, args=(port, i, nconn, quota, seconds, barrier, results))
             for i in range(nconn)]
    for p in procs:
        p.start()
    got = []
    try:
        for _ in procs:
            got.append(results.get(timeout=seconds + 180))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [g[5] for g in got if g[5]]
    if errors:
        raise BenchError("; ".join(errors))
    total = sum(g[1] for g in got)
    warm = sum(g[2] for g in got)
    elapsed = max(g[4] for g in got) - min(g[3] for g in got)
    return total, warm, elapsed


# ---------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError("%s exited with %s before listening" % (what, proc.returncode))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError("%s: port %d not answering within %.0f s" % (what, port, READY_TIMEOUT))


def descendants(pid):
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children = {}
    for row in out.splitlines():
        p, pp = map(int, row.split())
        children.setdefault(pp, []).append(p)
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            found.append(c)
            todo.append(c)
    return found


def preloaded(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libeatmydata" in f.read()
    except OSError:
        return None


def chown_tree(path, uid, gid):
    for d, dirs, files in os.walk(path):
        for n in [d] + [os.path.join(d, x) for x in files]:
            os.chown(n, uid, gid)


class Server:
    name = ""

    def __init__(self, root, eatmydata):
        self.root = root
        self.eatmydata = eatmydata
        self.proc = None
        self.port = free_port()
        self.uid = pwd.getpwnam("nobody").pw_uid
        self.gid = grp.getgrnam("nogroup").gr_gid

    def command(self):
        raise NotImplementedError

    def start(self):
        cmd = self.command()
        if self.eatmydata:
            cmd = ["eatmydata"] + cmd
        self.log = open(os.path.join(self.root, "stderr.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_port(self.port, self.proc, self.name)

    def check_preload(self):
        """With eatmydata, every process of the server must have libeatmydata mapped; without it,
        none. Called after the run, when the delivering processes exist."""
        pids = [self.proc.pid] + descendants(self.proc.pid)
        state = {p: preloaded(p) for p in pids}
        state = {p: v for p, v in state.items() if v is not None}
        wrong = [p for p, v in state.items() if v != self.eatmydata]
        if wrong:
            raise BenchError("%s (eatmydata=%s): processes %s %s libeatmydata"
                             % (self.name, self.eatmydata, wrong,
                                "lack" if self.eatmydata else "have"))
        return len(state)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # whatever the server left behind in its session (Dovecot's children, buzon's workers)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        self.log.close()

    def delivered(self):
        n = 0
        for d, dirs, files in os.walk(self.mail_root):
            if os.path.basename(d) in ("new", "cur"):
                n += len(files)
        return n

    def tail_log(self):
        out = []
        for name in ("stderr.log", "dovecot.log"):
            p = os.path.join(self.root, name)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out.append("--- %s:\n%s" % (p, f.read()[-3000:].decode(errors="replace")))
        return "\n".join(out)


class Buzon(Server):
    name = "buzon"

    def __init__(self, root, eatmydata, binary):
        super().__init__(root, eatmydata)
        self.binary = binary
        self.mail_root = os.path.join(root, "mail")
        os.makedirs(self.mail_root)
        pop3 = free_port()
        while pop3 == self.port:
            pop3 = free_port()
        with open(os.path.join(root, "users"), "w") as f:
            for i in range(USERS):
                f.write("user%d:{PLAIN}pw\n" % i)
        with open(os.path.join(root, "buzon.conf"), "w") as f:
            f.write("[server]\nworkers = 1\nuser = nobody\nlog_level = warn\n"
                    "control_socket = %s/control.sock\n"
                    "[pop3]\nlisten = 127.0.0.1:%d\n[lmtp]\nlisten = 127.0.0.1:%d\n"
                    "[auth]\npasswd_file = %s/users\n[mail]\nlocation = maildir:%s/mail/%%u\n"
                    % (root, pop3, self.port, root, root))
        chown_tree(root, self.uid, self.gid)

    def command(self):
        return [self.binary, "serve", "-c", os.path.join(self.root, "buzon.conf")]


class Dovecot(Server):
    name = "Dovecot"

    def __init__(self, root, eatmydata):
        super().__init__(root, eatmydata)
        self.mail_root = os.path.join(root, "dmail")
        os.makedirs(self.mail_root)
        with open(os.path.join(root, "users"), "w") as f:
            for i in range(USERS):
                f.write("user%d:{PLAIN}pw\n" % i)
        conf = """\
base_dir = {d}/dovecot/run
state_dir = {d}/dovecot/state
log_path = {d}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
# RCPT TO:<userN@example.org> finds passwd-file user userN (buzon does this by itself)
auth_username_format = %Ln
# eatmydata's LD_PRELOAD must reach the lmtp processes (the master cleans the environment)
import_environment = TZ CORE_OUTOFMEM CORE_ERROR LISTEN_PID LISTEN_FDS LD_PRELOAD LD_LIBRARY_PATH
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  process_min_avail = 2
}}
passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/dmail/%u
}}
mail_location = maildir:~/Maildir
""".format(d=root, port=self.port)
        with open(os.path.join(root, "dovecot.conf"), "w") as f:
            f.write(conf)
        chown_tree(root, self.uid, self.gid)
        for sub in ("dovecot", "dovecot/run", "dovecot/state"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
            os.chown(os.path.join(root, sub), 0, 0)

    def command(self):
        return ["dovecot", "-c", os.path.join(self.root, "dovecot.conf"), "-F"]


def dovecot_version():
    try:
        return subprocess.run(["dovecot", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split()[0]
    except Exception:
        return "?"


# ---------------------------------------------------------------- runs

def one_run(tmp, kind, eatmydata, nconn, args, tag):
    root = tempfile.mkdtemp(prefix="%s-%s-" % (kind, tag), dir=tmp)
    os.chmod(root, 0o755)
    srv = Buzon(root, eatmydata, args.buzon) if kind == "buzon" else Dovecot(root, eatmydata)
    try:
        srv.start()
        try:
            total, warm, elapsed = load(srv.port, nconn, args.seconds, args.max_messages)
            nproc = srv.check_preload()
        except BenchError as e:
            raise BenchError("%s: %s\n%s" % (srv.name, e, srv.tail_log()))
        files = srv.delivered()
        if files != total + warm:
            raise BenchError("%s: %d messages acknowledged but %d files in the maildirs\n%s"
                             % (srv.name, total + warm, files, srv.tail_log()))
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
        os.sync()  # so this run's writeback and deletions do not land in the next run
    return total / elapsed, total, elapsed, nproc


def fmt_rate(values):
    med = statistics.median(values)
    return "%.0f (%s; %.0f–%.0f)" % (med, " ".join("%.0f" % v for v in values),
                                     min(values), max(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--buzon", default=os.path.join(HERE, "..", "build", "buzon"),
                    help="buzon binary (copied to a temp dir before use)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--max-messages", type=int, default=5000)
    ap.add_argument("--connections", default="1,8")
    ap.add_argument("--output", default=None, help="default bench/results/<date>-lmtp.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the servers drop to nobody)")
    for tool in ("dovecot", "eatmydata"):
        if shutil.which(tool) is None:
            sys.exit("%s not found: apt-get install dovecot-core dovecot-lmtpd eatmydata" % tool)
    if not os.path.exists("/usr/lib/dovecot/lmtp"):
        sys.exit("Dovecot LMTP missing: apt-get install dovecot-lmtpd")
    conns = [int(c) for c in args.connections.split(",")]

    tmp = tempfile.mkdtemp(prefix="lmtp-bench-")
    os.chmod(tmp, 0o755)
    results = {}  # (nconn, kind, eatmydata) -> [rate...]
    try:
        binary = os.path.join(tmp, "buzon")
        shutil.copy2(args.buzon, binary)
        os.chmod(binary, 0o755)
        args.buzon = binary
        for nconn in conns:
            for rnd in range(args.rounds):
                for eat in (False, True):
                    for kind in ("buzon", "dovecot"):
                        rate, total, elapsed, nproc = one_run(
                            tmp, kind, eat, nconn, args, "c%d-r%d" % (nconn, rnd))
                        results.setdefault((nconn, kind, eat), []).append(rate)
                        print("  %d conn round %d %-7s %-9s %7.0f deliveries/s (%d in %.2f s, "
                              "%d server processes checked)"
                              % (nconn, rnd + 1, kind, "eatmydata" if eat else "fsync", rate, total,
                                 elapsed, nproc), file=sys.stderr, flush=True)
    except BenchError as e:
        print("FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ver = dovecot_version()
    head = ("| deliveries/s, ~10 KB messages (%d rounds, each ≤ %.0f s or ≤ %d messages; "
            "median (rounds; min–max)) | buzon | Dovecot %s | buzon/Dovecot |"
            % (args.rounds, args.seconds, args.max_messages, ver))
    rows = [head, "|---|---|---|---|"]
    for nconn in conns:
        c = "%d connection%s" % (nconn, "" if nconn == 1 else "s")
        med = {}
        for eat, label in ((False, "fsync (as shipped)"), (True, "eatmydata (fsync no-op)")):
            b, d = results[(nconn, "buzon", eat)], results[(nconn, "dovecot", eat)]
            med[eat] = (statistics.median(b), statistics.median(d))
            rows.append("| %s, %s | %s | %s | %.2f |" % (c, label, fmt_rate(b), fmt_rate(d),
                                                       med[eat][0] / med[eat][1]))
        # fsync cost: per-round difference, as rate and as wall time per delivery
        cells = []
        for kind, i in (("buzon", 0), ("dovecot", 1)):
            f, e = results[(nconn, kind, False)], results[(nconn, kind, True)]
            diff = [y - x for x, y in zip(f, e)]
            ms = [1000.0 / x - 1000.0 / y for x, y in zip(f, e)]
            cells.append("%+.0f/s (%+.0f…%+.0f); %.2f ms/delivery (%.2f…%.2f)"
                         % (statistics.median(diff), min(diff), max(diff),
                            statistics.median(ms), min(ms), max(ms)))
        share = ["%.0f%% of the time" % (100.0 * (1 - med[False][i] / med[True][i])) for i in (0, 1)]
        rows.append("| %s, fsync cost: rate gain under eatmydata, time per delivery (fsync − eatmydata), per-round median (min…max); share of median time | %s; %s | %s; %s | |"
                    % (c, cells[0], share[0], cells[1], share[1]))
    table = "\n".join(rows) + "\n"
    notes = ("\nLoopback, %d CPUs, client in the same machine (Python, one process per connection, "
             "no pipelining). Mail on %s. buzon: workers = 1, log_level = warn. Dovecot: default "
             "settings (mail_fsync = optimized, info logging to a file). Under eatmydata every "
             "server process was checked to have libeatmydata mapped (and none without it).\n"
             % (os.cpu_count(), "the same filesystem as " + tempfile.gettempdir()))
    print(table + notes)
    out = args.output or os.path.join(HERE, "results",
                                      "%s-lmtp.md" % datetime.date.today().isoformat())
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(table + notes)
    print("written to %s" % out, file=sys.stderr)


if __name__ == "__main__":
    main()
