#!/usr/bin/python3
"""`make bench`: buzon against Dovecot 2.3 as shipped (dovecot-default) and as an expert would tune
it for POP3 (dovecot-tuned), on loopback, same machine, same data, runs alternating.

What it does, in order:
  1. installs Dovecot's POP3 and LMTP servers and gnuplot when they are missing (root only) and
     builds buzon and the load generator (`make -s all bench-tools`);
  2. generates the Maildirs once into BENCH_DIR (default /var/tmp/buzon-bench; bench/mkmail.py,
     fixed seed) and reuses them while their stamp matches;
  3. starts the three servers on free loopback ports with one fresh ECDSA P-256 certificate, the
     same passwd-file and the same Maildirs (each server keeps its own index files in them);
  4. runs every mode ROUNDS times against buzon, dovecot-default, dovecot-tuned in turn
     (A B C A B C ...) with build/bench/loadgen as the client, measuring the server's CPU time and
     memory from /proc;
  5. writes bench/results/<date>.md, .json and .png (with --quick: build/bench-quick/).

A run whose loadgen exits non-zero is recorded as FAILED with its stderr; the bench goes on and
exits 1 at the end if any buzon run failed (--quick: also if dovecot-tuned never answered).
Everything it starts is stopped on exit, Ctrl-C included.

usage: sudo /usr/bin/python3 bench/bench.py [--quick] [--rounds N] [--modes a,b,...]
                                            [--bench-dir DIR] [--out DIR] [--loadgen PATH]
"""
import argparse
import datetime
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import mkmail  # noqa: E402

NCPU = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVERS = ("buzon", "dovecot-default", "dovecot-tuned")
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"
READY_TIMEOUT = 30.0
SETTLE = 0.5  # seconds between runs, so that one run's closing connections do not overlap the next
LOADGEN_SEED = 1
LOADAVG_START = os.getloadavg()  # another job on the machine shows here and in the report

# ------------------------------------------------------------------------------------------------
# Modes and their parameters. "dur" is the measured time after "warm" seconds of untimed load.

# The full run must stay under 20 minutes on a 2-core machine: 13 modes x 3 rounds x 3 servers.
# Hash-bound logins settle within seconds, hence their shorter runs.
FULL = {
    "rounds": 3,
    "login": {"conc": 16, "dur": 10, "warm": 2},
    "hash": {"conc": 16, "dur": 6, "warm": 1},
    "fetchall-small": {"conc": 8, "dur": 8, "warm": 1},
    "fetchall-big": {"conc": 8, "dur": 12, "warm": 0},
    "idle": {"sessions": 2000, "conc": 32},
    "idle-50k": {"sessions": 50000, "procs": 4, "conc": 64, "hold": 10, "workers": 6},
    "bigbox": {"warm_sessions": 5},
    "isolation": {"dur": 8, "probe": 100},
    "mixed": {"conc": 8, "dur": 8, "lmtp_rate": 100},
}
QUICK = {
    "rounds": 1,
    "login": {"conc": 16, "dur": 2, "warm": 0.5},
    "hash": {"conc": 16, "dur": 2, "warm": 0.5},
    "fetchall-small": {"conc": 8, "dur": 2, "warm": 0},
    "fetchall-big": {"conc": 8, "dur": 2, "warm": 0},
    "idle": {"sessions": 200, "conc": 32},
    "idle-50k": {"sessions": 500, "procs": 2, "conc": 32, "hold": 1, "workers": 2},
    "bigbox": {"warm_sessions": 2},
    "isolation": {"dur": 2, "probe": 20},
    "mixed": {"conc": 8, "dur": 2, "lmtp_rate": 50},
}
FULL_MODES = ("login-plain", "login-tls", "login-yescrypt", "login-sha512", "fetchall-small",
              "fetchall-big-plain", "fetchall-big-tls", "idle-plain", "idle-tls", "bigbox",
              "isolation", "mixed", "idle-50k")
QUICK_MODES = ("login-plain", "login-tls", "login-sha512", "fetchall-small", "fetchall-big-plain",
               "idle-plain", "idle-tls", "bigbox", "isolation", "mixed")
# mixed is the optional mode: default Dovecot is left out to keep the full run under 20 minutes
MODE_SERVERS = {"idle-50k": ("buzon",), "mixed": ("buzon", "dovecot-tuned")}
# Runs that happen in the first round only, for the same reason: 2,000 idle sessions on default
# Dovecot are 2,000 (TLS: 4,000) forked processes, ~30 s to set up, and a process per session
# costs the same every time.
FIRST_ROUND_ONLY = {("idle-plain", "dovecot-default"), ("idle-tls", "dovecot-default")}

# What each mode reports: (key, label, which way is better, format). The first row is the one
# the chart shows.
METRICS = {
    "login": [("logins_per_s", "logins/s", "higher", "%.0f"),
              ("p99_ms", "login latency p99 (ms)", "lower", "%.1f"),
              ("cpu_ms_per_login", "server CPU ms per login", "lower", "%.3f"),
              ("server_cores", "server CPU cores busy", "info", "%.2f")],
    "fetchall": [("mb_per_s", "MB/s retrieved", "higher", "%.1f"),
                 ("cpu_s_per_gb", "server CPU s per GB", "lower", "%.2f"),
                 ("p99_ms", "session latency p99 (ms)", "lower", "%.0f"),
                 ("server_cores", "server CPU cores busy", "info", "%.2f")],
    "idle": [("kib_per_session", "PSS KiB per idle session", "lower", "%.1f"),
             ("held_mib", "server PSS with sessions (MiB)", "lower", "%.1f"),
             ("baseline_mib", "server PSS before (MiB)", "info", "%.1f"),
             ("noop_ok", "sessions answering NOOP", "info", "%.0f"),
             ("ready_s", "seconds to log all in", "lower", "%.1f")],
    # PASS, STAT and UIDL alone are "info": buzon opens the mailbox at PASS, Dovecot at the first
    # command that needs it, so only the sums compare like with like
    "bigbox": [("warm_total_ms", "warm login PASS+STAT+UIDL (ms)", "lower", "%.1f"),
               ("warm_pass_ms", "warm PASS (ms)", "info", "%.1f"),
               ("warm_stat_ms", "warm STAT (ms)", "info", "%.2f"),
               ("warm_uidl_ms", "warm UIDL (ms)", "info", "%.1f"),
               ("first_total_ms", "first login, no index: PASS+STAT+UIDL (ms)", "lower", "%.0f"),
               ("first_pass_ms", "first login PASS (ms)", "info", "%.0f"),
               ("first_stat_ms", "first login STAT (ms)", "info", "%.0f"),
               ("first_uidl_ms", "first login UIDL (ms)", "info", "%.0f")],
    "isolation": [("probe_p99_ms", "NOOP p99 of idle probes (ms)", "lower", "%.2f"),
                  ("probe_p50_ms", "NOOP p50 of idle probes (ms)", "lower", "%.2f"),
                  ("probe_max_ms", "NOOP max of idle probes (ms)", "lower", "%.1f"),
                  ("mb_per_s", "big-mailbox MB/s meanwhile", "higher", "%.0f"),
                  ("bigbox_logins", "bigbox logins meanwhile", "higher", "%.0f")],
    "mixed": [("sessions_per_s", "sessions/s", "higher", "%.0f"),
              ("p99_ms", "session latency p99 (ms)", "lower", "%.1f"),
              ("deliveries", "LMTP deliveries", "info", "%.0f"),
              ("cpu_ms_per_session", "server CPU ms per session", "lower", "%.3f")],
    "idle-50k": [("noop_ok", "sessions answering NOOP", "higher", "%.0f"),
                 ("kib_per_session", "PSS KiB per idle session", "lower", "%.2f"),
                 ("ready_s", "seconds to log all in", "lower", "%.1f")],
}


def mode_kind(mode):
    if mode == "idle-50k":
        return "idle-50k"
    for kind in ("login", "fetchall", "idle", "bigbox", "isolation", "mixed"):
        if mode.startswith(kind):
            return kind
    raise ValueError(mode)


