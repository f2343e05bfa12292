"""Shared helpers for buzon's protocol (tests/integration) and real-client (tests/interop) suites.

Everything here uses the standard library only. A test gets a running server from the fixtures in
tests/conftest.py; this module holds the server runner (config file, users, Maildir seeding, start
and stop with sanitizer checks), a raw-socket POP3 client and the byte transformations that say
what the server must send for a given message file.
"""

import os
import pwd
import re
import signal
import socket
import subprocess
import tempfile
import time

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(TESTS_DIR)

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

# BUZON_VALGRIND=1 (`make check-valgrind`) runs every server and CLI command of the tests under
# valgrind memcheck. Everything is 20-50 times slower there, so the harness's own waits grow with it;
# tests that measure time or memory skip themselves (see `valgrind_unsuitable`).
VALGRIND = os.environ.get("BUZON_VALGRIND") == "1"
TIME_SCALE = 10.0 if VALGRIND else 1.0

STOP_TIMEOUT = 10.0 * TIME_SCALE
READY_TIMEOUT = 10.0 * TIME_SCALE
IO_TIMEOUT = 10.0 * TIME_SCALE

DEMO_USER = "demo"
DEMO_PASS = "secret"


def buzon_bin():
    return os.environ.get("BUZON_BIN") or os.path.join(REPO_DIR, "build", "buzon")


def valgrind_prefix(log_dir):
    """The command prefix that runs a buzon command under memcheck (empty unless BUZON_VALGRIND=1).

    One log per process (%p), forked children included, so that a worker's errors are not lost in
    the master's; definite and indirect leaks count as errors. No vgdb: its FIFOs, made in /tmp
    before a command started as root drops to the mail user, could not be removed afterwards, and
    valgrind says so in the log."""
    if not VALGRIND:
        return []
    return ["valgrind", "--quiet", "--vgdb=no", "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect", "--track-fds=no", "--num-callers=30",
            "--log-file=" + os.path.join(log_dir, "valgrind-%p.log")]


def valgrind_problems(log_dir):
    """Every valgrind log under log_dir that reports an error, with its text."""
    problems = []
    if not VALGRIND or not os.path.isdir(log_dir):
        return problems
    for name in sorted(os.listdir(log_dir)):
        if not (name.startswith("valgrind-") and name.endswith(".log")):
            continue
        with open(os.path.join(log_dir, name), "rb") as f:
            text = f.read()
        # --quiet: valgrind writes to a log only to report an error or a counted leak
        if text.strip():
            problems.append("valgrind report in %s:\n%s" % (name, text[-12000:].decode("utf-8", "replace")))
    return problems