# ------------------------------------------------------------------------------------------------
# Processes: CPU time and memory of a server's whole process tree


def proc_table():
    """pid -> (ppid, utime+stime+cutime+cstime in ticks) for every process, in one /proc pass."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2:].split()  # rest[0] is field 3 of proc(5)
        table[int(name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return table


def tree_pids(table, root):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(root):
    """CPU time of root's tree so far: every live process's own time plus the time of the children
    it reaped (cutime/cstime), so a process that exits during a run still counts, once."""
    table = proc_table()
    return sum(table[p][1] for p in tree_pids(table, root)) / CLK_TCK


def pss_kib(root):
    """Proportional set size of root's tree (shared pages split between their users)."""
    total = 0
    for pid in tree_pids(proc_table(), root):
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def tree_size(root):
    return len(tree_pids(proc_table(), root))


LIVE = set()  # every Popen we started and have not reaped, so that the finally can end them


def kill_group(proc, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tail_file(path, limit=3000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# Servers


def _crypt_worker_init():
    """Pool workers must not run the bench's own signal handlers (they stop servers)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _crypt_batch(args):
    """Runs count crypt(3) calls of setting (a multiprocessing worker of hash_times)."""
    setting, count = args
    for _ in range(count):
        mkmail.crypt.crypt(mkmail.PASSWORD, setting)


class Server:
    """One server under test in its own directory; the master process leads its process group."""

    name = "?"

    def __init__(self, root, data, cert, key):
        self.root = root
        self.data = data
        self.cert, self.key = cert, key
        self.pop3, self.pop3s, self.lmtp = free_port(), free_port(), free_port()
        self.proc = None
        self.log_path = os.path.join(root, "stderr.log")
        self.starts = 0
        os.makedirs(root, exist_ok=True)
        os.chmod(root, 0o755)

    def command(self):
        raise NotImplementedError

    def logs(self):
        return [self.log_path]

    def start(self):
        self.write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        LIVE.add(self.proc)
        self.starts += 1
        self.wait_ready()

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        pending = [self.pop3, self.pop3s] + ([self.lmtp] if self.has_lmtp() else [])
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s at start:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=2) as s:
                    if pending[0] == self.pop3:
                        greeting = s.recv(512)
                        if not greeting.startswith(b"+OK"):
                            raise OSError("greeting %r" % greeting)
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("%s not ready on port %d within %.0f s:\n%s"
                                   % (self.name, pending[0], READY_TIMEOUT, self.log_tail()))
            time.sleep(0.1)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)  # whatever the master left behind
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        LIVE.discard(self.proc)
        self.proc = None

    def has_lmtp(self):
        return True

    def log_tail(self, limit=3000):
        return "\n".join("--- %s:\n%s" % (p, tail_file(p, limit)) for p in self.logs()
                         if os.path.exists(p))


class Buzon(Server):
    name = "buzon"

    def __init__(self, root, data, cert, key, binary, workers="auto", max_connections=20000):
        super().__init__(root, data, cert, key)
        self.binary = binary
        self.workers = workers
        self.max_connections = max_connections

    def write_config(self):
        user = "user = %s\n" % MAIL_USER if os.geteuid() == 0 else ""
        # Login penalties (failure_delay, bans) are left as shipped: they act on failed logins
        # only, and a failed login fails the run anyway. The per-IP and per-worker caps are
        # raised because every client comes from a handful of loopback addresses.
        conf = (
            "[server]\n"
            "workers = {workers}\n"
            "{user}"
            "log_level = info\n"
            "control_socket = {root}/control.sock\n"
            "[pop3]\n"
            "listen = 127.0.0.1:{pop3}\n"
            "listen_tls = 127.0.0.1:{pop3s}\n"
            "max_connections = {maxconn}\n"
            "max_prelogin_per_ip = 100000\n"
            "max_sessions_per_ip = 100000\n"
            "[tls]\n"
            "cert = {cert}\n"
            "key = {key}\n"
            "[auth]\n"
            "passwd_file = {data}/users\n"
            "[mail]\n"
            "location = maildir:{data}/mail/%u\n"
            "[lmtp]\n"
            "listen = 127.0.0.1:{lmtp}\n"
        ).format(workers=self.workers, user=user, pop3=self.pop3, pop3s=self.pop3s,
                 maxconn=self.max_connections, cert=self.cert, key=self.key, data=self.data,
                 lmtp=self.lmtp, root=self.root)
        self.config_text = conf
        with open(os.path.join(self.root, "buzon.conf"), "w") as f:
            f.write(conf)

    def command(self):
        return [self.binary, "serve", "-c", os.path.join(self.root, "buzon.conf")]

    def remove_index(self, maildir):
        try:
            os.unlink(os.path.join(maildir, "buzon-uidlist"))
        except FileNotFoundError:
            pass


DOVECOT_COMMON = """\
# {name}: generated by bench/bench.py
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
# buzon's default minimum; clients negotiate TLS 1.3 with both anyway
ssl_min_protocol = TLSv1.2
# LMTP recipients are user@domain; the passwd-file and the Maildirs use the bare name
auth_username_format = %Ln
# The Maildirs are buzon's; each Dovecot configuration keeps its index and dovecot-uidlist in
# a tree of its own, so that the two configurations never read each other's (possibly very
# dirty) view of a mailbox.
mail_location = maildir:{data}/mail/%u:INDEX={index}/%u:CONTROL={index}/%u
passdb {{
  driver = passwd-file
  args = {data}/users
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={data}/mail/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
# Limits only: 2,000 idle sessions are 2,000 pop3 processes as shipped (and as many pop3-login
# processes with TLS, which proxy the TLS stream), and every process is a client of the log,
# stats and anvil services. pop3 has its own process_limit (1024) that the default does not move.
default_process_limit = 2200
default_client_limit = 8000
service pop3 {{
  process_limit = 2200
}}
service pop3-login {{
  process_limit = 2200
}}
"""

# Each setting an expert would change for a busy POP3 server, and why it is fair to buzon.
DOVECOT_TUNED = """\
# High-performance mode (Dovecot's wiki: LoginProcess, "high-performance mode"): login and pop3
# processes serve many connections each instead of one process per connection; one process per
# core stays ready so that connections spread over the cores. vsz_limit grows with client_limit.
service pop3-login {{
  service_count = 0
  client_limit = 1000
  process_min_avail = {ncpu}
  vsz_limit = 1G
}}
service pop3 {{
  service_count = 0
  client_limit = 1000
  process_min_avail = {ncpu}
  vsz_limit = 2G
}}
# Trust Dovecot's own index instead of stat()ing cur/ and new/ at every sync: safe when every
# delivery goes through Dovecot (its LMTP in this bench). buzon has no such shortcut, so this
# favours Dovecot.
maildir_very_dirty_syncs = yes
# Take sizes from the index / the W= in file names, never by reading message files
pop3_fast_size_lookups = yes
# Kept at the default and written out to say so:
#  mail_fsync = optimized: fsync where the data must be durable, what buzon does too
#  pop3_no_flag_updates = no: RETR marks messages \\Seen at QUIT, like buzon's retr_marks_seen=yes
#  pop3_lock_session = no: buzon takes a maildrop lock per session (RFC 1939); Dovecot does not
#    by default, which spares it work, so left off in Dovecot's favour
#  auth_cache_size = 0: buzon has no credential cache, so neither does Dovecot
pop3_no_flag_updates = no
mail_fsync = optimized
"""


class Dovecot(Server):
    def __init__(self, root, data, cert, key, tuned):
        super().__init__(root, data, cert, key)
        self.tuned = tuned
        self.name = "dovecot-tuned" if tuned else "dovecot-default"
        self.with_lmtp = os.path.exists("/usr/lib/dovecot/lmtp")

    def has_lmtp(self):
        return self.with_lmtp

    def write_config(self):
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        conf = DOVECOT_COMMON.format(
            name=self.name, root=self.root, data=self.data, index=self.index_root(),
            cert=self.cert, key=self.key,
            protocols="pop3 lmtp" if self.with_lmtp else "pop3", pop3=self.pop3, pop3s=self.pop3s,
            lmtp=self.lmtp, mail_user=MAIL_USER, mail_group=MAIL_GROUP)
        if not self.with_lmtp:
            conf = re.sub(r"service lmtp \{.*?\n\}\n", "", conf, flags=re.S)
        if self.tuned:
            conf += DOVECOT_TUNED.format(ncpu=NCPU)
        self.config_text = conf
        with open(os.path.join(self.root, "dovecot.conf"), "w") as f:
            f.write(conf)

    def command(self):
        return ["dovecot", "-F", "-c", os.path.join(self.root, "dovecot.conf")]

    def logs(self):
        return [self.log_path, os.path.join(self.root, "dovecot.log")]

    def index_root(self):
        return os.path.join(self.data, "index-" + self.name)

    def reset_index(self, owner):
        """Drops every index of this configuration: a bench starts from the Maildirs alone
        (an earlier bench's mixed runs changed them behind Dovecot's back)."""
        shutil.rmtree(self.index_root(), ignore_errors=True)
        os.makedirs(self.index_root())
        os.chown(self.index_root(), *owner)

    def remove_index(self, maildir):
        shutil.rmtree(os.path.join(self.index_root(), os.path.basename(maildir)),
                      ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# The load generator


class Loadgen:
    """build/bench/loadgen in its own process group; stdout lines collected by a thread."""

    def __init__(self, binary, argv, errpath, interactive=False):
        self.argv = [binary] + [str(a) for a in argv]
        self.errpath = errpath
        self.lines = []
        self.ready = threading.Event()
        err = open(errpath, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=err,
                                     stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                                     start_new_session=True)
        err.close()
        LIVE.add(self.proc)
        self.started = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("READY"):
                self.ready.set()
        self.ready.set()  # EOF: whoever waits for READY must look at the exit status

    def wait_ready(self, timeout):
        self.ready.wait(timeout)
        return any(l.startswith("READY") for l in self.lines)

    def release(self):
        """Ends an --hold -1 wait."""
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.flush()
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.proc)
            self.proc.wait()
            self.reader.join(5)
            LIVE.discard(self.proc)
            return None
        self.reader.join(10)
        LIVE.discard(self.proc)
        return self.proc.returncode

    def kill(self):
        kill_group(self.proc)

    def result(self):
        for line in reversed(self.lines):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    return None
        return None

    def stderr_tail(self, limit=2000):
        return tail_file(self.errpath, limit)


class RunFailed(Exception):
    def __init__(self, message, stderr=""):
        super().__init__(message)
        self.stderr = stderr


# ------------------------------------------------------------------------------------------------
# The bench


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.p = QUICK if args.quick else FULL
        self.rounds = args.rounds or self.p["rounds"]
        self.modes = args.modes.split(",") if args.modes else list(
            QUICK_MODES if args.quick else FULL_MODES)
        self.bench_dir = args.bench_dir
        self.data = os.path.join(self.bench_dir, "quick" if args.quick else "full")
        self.dp = mkmail.QUICK if args.quick else mkmail.FULL
        self.work = os.path.join(self.bench_dir, "servers-quick" if args.quick else "servers")
        self.loadgen = args.loadgen
        self.buzon_bin = os.path.join(REPO, "build", "buzon")
        self.servers = {}
        self.results = {}  # mode -> server -> [run record]
        self.notes = []
        self.extra = {}
        self.root = os.geteuid() == 0
        self.have_dovecot = False
        self.started = time.monotonic()
        self.run_seq = 0
        self.versions, self.configs, self.hashes, self.stamp = {}, {}, {}, {}
        self.total_s = 0.0

    def log(self, msg):
        print("[%6.1fs] %s" % (time.monotonic() - self.started, msg), flush=True)

    # -- preparation ----------------------------------------------------------------------------

    def install(self):
        missing = []
        if not shutil.which("dovecot") or not os.path.exists("/usr/lib/dovecot/pop3"):
            missing.append("dovecot-pop3d")
        if not os.path.exists("/usr/lib/dovecot/lmtp"):
            missing.append("dovecot-lmtpd")
        if not shutil.which("gnuplot"):
            missing.append("gnuplot-nox")
        if missing and self.root:
            self.log("installing %s" % " ".join(missing))
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            r = subprocess.run(["apt-get", "install", "-y", "-q"] + missing, env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
                r = subprocess.run(["apt-get", "install", "-y", "-q"] + missing, env=env,
                                   capture_output=True, text=True)
            if r.returncode != 0:
                self.notes.append("apt-get install %s failed: %s" % (" ".join(missing),
                                                                     r.stderr[-500:]))
        self.have_dovecot = bool(shutil.which("dovecot")) and os.path.exists(
            "/usr/lib/dovecot/pop3") and self.root
        if not self.have_dovecot:
            self.notes.append("Dovecot not run: %s" % (
                "not root" if not self.root else "dovecot-pop3d not installed"))
        # Debian starts the packaged Dovecot on install; the bench runs its own instances and
        # leaves the system one alone (it listens on the standard ports, not ours).

    def build(self):
        self.log("building buzon and loadgen")
        r = subprocess.run(["make", "-s", "all", "bench-tools"], cwd=REPO, capture_output=True,
                           text=True)
        if r.returncode != 0:
            sys.exit("make all bench-tools failed:\n%s%s" % (r.stdout[-3000:], r.stderr[-3000:]))
        for path in (self.buzon_bin, self.loadgen):
            if not os.access(path, os.X_OK):
                sys.exit("%s missing after make" % path)

    def prepare_data(self):
        os.makedirs(self.bench_dir, exist_ok=True)
        os.chmod(self.bench_dir, 0o755)
        pw = pwd.getpwnam(MAIL_USER) if self.root else pwd.getpwuid(os.geteuid())
        owner = (pw.pw_uid, pw.pw_gid)
        self.owner = owner
        if mkmail.stamp_matches(self.data, self.dp) and self.small_intact():
            self.log("data in %s is up to date" % self.data)
        else:
            self.log("generating data into %s" % self.data)
            t0 = time.monotonic()
            mkmail.generate(self.data, self.dp, owner)
            self.extra["data_generation_s"] = round(time.monotonic() - t0, 1)
            self.log("generated in %.1f s" % (time.monotonic() - t0))
        with open(os.path.join(self.data, "stamp.json")) as f:
            self.stamp = json.load(f)
        # the Maildirs must belong to the servers' mail user (a copy made as root would not)
        os.chown(os.path.join(self.data, "mail"), *owner)
        os.chown(os.path.join(self.data, "users"), *owner)
        self.warm_page_cache()

    def small_intact(self):
        """Removes what earlier mixed runs delivered and checks that every generated message of the
        small set is still there (bench runs never delete them); False means regenerate."""
        mail = os.path.join(self.data, "mail")
        for u in range(self.dp["small_users"]):
            top = os.path.join(mail, mkmail.SMALL_FMT % u)
            count = 0
            for sub in ("cur", "new"):
                d = os.path.join(top, sub)
                try:
                    names = os.listdir(d)
                except FileNotFoundError:
                    return False
                for n in names:
                    if ".bench," in n:
                        count += 1
                    else:
                        os.unlink(os.path.join(d, n))
            if count != self.dp["small_messages"]:
                return False
        return True

    def warm_page_cache(self):
        """Reads every message once so that no server pays for the first read from disk."""
        t0 = time.monotonic()
        buf = bytearray(1 << 20)
        for user in [mkmail.BIG_FMT % 0, mkmail.BIGBOX_USER] + [
                mkmail.SMALL_FMT % u for u in range(self.dp["small_users"])]:
            cur = os.path.join(self.data, "mail", user, "cur")
            for n in os.listdir(cur):
                fd = os.open(os.path.join(cur, n), os.O_RDONLY)
                try:
                    while os.readv(fd, [buf]) > 0:
                        pass
                finally:
                    os.close(fd)
        self.log("page cache warmed in %.1f s" % (time.monotonic() - t0))

    def make_cert(self):
        self.cert = os.path.join(self.work, "cert.pem")
        self.key = os.path.join(self.work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-keyout", self.key, "-out", self.cert], check=True, capture_output=True)
        os.chmod(self.key, 0o644)

    def start_servers(self):
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        os.chmod(self.work, 0o755)
        self.make_cert()
        self.servers["buzon"] = Buzon(os.path.join(self.work, "buzon"), self.data, self.cert,
                                      self.key, self.buzon_bin)
        if self.have_dovecot:
            for tuned in (False, True):
                d = Dovecot(os.path.join(self.work, "dovecot-tuned" if tuned else
                                         "dovecot-default"), self.data, self.cert, self.key, tuned)
                d.reset_index(self.owner)
                self.servers[d.name] = d
        for s in self.servers.values():
            self.log("starting %s (pop3 %d, pop3s %d, lmtp %d)" % (s.name, s.pop3, s.pop3s, s.lmtp))
            s.start()

    def stop_all(self):
        for s in self.servers.values():
            s.stop()
        for proc in list(LIVE):
            kill_group(proc)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            LIVE.discard(proc)

    # -- runs -----------------------------------------------------------------------------------

    def common_argv(self, server, tls, threads=NCPU):
        # loadgen's own --timeout (600 s for the whole run) stays: no run comes near it
        argv = ["--host", "127.0.0.1", "--port", server.pop3s if tls else server.pop3,
                "--password", mkmail.PASSWORD, "--seed", LOADGEN_SEED, "--threads", threads]
        if tls:
            argv.append("--tls")
        return argv

    def new_loadgen(self, server, argv, interactive=False):
        self.run_seq += 1
        errpath = os.path.join(self.work, "loadgen-%03d-%s.stderr" % (self.run_seq, server.name))
        return Loadgen(self.loadgen, argv, errpath, interactive)

    def timed_run(self, server, argv, warm, dur):
        """One loadgen run; the server's CPU time is measured from the end of the warm-up to the
        loadgen's exit. Returns (loadgen JSON, server CPU seconds / wall seconds of that window)."""
        lg = self.new_loadgen(server, argv)
        mark = {}

        def sample_start():
            mark["cpu"] = cpu_seconds(server.proc.pid)
            mark["t"] = time.monotonic()

        timer = threading.Timer(warm, sample_start) if warm > 0 else None
        if timer:
            timer.start()
        else:
            sample_start()
        rc = lg.wait(warm + dur + 120)
        if timer:
            timer.cancel()
        end_cpu, end_t = cpu_seconds(server.proc.pid), time.monotonic()
        self.check(lg, rc)
        res = lg.result()
        cores = None
        if "t" in mark and end_t > mark["t"]:
            cores = (end_cpu - mark["cpu"]) / (end_t - mark["t"])
        return res, cores

    def check(self, lg, rc):
        if rc is None:
            raise RunFailed("loadgen did not finish in time (killed)", lg.stderr_tail())
        if rc != 0:
            raise RunFailed("loadgen exited with %d" % rc, lg.stderr_tail())
        if lg.result() is None:
            raise RunFailed("loadgen printed no JSON result", lg.stderr_tail())

    def run_login(self, mode, server):
        tls = mode == "login-tls"
        if mode in ("login-yescrypt", "login-sha512"):
            pp = self.p["hash"]
            fmt = (mkmail.YES_FMT if mode == "login-yescrypt" else mkmail.SHA_FMT)
            count = self.dp["hash_users"]
        else:
            pp = self.p["login"]
            fmt, count = mkmail.SMALL_FMT, self.dp["small_users"]
        argv = self.common_argv(server, tls) + [
            "--mode", "login", "--user-format", fmt.replace("%05d", "%05u"), "--user-first", 0,
            "--user-count", count, "--concurrency", pp["conc"], "--duration", pp["dur"],
            "--warmup", pp["warm"]]
        res, cores = self.timed_run(server, argv, pp["warm"], pp["dur"])
        m = {"logins_per_s": res["sessions_per_s"], "p99_ms": res["latency_ms"]["p99"],
             "server_cores": cores}
        if cores is not None and res["sessions_per_s"] > 0:
            m["cpu_ms_per_login"] = cores / res["sessions_per_s"] * 1000
        return m, res

    def run_fetchall(self, mode, server):
        tls = mode == "fetchall-big-tls"
        if mode == "fetchall-small":
            pp = self.p["fetchall-small"]
            fmt, count = "user%05u", self.dp["small_users"]
        else:
            pp = self.p["fetchall-big"]
            fmt, count = "big%u", self.dp["big_users"]
        argv = self.common_argv(server, tls) + [
            "--mode", "fetchall", "--user-format", fmt, "--user-first", 0, "--user-count", count,
            "--concurrency", pp["conc"], "--duration", pp["dur"], "--warmup", pp["warm"]]
        res, cores = self.timed_run(server, argv, pp["warm"], pp["dur"])
        m = {"mb_per_s": res["mb_per_s"], "server_cores": cores}
        if mode == "fetchall-small":  # a 2 GB session outlasts the run: its latency is the run
            m["p99_ms"] = res["latency_ms"]["p99"]
        rate = res["bytes"] / res["elapsed_s"] / 1e9 if res.get("elapsed_s") else 0
        if cores is not None and rate > 0:
            m["cpu_s_per_gb"] = cores / rate
        return m, res

    def run_idle(self, mode, server):
        tls = mode == "idle-tls"
        pp = self.p["idle"]
        n = pp["sessions"]
        argv = self.common_argv(server, tls) + [
            "--mode", "idle", "--user-format", "idle%05u", "--user-first", 0, "--user-count", n,
            "--sessions", n, "--concurrency", pp["conc"], "--hold", -1]
        self.restart_warm(server, tls)
        base = pss_kib(server.proc.pid)
        lg = self.new_loadgen(server, argv, interactive=True)
        try:
            if not lg.wait_ready(300):
                rc = lg.wait(30)
                raise RunFailed("loadgen never printed READY (exit %s)" % rc, lg.stderr_tail())
            time.sleep(1)  # the last logins' replies are out; let the server finish its work
            held = pss_kib(server.proc.pid)
            procs = tree_size(server.proc.pid)
        finally:
            lg.release()
        rc = lg.wait(120)
        self.check(lg, rc)
        res = lg.result()
        m = {"kib_per_session": (held - base) / n, "held_mib": held / 1024,
             "baseline_mib": base / 1024, "noop_ok": res.get("noop_ok"),
             "ready_s": res.get("ready_s"), "processes": procs}
        return m, res

    def restart_warm(self, server, tls):
        """A fresh server for a memory measurement: memory that earlier modes made a process
        keep (heap, Dovecot's long-lived pop3 processes) would otherwise be reused by the new
        sessions and hide their cost. Then a short warm-up (200 logins, 4 at a time) so that
        what a server sets up once (TLS context, auth connections, process pools) is in the
        baseline."""
        server.stop()
        server.start()
        argv = self.common_argv(server, tls, threads=1) + [
            "--mode", "login", "--user-format", "idle%05u", "--user-first", 0, "--user-count", 100,
            "--sessions", 200, "--concurrency", 4]
        lg = self.new_loadgen(server, argv)
        self.check(lg, lg.wait(120))
        time.sleep(1)  # let the warm-up's connections and (Dovecot) processes go away

    def run_bigbox(self, mode, server):
        maildir = os.path.join(self.data, "mail", mkmail.BIGBOX_USER)
        server.remove_index(maildir)
        out = {}
        raw = {}
        for label, sessions in (("first", 1), ("warm", self.p["bigbox"]["warm_sessions"])):
            argv = self.common_argv(server, False, threads=1) + [
                "--mode", "bigbox", "--user-format", "bigbox%u", "--user-first", 0,
                "--user-count", 1, "--sessions", sessions]
            lg = self.new_loadgen(server, argv)
            rc = lg.wait(900)
            self.check(lg, rc)
            res = lg.result()
            raw[label] = res
            for part in ("pass", "stat", "uidl", "total"):
                out["%s_%s_ms" % (label, part)] = res["%s_ms" % part]["median"]
        return out, raw

    def run_isolation(self, mode, server):
        pp = self.p["isolation"]
        fetch_argv = self.common_argv(server, False) + [
            "--mode", "fetchall", "--user-format", "big%u", "--user-first", 0,
            "--user-count", self.dp["big_users"], "--concurrency", self.p["fetchall-big"]["conc"],
            "--duration", pp["dur"], "--probe", pp["probe"], "--probe-user-format", "idle%05u",
            "--probe-user-first", 0]
        box_argv = self.common_argv(server, False, threads=1) + [
            "--mode", "bigbox", "--user-format", "bigbox%u", "--user-first", 0, "--user-count", 1,
            "--sessions", 1000000, "--duration", pp["dur"]]
        fetch = self.new_loadgen(server, fetch_argv)
        box = self.new_loadgen(server, box_argv)
        rc_box = box.wait(pp["dur"] + 60)
        rc = fetch.wait(pp["dur"] + 60)
        self.check(fetch, rc)
        self.check(box, rc_box)
        res, bres = fetch.result(), box.result()
        probe = res.get("probe") or {}
        m = {"probe_p99_ms": probe.get("p99"), "probe_p50_ms": probe.get("p50"),
             "probe_max_ms": probe.get("max"), "mb_per_s": res.get("mb_per_s"),
             "bigbox_logins": bres.get("sessions")}
        return m, {"fetchall": res, "bigbox": bres}

    def run_mixed(self, mode, server):
        pp = self.p["mixed"]
        argv = self.common_argv(server, False) + [
            "--mode", "mixed", "--user-format", "user%05u", "--user-first", 0,
            "--user-count", self.dp["small_users"], "--concurrency", pp["conc"],
            "--duration", pp["dur"], "--seeded", self.dp["small_messages"]]
        if server.has_lmtp():
            argv += ["--lmtp-port", server.lmtp, "--lmtp-rate", pp["lmtp_rate"],
                     "--lmtp-domain", mkmail.DOMAIN]
        res, cores = self.timed_run(server, argv, 0, pp["dur"])
        m = {"sessions_per_s": res["sessions_per_s"], "p99_ms": res["latency_ms"]["p99"],
             "deliveries": res.get("deliveries"), "server_cores": cores}
        if cores is not None and res["sessions_per_s"] > 0:
            m["cpu_ms_per_session"] = cores / res["sessions_per_s"] * 1000
        return m, res

    def run_idle_50k(self):
        """50,000 idle sessions against a buzon with more workers (each worker's 20,000 fds hold
        about 10,000 sessions: socket and maildrop lock), from several loadgen processes with
        their own source addresses (one address has ~28,000 ephemeral ports)."""
        pp = self.p["idle-50k"]
        n, procs = pp["sessions"], pp["procs"]
        per = n // procs
        for name in [s for s in self.servers if s != "buzon"]:
            self.servers[name].stop()  # the machine to itself: 50,000 sessions is a lot of memory
        self.servers["buzon"].stop()
        srv = Buzon(os.path.join(self.work, "buzon-50k"), self.data, self.cert, self.key,
                    self.buzon_bin, workers=pp["workers"],
                    max_connections=max(1000, n // pp["workers"] * 2))
        self.servers["buzon-50k"] = srv
        self.log("starting buzon with %d workers for idle-50k" % pp["workers"])
        srv.start()
        time.sleep(1)
        base = pss_kib(srv.proc.pid)
        lgs = []
        for k in range(procs):
            sources = ",".join("127.0.%d.%d" % (1 + k, j) for j in range(1, 5))
            argv = self.common_argv(srv, False, threads=1) + [
                "--mode", "idle", "--user-format", "idle%05u", "--user-first", k * per,
                "--user-count", per, "--sessions", per, "--concurrency", pp["conc"],
                "--hold", -1, "--sources", sources]
            lgs.append(self.new_loadgen(srv, argv, interactive=True))
        try:
            t0 = time.monotonic()
            for lg in lgs:
                if not lg.wait_ready(max(1, 600 - (time.monotonic() - t0))):
                    rc = lg.wait(30)
                    raise RunFailed("a loadgen never printed READY (exit %s)" % rc,
                                    lg.stderr_tail())
            ready_s = time.monotonic() - t0
            time.sleep(1)
            held = pss_kib(srv.proc.pid)
            time.sleep(max(0, pp["hold"] - 1))
        finally:
            for lg in lgs:
                lg.release()
        results = []
        for lg in lgs:
            rc = lg.wait(300)
            self.check(lg, rc)
            results.append(lg.result())
        ok = sum(r.get("noop_ok", 0) for r in results)
        m = {"noop_ok": ok, "sessions": per * procs, "kib_per_session": (held - base) / (per * procs),
             "held_mib": held / 1024, "baseline_mib": base / 1024, "ready_s": ready_s,
             "all_answered": ok == per * procs}
        return m, results

    def run_one(self, mode, server_name, rnd):
        server = self.servers[server_name]
        kind = mode_kind(mode)
        rec = {"mode": mode, "server": server_name, "round": rnd}
        if not server.alive():
            self.log("%s is not running; restarting it" % server_name)
            self.notes.append("%s died before %s round %d and was restarted"
                              % (server_name, mode, rnd))
            try:
                server.stop()
                server.start()
            except Exception as e:  # noqa: BLE001 - recorded, the bench goes on
                rec.update(ok=False, error="restart failed: %s" % e, stderr="")
                return rec
        t0 = time.monotonic()
        try:
            fn = {"login": self.run_login, "fetchall": self.run_fetchall, "idle": self.run_idle,
                  "bigbox": self.run_bigbox, "isolation": self.run_isolation,
                  "mixed": self.run_mixed}[kind]
            metrics, raw = fn(mode, server)
            rec.update(ok=True, metrics=metrics, loadgen=raw)
        except RunFailed as e:
            rec.update(ok=False, error=str(e), stderr=e.stderr, server_log=server.log_tail(1500))
        except Exception as e:  # noqa: BLE001 - a harness bug in one run must not stop the bench
            rec.update(ok=False, error="harness: %s" % e, stderr=traceback.format_exc()[-2000:],
                       server_log=server.log_tail(1500))
        rec["wall_s"] = round(time.monotonic() - t0, 2)
        return rec

    def mode_servers(self, mode):
        names = MODE_SERVERS.get(mode, SERVERS)
        return [n for n in names if n in self.servers]

    def run_all(self):
        for mode in self.modes:
            if mode == "idle-50k":
                continue
            self.results[mode] = {}
            for rnd in range(1, self.rounds + 1):
                for name in self.mode_servers(mode):
                    if rnd > 1 and (mode, name) in FIRST_ROUND_ONLY:
                        continue
                    rec = self.run_one(mode, name, rnd)
                    self.results[mode].setdefault(name, []).append(rec)
                    self.log("%-18s round %d %-16s %s" % (mode, rnd, name, summary(mode, rec)))
                    time.sleep(SETTLE)
        if "idle-50k" in self.modes:
            rec = {"mode": "idle-50k", "server": "buzon", "round": 1}
            t0 = time.monotonic()
            try:
                metrics, raw = self.run_idle_50k()
                rec.update(ok=True, metrics=metrics, loadgen=raw)
            except RunFailed as e:
                rec.update(ok=False, error=str(e), stderr=e.stderr,
                           server_log=self.servers["buzon-50k"].log_tail(1500))
            except Exception as e:  # noqa: BLE001
                rec.update(ok=False, error="harness: %s" % e,
                           stderr=traceback.format_exc()[-2000:])
            rec["wall_s"] = round(time.monotonic() - t0, 2)
            self.results["idle-50k"] = {"buzon": [rec]}
            self.log("%-18s round 1 %-16s %s" % ("idle-50k", "buzon", summary("idle-50k", rec)))

    # -- hashing --------------------------------------------------------------------------------

    def hash_times(self):
        """The hash-bound login rate of this machine for the hash users' settings: how many
        crypt(3) calls per second NCPU processes complete together (all cores hashing at once,
        which on a virtual machine is less than NCPU times one core's rate), plus one core's time
        per call for reference. The median of 5 batches: the machine may not be quite idle."""
        import multiprocessing
        out = {}
        with open(os.path.join(self.data, "users")) as f:
            lines = f.read().splitlines()
        for scheme, prefix, calls in (("yescrypt", "yes", 25), ("sha512", "sha", 200)):
            line = next(l for l in lines if l.startswith(prefix))
            setting = line.split("}", 1)[1]
            mkmail.crypt.crypt(mkmail.PASSWORD, setting)
            batches = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(calls // 5):
                    mkmail.crypt.crypt(mkmail.PASSWORD, setting)
                batches.append((time.perf_counter() - t0) / (calls // 5))
            t = statistics.median(batches)
            rates = []
            pool = multiprocessing.Pool(NCPU, initializer=_crypt_worker_init)
            try:
                for _ in range(5):
                    t0 = time.perf_counter()
                    pool.map(_crypt_batch, [(setting, calls // 5)] * NCPU)
                    rates.append(NCPU * (calls // 5) / (time.perf_counter() - t0))
            finally:
                pool.close()
                pool.join()
            out[scheme] = {"hash_ms": t * 1000, "limit_per_s": statistics.median(rates),
                           "one_core_limit_per_s": NCPU / t,
                           "parallel_rates": [round(r, 1) for r in rates],
                           "batches_ms": [round(b * 1000, 3) for b in batches],
                           "setting": setting[:setting.rindex("$") + 1]}
        return out

    # -- main -----------------------------------------------------------------------------------

    def main(self):
        self.install()
        if not self.args.no_build:
            self.build()
        self.prepare_data()
        self.hashes = self.hash_times()
        self.log("hash time: " + ", ".join("%s %.2f ms (limit %.0f/s)" % (
            k, v["hash_ms"], v["limit_per_s"]) for k, v in self.hashes.items()))
        try:
            self.start_servers()
            self.versions = versions(self.buzon_bin)
            self.configs = {n: getattr(s, "config_text", "") for n, s in self.servers.items()}
            self.run_all()
            self.configs.update({n: getattr(s, "config_text", "")
                                 for n, s in self.servers.items()})
        finally:
            self.stop_all()
        self.total_s = time.monotonic() - self.started
        paths = write_report(self)
        for p in paths:
            self.log("wrote %s" % p)
        return self.exit_status()

    def exit_status(self):
        bad = [r for recs in self.results.values() for r in recs.get("buzon", []) if not r["ok"]]
        if bad:
            self.log("buzon failed %d run(s)" % len(bad))
            return 1
        if self.quick and self.have_dovecot:
            tuned = [r for recs in self.results.values() for r in recs.get("dovecot-tuned", [])]
            if not any(r["ok"] for r in tuned):
                self.log("dovecot-tuned did not answer")
                return 1
        return 0


def summary(mode, rec):
    if not rec["ok"]:
        return "FAILED: %s" % rec["error"]
    first = METRICS[mode_kind(mode)][0]
    v = rec["metrics"].get(first[0])
    return "%s %s (%.1f s)" % (first[3] % v if v is not None else "?", first[1], rec["wall_s"])


def versions(buzon_bin):
    v = {}
    try:
        v["buzon"] = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=REPO,
                                    capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        v["buzon"] = ""
    if not v["buzon"]:
        v["buzon"] = subprocess.run([buzon_bin, "--version"], capture_output=True,
                                    text=True).stdout.strip()
    try:
        v["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True,
                                      text=True).stdout.strip()
    except OSError:
        v["dovecot"] = "not installed"
    v["openssl"] = subprocess.run(["openssl", "version"], capture_output=True,
                                  text=True).stdout.strip()
    return v


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"nproc": NCPU, "kernel": platform.release(), "cpu": model,
            "loadavg_start": LOADAVG_START, "loadavg_end": os.getloadavg(),
            "memory_gib": round(mem_kib / 1024 / 1024, 1), "python": platform.python_version()}


# ------------------------------------------------------------------------------------------------
# Report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mode_values(bench, mode, server, key):
    return [r["metrics"].get(key) for r in bench.results.get(mode, {}).get(server, []) if r["ok"]]


def median_of(bench, mode, server, key):
    return med(mode_values(bench, mode, server, key))


def best_dovecot(bench, mode, key, better):
    cands = [(median_of(bench, mode, s, key), s) for s in ("dovecot-default", "dovecot-tuned")]
    cands = [c for c in cands if c[0] is not None]
    if not cands:
        return None, None
    return (max(cands) if better == "higher" else min(cands))


def advantage(b, d, better):
    """> 1 means buzon is better: buzon ÷ Dovecot for higher-is-better, Dovecot ÷ buzon else.
    None when a value is missing or not positive (a ratio of those means nothing)."""
    if b is None or d is None or b <= 0 or d <= 0:
        return None
    if better == "higher":
        return b / d if d else None
    return d / b if b else None


def cell(bench, mode, server, key, fmt):
    recs = bench.results.get(mode, {}).get(server)
    if recs is None:
        return "—"
    vals = [v for v in mode_values(bench, mode, server, key) if v is not None]
    failed = sum(1 for r in recs if not r["ok"])
    if not vals:
        return "FAILED" if failed else "n/a"
    text = fmt % statistics.median(vals)
    if len(vals) > 1:
        text += " (%s–%s)" % (fmt % min(vals), fmt % max(vals))
    if failed:
        text += ", %d FAILED" % failed
    return text


def targets(bench):
    """(target, measured text, status) rows; status is MET, MISSED or n/a."""
    rows = []

    def ratio_target(label, mode, key, want):
        b = median_of(bench, mode, "buzon", key)
        d, dname = best_dovecot(bench, mode, key, "higher")
        r = advantage(b, d, "higher")
        if r is None:
            rows.append((label, "n/a", "n/a"))
        else:
            rows.append((label, "%.2f× (buzon %.0f, %s %.0f)" % (r, b, dname, d),
                         "MET" if r >= want else "MISSED"))

    ratio_target("logins/s plain ≥ 3× Dovecot", "login-plain", "logins_per_s", 3)
    ratio_target("logins/s TLS ≥ 2× Dovecot", "login-tls", "logins_per_s", 2)
    for mode, scheme in (("login-yescrypt", "yescrypt"), ("login-sha512", "sha512")):
        b = median_of(bench, mode, "buzon", "logins_per_s")
        d, dname = best_dovecot(bench, mode, "logins_per_s", "higher")
        if b is None or scheme not in bench.hashes:
            rows.append(("%s logins within 10%% of the hash-bound limit, ahead of Dovecot" % scheme,
                         "n/a", "n/a"))
            continue
        limit = bench.hashes[scheme]["limit_per_s"]
        frac = b / limit
        ahead = d is None or b > d
        rows.append(("%s logins within 10%% of the hash-bound limit, ahead of Dovecot" % scheme,
                     "%.0f/s = %.0f%% of %.0f/s (%d cores hashing at once; one core: %s ms); "
                     "Dovecot best %s"
                     % (b, frac * 100, limit, NCPU, "%.2f" % bench.hashes[scheme]["hash_ms"],
                        "%.0f/s (%s)" % (d, dname) if d is not None else "n/a"),
                     "MET" if frac >= 0.9 and ahead else "MISSED"))
    ratio_target("fetch all, small mailboxes, MB/s ≥ 2× Dovecot", "fetchall-small", "mb_per_s", 2)
    ratio_target("2 GB mailbox MB/s plain ≥ 1.5× Dovecot", "fetchall-big-plain", "mb_per_s", 1.5)
    ratio_target("2 GB mailbox MB/s TLS ≥ 1.5× Dovecot", "fetchall-big-tls", "mb_per_s", 1.5)
    for mode, limit in (("idle-plain", 8), ("idle-tls", 48)):
        b = median_of(bench, mode, "buzon", "kib_per_session")
        rows.append(("memory per idle session, %s, ≤ %d KiB" % (mode.split("-")[1], limit),
                     "n/a" if b is None else "%.1f KiB" % b,
                     "n/a" if b is None else ("MET" if b <= limit else "MISSED")))
    recs = bench.results.get("idle-50k", {}).get("buzon", [])
    if recs and recs[0]["ok"]:
        m = recs[0]["metrics"]
        rows.append(("%d idle plain sessions, every one answers NOOP" % m["sessions"],
                     "%d of %d answered, %.2f KiB each" % (m["noop_ok"], m["sessions"],
                                                           m["kib_per_session"]),
                     "MET" if m["all_answered"] and m["sessions"] >= 50000 else
                     ("MISSED" if not m["all_answered"] else "n/a (quick: %d)" % m["sessions"])))
    elif recs:
        rows.append(("50,000 idle plain sessions, every one answers NOOP",
                     "FAILED: %s" % recs[0]["error"], "MISSED"))
    else:
        rows.append(("50,000 idle plain sessions, every one answers NOOP", "not run", "n/a"))
    b = median_of(bench, "bigbox", "buzon", "warm_total_ms")
    d, dname = best_dovecot(bench, "bigbox", "warm_total_ms", "lower")
    box = "%dk" % (bench.dp["bigbox_messages"] // 1000)
    rows.append(("%s mailbox, second login PASS+STAT+UIDL ≤ 25%% of Dovecot's" % box,
                 "n/a" if b is None or d is None else
                 "%.1f ms = %.2f%% of %s's %.1f ms" % (b, b / d * 100, dname, d),
                 "n/a" if b is None or d is None else ("MET" if b <= 0.25 * d else "MISSED")))
    b = median_of(bench, "bigbox", "buzon", "first_total_ms")
    d, dname = best_dovecot(bench, "bigbox", "first_total_ms", "lower")
    rows.append(("%s mailbox, first login (no index) no slower than Dovecot's" % box,
                 "n/a" if b is None or d is None else
                 "%.0f ms vs %s %.0f ms" % (b, dname, d),
                 "n/a" if b is None or d is None else ("MET" if b <= d else "MISSED")))
    b = median_of(bench, "isolation", "buzon", "probe_p99_ms")
    rows.append(("isolation: NOOP p99 of %d idle sessions < 20 ms during big-mailbox load"
                 % bench.p["isolation"]["probe"],
                 "n/a" if b is None else "%.2f ms" % b,
                 "n/a" if b is None else ("MET" if b < 20 else "MISSED")))
    for label, mode, key in (("server CPU per login lower than Dovecot's", "login-plain",
                              "cpu_ms_per_login"),
                             ("server CPU per login (TLS) lower than Dovecot's", "login-tls",
                              "cpu_ms_per_login"),
                             ("server CPU per GB lower than Dovecot's (small mailboxes)",
                              "fetchall-small", "cpu_s_per_gb"),
                             ("server CPU per GB lower than Dovecot's (2 GB mailbox)",
                              "fetchall-big-plain", "cpu_s_per_gb")):
        b = median_of(bench, mode, "buzon", key)
        d, dname = best_dovecot(bench, mode, key, "lower")
        unit = "ms" if "login" in key else "s/GB"
        rows.append((label, "n/a" if b is None or d is None else
                     "%.3g %s vs %s %.3g %s" % (b, unit, dname, d, unit),
                     "n/a" if b is None or d is None else ("MET" if b < d else "MISSED")))
    return rows


def mode_params(bench, mode):
    kind = mode_kind(mode)
    p = bench.p
    if kind == "login":
        pp = p["hash"] if mode in ("login-yescrypt", "login-sha512") else p["login"]
        return "concurrency %d, %s s after %s s warm-up%s" % (
            pp["conc"], pp["dur"], pp["warm"], ", TLS" if mode.endswith("tls") else "")
    if kind == "fetchall":
        pp = p["fetchall-small" if mode == "fetchall-small" else "fetchall-big"]
        return "concurrency %d, %s s%s" % (pp["conc"], pp["dur"],
                                           ", TLS" if mode.endswith("tls") else "")
    if kind == "idle":
        return "%d sessions%s; server memory before logging them in and while they are held%s" % (
            p["idle"]["sessions"], ", TLS" if mode.endswith("tls") else "",
            "; dovecot-default in round 1 only (a process per session; see FIRST_ROUND_ONLY)"
            if bench.rounds > 1 and (mode, "dovecot-default") in FIRST_ROUND_ONLY else "")
    if kind == "bigbox":
        return ("%d messages; first login after removing the server's index, then %d logins. "
                "buzon opens and indexes the mailbox at PASS, Dovecot at STAT: compare the sums"
                % (bench.dp["bigbox_messages"], p["bigbox"]["warm_sessions"]))
    if kind == "isolation":
        return ("fetchall of big0..big7 at concurrency %d plus back-to-back bigbox logins for "
                "%s s; %d idle probe sessions send NOOP every 100 ms"
                % (p["fetchall-big"]["conc"], p["isolation"]["dur"], p["isolation"]["probe"]))
    if kind == "mixed":
        return "concurrency %d, %s s, LMTP %d deliveries/s" % (
            p["mixed"]["conc"], p["mixed"]["dur"], p["mixed"]["lmtp_rate"])
    pp = p["idle-50k"]
    return "%d sessions from %d loadgen processes, %d workers, %s s hold" % (
        pp["sessions"], pp["procs"], pp["workers"], pp["hold"])


MODE_TITLES = {
    "login-plain": "Logins (USER/PASS/STAT/QUIT), plaintext, {PLAIN} passwords",
    "login-tls": "Logins over implicit TLS (full handshake each)",
    "login-yescrypt": "Logins, yescrypt hashes ($y$j9T$)",
    "login-sha512": "Logins, SHA512-CRYPT hashes (5000 rounds)",
    "fetchall-small": "Download every message of the small mailboxes (UIDL, LIST, RETR all)",
    "fetchall-big-plain": "Download the 2 GB mailbox, 8 users in parallel, plaintext",
    "fetchall-big-tls": "Download the 2 GB mailbox, 8 users in parallel, TLS",
    "idle-plain": "Idle logged-in sessions, plaintext: server memory",
    "idle-tls": "Idle logged-in sessions, TLS: server memory",
    "bigbox": "100,000-message mailbox: PASS, STAT, UIDL",
    "isolation": "Isolation: idle sessions' NOOP latency during heavy load",
    "mixed": "Mixed load (checks, downloads with DELE, full fetches) with LMTP deliveries",
    "idle-50k": "50,000 idle sessions (buzon only)",
}


def write_report(bench):
    date = datetime.date.today().isoformat()
    out_dir = bench.args.out or (os.path.join(REPO, "build", "bench-quick") if bench.quick
                                 else os.path.join(HERE, "results"))
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, date)
    mach = machine()
    L = []
    L.append("# buzon vs Dovecot: `make bench%s`, %s" % (" QUICK=1" if bench.quick else "", date))
    L.append("")
    L.append("Machine: %d cores (%s), %s GiB, Linux %s. buzon %s, %s, %s. Client: "
             "build/bench/loadgen on the same machine (it shares the cores with the server under "
             "test, the same way for every server), loopback only. Load average before the "
             "bench %.2f, after %.2f (1 min; above 0.5 before means something else was running)."
             % (mach["nproc"], mach["cpu"], mach["memory_gib"], mach["kernel"],
                bench.versions.get("buzon"), "Dovecot " + bench.versions.get("dovecot", "?"),
                bench.versions.get("openssl"), mach["loadavg_start"][0],
                mach["loadavg_end"][0]))
    L.append("")
    L.append("Servers: **buzon** (`workers = auto`, as shipped but for per-IP limits); "
             "**dovecot-default** (Debian's defaults: a pop3-login and a pop3 process per "
             "connection; only ports, paths and process/client limits changed); "
             "**dovecot-tuned** (high-performance mode and the Maildir settings an expert would "
             "use; the config is in the JSON file and in bench/bench.py). Same certificate "
             "(ECDSA P-256), same passwd-file, same Maildirs (%s: small %.0f MB in %d mailboxes, "
             "big %.0f MB in %d messages hard-linked into %d users, bigbox %d messages)."
             % (bench.data, bench.stamp["small_bytes"] / 1e6, bench.dp["small_users"],
                bench.stamp["big_bytes"] / 1e6, bench.dp["big_messages"], bench.dp["big_users"],
                bench.dp["bigbox_messages"]))
    L.append("")
    L.append("Each mode ran %d round(s), servers alternating (buzon, dovecot-default, "
             "dovecot-tuned, buzon, ...). Cells: median (min–max over rounds). **Advantage** "
             "compares buzon with the better Dovecot for that row: for throughput it is buzon ÷ "
             "Dovecot; for latency, memory, CPU and time it is Dovecot ÷ buzon; either way > 1 "
             "means buzon is better by that factor. Server CPU is the whole process tree's "
             "user+system time (/proc) during the measured window; memory is the sum of PSS "
             "over the tree; idle modes restart the server and warm it up (200 logins) before "
             "the baseline. \"Server CPU cores busy\" is the share of the %d cores the server "
             "used; the client had most of the rest, so a server well below %d cores means a "
             "client-bound run, where server CPU per operation is the fairer comparison. "
             "Whole run: %.1f min." % (bench.rounds, NCPU, NCPU, bench.total_s / 60))
    L.append("")
    for note in bench.notes:
        L.append("- Note: %s" % note)
    if bench.notes:
        L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| Target | Measured | |")
    L.append("|---|---|---|")
    trows = targets(bench)
    for t, m, s in trows:
        L.append("| %s | %s | %s |" % (t, m, "**%s**" % s if s in ("MET", "MISSED") else s))
    L.append("")
    L.append("Hash-bound limit: crypt(3) calls per second with all %d cores hashing at once "
             "(%d Python processes, median of 5 batches, measured before the servers start); "
             "one core's time per call and %d× its rate for comparison (on this virtual machine "
             "the cores do not add up): %s." % (NCPU, NCPU, NCPU, "; ".join(
                 "%s %.0f/s (one core %.2f ms → %.0f/s)" % (
                     k, v["limit_per_s"], v["hash_ms"], v.get("one_core_limit_per_s", 0))
                 for k, v in bench.hashes.items())))
    L.append("")
    for mode in bench.modes:
        if mode not in bench.results:
            continue
        kind = mode_kind(mode)
        names = [s for s in SERVERS if s in bench.results[mode]]
        L.append("## %s: %s" % (mode, MODE_TITLES.get(mode, "")))
        L.append("")
        L.append("Parameters: %s." % mode_params(bench, mode))
        L.append("")
        L.append("| | %s | Advantage |" % " | ".join(names))
        L.append("|---|%s---|" % ("---|" * len(names)))
        for key, label, better, fmt in METRICS[kind]:
            cells = [cell(bench, mode, s, key, fmt) for s in names]
            if all(c == "n/a" for c in cells):
                continue
            if better == "info" or len(names) < 2:
                adv = ""
            else:
                b = median_of(bench, mode, "buzon", key)
                d, dname = best_dovecot(bench, mode, key, better)
                r = advantage(b, d, better)
                adv = "" if r is None else "%.2f× (vs %s, %s is better)" % (
                    r, dname.replace("dovecot-", ""), better)
            L.append("| %s | %s | %s |" % (label, " | ".join(cells), adv))
        if mode in ("login-yescrypt", "login-sha512"):
            scheme = "yescrypt" if mode == "login-yescrypt" else "sha512"
            limit = bench.hashes[scheme]["limit_per_s"]
            L.append("| share of hash-bound limit (%.0f/s) | %s | |" % (limit, " | ".join(
                "n/a" if median_of(bench, mode, s, "logins_per_s") is None else
                "%.0f%%" % (median_of(bench, mode, s, "logins_per_s") / limit * 100)
                for s in names)))
        L.append("")
        for s in names:
            for r in bench.results[mode][s]:
                if not r["ok"]:
                    L.append("FAILED: %s round %d: %s" % (s, r["round"], r["error"]))
                    L.append("")
                    L.append("```")
                    L.append((r.get("stderr") or "").strip()[-1500:])
                    if r.get("server_log"):
                        L.append(r["server_log"].strip()[-1500:])
                    L.append("```")
                    L.append("")
    png = plot(bench, base)
    if png:
        L.append("![relative performance](%s)" % os.path.basename(png))
        L.append("")
    md = base + ".md"
    with open(md, "w") as f:
        f.write("\n".join(L))
    raw = {
        "date": date, "quick": bench.quick, "rounds": bench.rounds, "machine": mach,
        "versions": bench.versions, "params": bench.p, "data": bench.stamp,
        "hashes": bench.hashes, "notes": bench.notes, "total_s": bench.total_s,
        "extra": bench.extra, "configs": bench.configs,
        "targets": [{"target": t, "measured": m, "status": s} for t, m, s in trows],
        "results": bench.results,
    }
    with open(base + ".json", "w") as f:
        json.dump(raw, f, indent=1, default=str)
    return [p for p in (md, base + ".json", png) if p]


def plot(bench, base):
    """Grouped bars: each Dovecot relative to buzon on each mode's headline metric, oriented so
    that higher is better (buzon = 1). Log scale: the ratios span orders of magnitude."""
    if not shutil.which("gnuplot"):
        bench.notes.append("gnuplot not installed: no chart")
        return None
    rows = []
    for mode in bench.modes:
        if mode not in bench.results or mode == "idle-50k":
            continue
        key, label, better, _ = METRICS[mode_kind(mode)][0]
        b = median_of(bench, mode, "buzon", key)
        if not b:
            continue
        rel = []
        for s in ("dovecot-tuned", "dovecot-default"):
            v = median_of(bench, mode, s, key)
            if v is None or v <= 0:
                rel.append("?")
            else:
                rel.append("%.4g" % (v / b if better == "higher" else b / v))
        rows.append('"%s\\n%s" 1 %s' % (mode, label.split(" (")[0], " ".join(rel)))
    if not rows:
        return None
    dat = base + ".dat"
    with open(dat, "w") as f:
        f.write("\n".join(rows) + "\n")
    png = base + ".png"
    script = """
set terminal pngcairo size 1400,700 font "sans,10"
set output '{png}'
set title "Dovecot relative to buzon on each mode's headline metric (buzon = 1; higher is better; log scale)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set yrange [0.001:10]
set ytics ("0.001" 0.001, "0.01" 0.01, "0.1" 0.1, "0.25" 0.25, "0.5" 0.5, "1" 1, "2" 2, "5" 5, "10" 10)
set grid ytics
set datafile missing "?"
set xtics rotate by -30 left font "sans,9"
set key top right
set bmargin 9
set rmargin 12
plot '{dat}' using 2:xtic(1) title "buzon" lc rgb "#1f77b4", \\
     '' using 3 title "dovecot-tuned" lc rgb "#ff7f0e", \\
     '' using 4 title "dovecot-default" lc rgb "#9e9e9e"
""".format(png=png, dat=dat)
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    os.unlink(dat)
    if r.returncode != 0 or not os.path.exists(png):
        bench.notes.append("gnuplot failed: %s" % r.stderr[-300:])
        return None
    return png


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI smoke test: small data, short runs")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--modes", default=None, help="comma-separated subset of: %s"
                    % ",".join(FULL_MODES))
    ap.add_argument("--bench-dir", default=os.environ.get("BENCH_DIR", "/var/tmp/buzon-bench"))
    ap.add_argument("--out", default=None, help="report directory")
    ap.add_argument("--loadgen", default=os.path.join(REPO, "build", "bench", "loadgen"))
    ap.add_argument("--no-build", action="store_true", help="use the binaries as they are")
    args = ap.parse_args()
    if args.modes:
        unknown = set(args.modes.split(",")) - set(FULL_MODES)
        if unknown:
            ap.error("unknown modes: %s" % ", ".join(sorted(unknown)))
    if os.path.realpath(args.bench_dir).startswith(os.path.realpath(REPO) + os.sep):
        ap.error("BENCH_DIR must be outside the repository")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # SIGINT explicitly too: a shell that starts us in the background leaves it ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)
    bench = Bench(args)
    try:
        return bench.main()
    except KeyboardInterrupt:
        print("interrupted; servers and loadgens stopped", file=sys.stderr)
        return 130
    finally:
        bench.stop_all()


if __name__ == "__main__":
    sys.exit(main())