def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        s.bind(("::1", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port(ipv6_too=False):
    """A TCP port that is free on 127.0.0.1 (and on ::1 when ipv6_too)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if not ipv6_too:
            return port
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s6.bind(("::1", port))
            return port
        except OSError:
            continue
        finally:
            s6.close()
    raise RuntimeError("no free port found")


# ---------------------------------------------------------------------------------------------
# What the server must send for a message file


def to_crlf(data):
    """Bare LF becomes CRLF; an existing CRLF stays as it is."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def pop3_size(data):
    """The size STAT/LIST must report: CRLF-converted octets, without the CRLF RETR may add."""
    return len(to_crlf(data))


def retr_expected(data):
    """The message as RETR sends it before dot-stuffing (ends with CRLF unless empty)."""
    c = to_crlf(data)
    if c and not c.endswith(b"\r\n"):
        c += b"\r\n"
    return c


def dotstuff(payload):
    """payload: CRLF-terminated lines (or b''). Returns the multi-line body on the wire incl. '.'."""
    if not payload:
        return b".\r\n"
    lines = payload.split(b"\r\n")
    assert lines[-1] == b""
    out = [b"." + l if l.startswith(b".") else l for l in lines[:-1]]
    return b"\r\n".join(out) + b"\r\n.\r\n"


def undot(wire):
    """wire: the multi-line body without the terminating '.\\r\\n'. Removes the byte-stuffing."""
    if not wire:
        return b""
    lines = wire.split(b"\r\n")
    assert lines[-1] == b"", "multi-line body does not end with CRLF"
    out = [l[1:] if l.startswith(b".") else l for l in lines[:-1]]
    return b"\r\n".join(out) + b"\r\n"


def top_expected(data, n):
    """Headers, the blank line and n body lines, as TOP sends them before dot-stuffing."""
    c = retr_expected(data)
    if not c:
        return b""
    lines = c.split(b"\r\n")[:-1]
    try:
        h = lines.index(b"")
    except ValueError:
        return c  # no body at all: everything is header
    keep = lines[: h + 1 + n]
    return b"\r\n".join(keep) + b"\r\n"


def make_message(subject, body, extra_headers=b"", nl=b"\n"):
    """A simple RFC 5322 message with the given line ending; body is bytes with \\n line ends."""
    if isinstance(subject, str):
        subject = subject.encode()
    hdr = (
        b"From: Sender <sender@example.org>\n"
        b"To: Demo <demo@example.com>\n"
        b"Subject: " + subject + b"\n"
        b"Message-ID: <" + re.sub(rb"[^A-Za-z0-9]", b"", subject) + b"@buzon.test>\n"
        b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n" + extra_headers
    )
    msg = hdr + b"\n" + body
    if nl != b"\n":
        msg = msg.replace(b"\n", nl)
    return msg


# ---------------------------------------------------------------------------------------------
# Raw POP3 client


class Closed(Exception):
    """The server closed the connection."""


class Pop3:
    """A minimal POP3 client over a raw socket, so that every byte can be checked."""

    def __init__(self, port, host="127.0.0.1", timeout=IO_TIMEOUT, read_greeting=True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = bytearray()
        self.greeting = self.readline() if read_greeting else None

    # low level
    def _fill(self):
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            raise Closed("connection closed by server; unread: %r" % bytes(self.buf[:200]))
        self.buf += data

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def readline(self):
        """One response line without CRLF, decoded as latin-1."""
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line.decode("latin-1")
            if len(self.buf) > 1 << 16:
                raise AssertionError("response line longer than 64 KiB: %r" % bytes(self.buf[:100]))
            self._fill()

    def read_multi_wire(self):
        """The body of a multi-line response as sent (still dot-stuffed), without the final '.CRLF'."""
        scanned = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", max(0, scanned - 4))
            if i >= 0:
                body = bytes(self.buf[: i + 2])
                del self.buf[: i + 5]
                return body
            scanned = len(self.buf)
            self._fill()

    def multi_lines(self):
        wire = self.read_multi_wire()
        return [l.decode("latin-1") for l in undot(wire).split(b"\r\n")[:-1]]

    # commands
    def cmd(self, line):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.readline()

    def ok(self, line):
        r = self.cmd(line)
        assert r.startswith("+OK"), "%s -> %r" % (line if isinstance(line, str) else line[:60], r)
        return r

    def err(self, line):
        r = self.cmd(line)
        assert r.startswith("-ERR"), "%s -> %r (expected -ERR)" % (
            line if isinstance(line, str) else line[:60],
            r,
        )
        return r

    def multi(self, line):
        """Sends a command that must succeed with a multi-line answer; returns the lines."""
        self.ok(line)
        return self.multi_lines()

    def capa(self):
        return self.multi("CAPA")

    def login(self, user=DEMO_USER, password=DEMO_PASS):
        self.ok("USER " + user)
        return self.ok("PASS " + password)

    def stat(self):
        r = self.ok("STAT")
        m = re.fullmatch(r"\+OK (\d+) (\d+)(?: .*)?", r)
        assert m, "bad STAT reply %r" % r
        return int(m.group(1)), int(m.group(2))

    def list(self):
        out = {}
        for l in self.multi("LIST"):
            m = re.fullmatch(r"(\d+) (\d+)(?: .*)?", l)
            assert m, "bad LIST line %r" % l
            out[int(m.group(1))] = int(m.group(2))
        return out

    def uidl(self):
        out = {}
        for l in self.multi("UIDL"):
            m = re.fullmatch(r"(\d+) (\S+)", l)
            assert m, "bad UIDL line %r" % l
            out[int(m.group(1))] = m.group(2)
        return out

    def retr_wire(self, n, what="RETR"):
        self.ok("%s %s" % (what, n))
        return self.read_multi_wire()

    def retr(self, n):
        return undot(self.retr_wire(n))

    def top(self, n, lines):
        return undot(self.retr_wire("%s %s" % (n, lines), what="TOP"))

    def quit(self):
        r = self.ok("QUIT")
        self.expect_closed()
        return r

    def expect_closed(self, timeout=5.0):
        """Asserts that the server closes the connection within timeout (after any pending data)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("server did not close the connection; unread %r" % bytes(self.buf[:200]))
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return
            except socket.timeout:
                continue
            if not data:
                return
            self.buf += data

    def is_open(self, wait=0.3):
        """True if the connection is still open (no EOF within wait seconds)."""
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536, socket.MSG_PEEK)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            return False
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        return bool(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------
# The server under test


def default_settings(base, port, workers=1):
    return {
        # each server its own control socket; a short drain so that a stop with sessions still
        # open (SIGTERM) does not wait the default 30 s
        "server": {"workers": str(workers), "log_level": "debug",
                   "control_socket": os.path.join(base, "control.sock"), "drain_time": "1s"},
        "pop3": {
            "listen": "127.0.0.1:%d" % port,
            "idle_timeout": "10m",
            "max_bad_commands": "10",
            "max_connections": "1000",
            "max_prelogin_per_ip": "50",
            "retr_marks_seen": "yes",
            "expire": "NEVER",
        },
        "auth": {"passwd_file": os.path.join(base, "users"), "failure_delay": "0"},
        "mail": {"location": "maildir:" + os.path.join(base, "mail", "%u")},
    }


def render_config(settings):
    out = []
    for section, kv in settings.items():
        out.append("[%s]" % section)
        for k, v in kv.items():
            if v is not None:
                out.append("%s = %s" % (k, v))
        out.append("")
    return "\n".join(out)


class BuzonServer:
    """One server instance in its own temporary directory.

    settings overrides: {"pop3": {"max_bad_commands": "3"}}; a value of None removes the key.
    """

    def __init__(self, base=None, settings=None, workers=1, ipv6=False):
        self.bin = buzon_bin()
        self.base = base or tempfile.mkdtemp(prefix="buzontest-")
        self.port = free_port(ipv6_too=ipv6)
        self.settings = default_settings(self.base, self.port, workers)
        if ipv6:
            self.settings["pop3"]["listen"] = "127.0.0.1:%d, [::1]:%d" % (self.port, self.port)
        for section, kv in (settings or {}).items():
            self.settings.setdefault(section, {}).update(kv)
        self.conf = os.path.join(self.base, "buzon.conf")
        # buzon refuses to run its children as root: when the tests run as root, the server runs as
        # an unprivileged user ([server] user) who must own the mail tree and the passwd file.
        self.run_as = None
        if os.geteuid() == 0:
            self.run_as = os.environ.get("BUZON_TEST_USER", "nobody")
            pw = pwd.getpwnam(self.run_as)
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            self.settings["server"].setdefault("user", self.run_as)
            os.chmod(self.base, 0o755)
            os.makedirs(os.path.join(self.base, "mail"), exist_ok=True)
            self._own(os.path.join(self.base, "mail"))
        self.proc = None
        self.runs = []  # (proc, stderr path)
        self.problems = []
        self._seq = 0
        self.write_config()

    # config and CLI
    def write_config(self):
        with open(self.conf, "w") as f:
            f.write(render_config(self.settings))

    def cli(self, *args, stdin=None, timeout=30):
        return subprocess.run(
            valgrind_prefix(self.base) + [self.bin] + list(args),
            input=stdin.encode() if isinstance(stdin, str) else stdin,
            capture_output=True,
            timeout=timeout * TIME_SCALE,
        )

    def add_user(self, user, password, scheme="PLAIN"):
        r = self.cli("user", "add", "-c", self.conf, "--scheme", scheme, "--password-stdin", user,
                     stdin=password + "\n")
        self._check_cli(r)
        assert r.returncode == 0, "user add %s failed: %s %s" % (user, r.stdout, r.stderr)
        self.own_passwd_file()

    def own_passwd_file(self):
        path = self.settings["auth"]["passwd_file"]
        if self.run_as and os.path.exists(path):
            self._own(path)

    def _own(self, path):
        """chown path (and its parents up to base/mail) to the server's user when running as root."""
        if not self.run_as:
            return
        top = os.path.join(self.base, "mail")
        p = os.path.abspath(path)
        while True:
            os.chown(p, self._uid, self._gid)
            if not p.startswith(top + os.sep):
                break
            p = os.path.dirname(p)

    def _check_cli(self, r):
        err = r.stderr.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            assert marker not in err, "sanitizer report from the CLI:\n" + err

    # process control
    def start(self, wait=True):
        assert self.proc is None, "already running"
        self.write_config()
        self.own_passwd_file()
        errpath = os.path.join(self.base, "serve-%d.stderr" % len(self.runs))
        errf = open(errpath, "wb")
        self.proc = subprocess.Popen(
            valgrind_prefix(self.base) + [self.bin, "serve", "-c", self.conf],
            stdin=subprocess.DEVNULL,
            stdout=errf,
            stderr=errf,
            start_new_session=True,
        )
        errf.close()
        self.runs.append((self.proc, errpath))
        if wait:
            self.wait_ready()
        return self

    def addresses(self):
        addrs = []
        for part in self.settings["pop3"]["listen"].split(","):
            part = part.strip()
            m = re.fullmatch(r"\[(.*)\]:(\d+)", part) or re.fullmatch(r"(.*):(\d+)", part)
            addrs.append((m.group(1), int(m.group(2))))
        return addrs

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        pending = self.addresses()
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "buzon serve exited with %s before accepting connections:\n%s"
                    % (self.proc.returncode, self.stderr_text())
                )
            host, port = pending[0]
            try:
                # A full exchange, so that the probe's slot is released before the test starts.
                c = Pop3(port, host=host, timeout=2)
                try:
                    c.cmd("QUIT")
                    c.expect_closed(2)
                finally:
                    c.close()
                pending.pop(0)
                continue
            except (OSError, Closed, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("buzon serve not ready on %s:%d within %ss:\n%s"
                                     % (host, port, timeout, self.stderr_text()))
            time.sleep(0.05)

    def stderr_text(self, run=-1):
        if not self.runs:
            return ""
        with open(self.runs[run][1], "rb") as f:
            return f.read().decode("utf-8", "replace")

    def all_stderr(self):
        return "\n".join(self.stderr_text(i) for i in range(len(self.runs)))

    def _sanitizer_check(self, run):
        text = self.stderr_text(run)
        for marker in SANITIZER_MARKERS:
            if marker in text:
                return "sanitizer report (%s) in server stderr:\n%s" % (marker, text[-8000:])
        found = valgrind_problems(self.base)
        return "\n".join(found) if found else None

    def stop(self, check=True):
        """SIGTERM; the server must exit 0 within 10 s and its stderr must hold no sanitizer report."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        problems = []
        if proc.poll() is not None:
            problems.append("server had already exited with %s" % proc.returncode)
        else:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append("server did not exit within %ss of SIGTERM" % STOP_TIMEOUT)
                self._killpg(proc)
            else:
                if proc.returncode != 0:
                    problems.append("server exited with %s after SIGTERM" % proc.returncode)
        # Wait for the workers (same process group) too, so their sanitizer reports are complete.
        self._wait_group_gone(proc.pid)
        s = self._sanitizer_check(len(self.runs) - 1)
        if s:
            problems.append(s)
        if problems:
            problems.append("stderr tail:\n" + self.stderr_text()[-4000:])
        if check and problems:
            raise AssertionError("\n".join(problems))
        self.problems.extend(problems)
        return proc.returncode

    def kill(self):
        """SIGKILL to the server's whole process group (master, workers, auth)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self._killpg(proc)
        self._wait_group_gone(proc.pid)

    @staticmethod
    def _killpg(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    @staticmethod
    def _wait_group_gone(pgid, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return True
            time.sleep(0.02)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return False

    def restart(self):
        self.stop()
        self.start()

    def finish(self):
        """Fixture teardown: stop and return any problems found over the server's lifetime."""
        try:
            self.stop(check=False)
        finally:
            if self.proc is not None:
                self.kill()
        for i in range(len(self.runs)):
            s = self._sanitizer_check(i)
            if s and s not in self.problems:
                self.problems.append(s)
        return self.problems

    # clients
    def connect(self, host="127.0.0.1", **kw):
        return Pop3(self.port, host=host, **kw)

    def login(self, user=DEMO_USER, password=DEMO_PASS):
        c = self.connect()
        assert c.greeting.startswith("+OK"), c.greeting
        c.login(user, password)
        return c

    # Maildir
    def maildir(self, user=DEMO_USER):
        return os.path.join(self.base, "mail", user)

    def make_maildir(self, user=DEMO_USER, maildir=None):
        md = maildir or self.maildir(user)
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(md, sub), exist_ok=True)
            self._own(os.path.join(md, sub))
        return md

    def deliver(self, data, user=DEMO_USER, subdir="new", flags=None, maildir=None):
        """Writes a message file the way an MDA would (tmp/ then rename). Returns its base name."""
        md = self.make_maildir(user, maildir)
        self._seq += 1
        base = "%d.M%dP%d.buzontest" % (1700000000 + self._seq * 10, self._seq, os.getpid())
        name = base
        if flags is not None:
            name += ":2," + flags
        tmp = os.path.join(md, "tmp", base)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(md, subdir, name))
        return base

    def files(self, user=DEMO_USER, maildir=None):
        """{base name: (subdir, flags or None, path)} for every message file in new/ and cur/."""
        md = maildir or self.maildir(user)
        out = {}
        for sub in ("new", "cur"):
            d = os.path.join(md, sub)
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                if name.startswith("."):
                    continue
                base, sep, info = name.partition(":")
                flags = info[2:] if sep and info.startswith("2,") else None
                assert base not in out, "message %s present twice: %s" % (base, name)
                out[base] = (sub, flags, os.path.join(d, name))
        return out


def group_processes(pgid):
    """The live processes of process group pgid (a server's master, auth, workers, LMTP), as
    (pid, name) pairs; zombies are left out."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue  # ended between the listing and the read
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append((int(entry), name))
    return out


def process_pss_kb(pid):
    """Proportional set size of one process in KiB (RSS where smaps_rollup is unavailable), or
    None once the process is gone."""
    for path, key in (("/proc/%d/smaps_rollup" % pid, "Pss:"), ("/proc/%d/status" % pid, "VmRSS:")):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return None


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            return v
        time.sleep(interval)


def is_root():
    return os.geteuid() == 0


# ---------------------------------------------------------------------------------------------
# pytest fixtures (re-exported by the conftest.py files of tests/integration and tests/interop)

import pytest  # noqa: E402

# For tests whose assertion is a time or a memory size: under valgrind both are meaningless.
valgrind_unsuitable = pytest.mark.skipif(VALGRIND, reason="measures time or memory; meaningless under valgrind")


@pytest.fixture
def make_server():
    """Factory: make_server(settings=None, workers=1, ipv6=False, users=..., start=True).

    Every server made is stopped with SIGTERM at teardown; a non-zero exit, a hang or a sanitizer
    report fails the test."""
    if not os.access(buzon_bin(), os.X_OK):
        pytest.fail("buzon binary not found or not executable: %s (set BUZON_BIN)" % buzon_bin())
    made = []

    def factory(settings=None, workers=1, ipv6=False, users=((DEMO_USER, DEMO_PASS),), start=True,
                scheme="PLAIN"):
        srv = BuzonServer(settings=settings, workers=workers, ipv6=ipv6)
        made.append(srv)
        for u, p in users:
            srv.add_user(u, p, scheme=scheme)
        if start:
            srv.start()
        return srv

    yield factory
    problems = []
    for srv in made:
        problems.extend(srv.finish())
    if problems:
        pytest.fail("server problems:\n" + "\n".join(problems), pytrace=False)
    for srv in made:
        _rmtree(srv.base)


def _rmtree(path):
    """Removes a test's directory even where a test made parts of it unwritable; only directories
    inside path are ever chmod-ed (never path's own parent, such as /tmp)."""
    import shutil

    top = os.path.abspath(path)

    def onerror(func, p, exc):
        parent = os.path.dirname(os.path.abspath(p))
        if parent != top and not parent.startswith(top + os.sep):
            return
        try:
            os.chmod(parent, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=onerror)


@pytest.fixture
def server(make_server):
    """A running server with the user demo/secret (PLAIN) and the default settings."""
    return make_server()
