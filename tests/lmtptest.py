"""Helpers for the delivery tests (LMTP server, `buzon deliver`, Postfix interop).

Standard library only. A test makes its server with the usual make_server fixture and then
`setup_lmtp(srv, ...)`, which adds an [lmtp] section (a TCP port and a UNIX socket), starts the
server and waits until both LMTP listeners answer.

What a delivered file must hold (the spec of the delivery path, src/lmtp/delivery.h): the message
with LF line ends (dot-unstuffed for DATA), preceded by "Return-Path: <sender>" and, when the
transaction delivered to one recipient only, "Delivered-To: recipient" (no angle brackets, as Postfix
and Dovecot write it); its name carries
",S=<file size>,W=<size with CRLF line ends>".
"""

import os
import re
import socket
import time

from buzontest import IO_TIMEOUT, free_port, to_crlf, wait_until

LMTP_READY_TIMEOUT = 10.0


# ---------------------------------------------------------------------------------------------
# Server set-up


def lmtp_socket_dir(srv):
    """A directory for the LMTP UNIX socket, owned by the server's user when running as root."""
    d = os.path.join(srv.base, "run")
    os.makedirs(d, exist_ok=True)
    if srv.run_as:
        os.chown(d, srv._uid, srv._gid)
    os.chmod(d, 0o755)
    return d


def setup_lmtp(srv, tcp=True, unix=True, lmtp=None, mail=None, start=True):
    """Adds [lmtp] (TCP on a free loopback port and/or a UNIX socket) to a server made with
    make_server(start=False), then starts it and waits for the LMTP listeners.

    Sets srv.lmtp_port (or None) and srv.lmtp_path (or None)."""
    parts = []
    srv.lmtp_port = None
    srv.lmtp_path = None
    if tcp:
        srv.lmtp_port = free_port()
        while srv.lmtp_port == srv.port:
            srv.lmtp_port = free_port()
        parts.append("127.0.0.1:%d" % srv.lmtp_port)
    if unix:
        srv.lmtp_path = os.path.join(lmtp_socket_dir(srv), "lmtp")
        parts.append("unix:" + srv.lmtp_path)
    section = {"listen": ", ".join(parts), "hostname": "mx.test"}
    section.update(lmtp or {})
    srv.settings.setdefault("lmtp", {}).update(section)
    if mail:
        srv.settings.setdefault("mail", {}).update(mail)
    if start:
        start_lmtp(srv)
    return srv


def start_lmtp(srv, timeout=LMTP_READY_TIMEOUT):
    srv.start()
    wait_lmtp_ready(srv, timeout)
    return srv


def lmtp_targets(srv):
    out = []
    if getattr(srv, "lmtp_port", None):
        out.append(("127.0.0.1", srv.lmtp_port))
    if getattr(srv, "lmtp_path", None):
        out.append(srv.lmtp_path)
    return out


def wait_lmtp_ready(srv, timeout=LMTP_READY_TIMEOUT):
    """Waits until every LMTP listener greets with 220 and answers QUIT with 221."""
    deadline = time.monotonic() + timeout
    pending = lmtp_targets(srv)
    last = None
    while pending:
        if srv.proc is not None and srv.proc.poll() is not None:
            raise AssertionError("buzon serve exited with %s before LMTP was ready:\n%s"
                                 % (srv.proc.returncode, srv.stderr_text()[-4000:]))
        try:
            c = Lmtp(pending[0], timeout=2)
            try:
                code, _ = c.greeting
                if code == 220:
                    c.cmd("QUIT")
                    pending.pop(0)
                    continue
                last = "greeting %r" % (c.greeting,)
            finally:
                c.close()
        except (OSError, LmtpClosed, AssertionError) as e:
            last = repr(e)
        if time.monotonic() > deadline:
            raise AssertionError("LMTP not ready on %r within %ss (last: %s):\n%s"
                                 % (pending[0], timeout, last, srv.stderr_text()[-4000:]))
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Users and quotas


def set_user_extra(srv, user, extra, password="pw"):
    """Writes (or rewrites) user's passwd-file line as user:{PLAIN}password::::::extra."""
    path = srv.settings["auth"]["passwd_file"]
    lines = []
    if os.path.exists(path):
        with open(path) as f:
            lines = [l for l in f.read().split("\n") if l and not l.startswith(user + ":")]
    lines.append("%s:{PLAIN}%s::::::%s" % (user, password, extra))
    tmp = path + ".tmp-test"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)
    srv.own_passwd_file()


# ---------------------------------------------------------------------------------------------
# A raw LMTP client


class LmtpClosed(Exception):
    """The server closed the connection."""


class Lmtp:
    """Minimal LMTP client over a raw socket; target is (host, port) or a UNIX socket path."""

    def __init__(self, target, timeout=IO_TIMEOUT, read_greeting=True):
        if isinstance(target, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(target)
        self.buf = bytearray()
        self.greeting = self.reply() if read_greeting else None

    def _fill(self):
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        if not data:
            raise LmtpClosed("connection closed by server; unread %r" % bytes(self.buf[:200]))
        self.buf += data

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                l = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return l.decode("utf-8", "replace")
            if len(self.buf) > 1 << 16:
                raise AssertionError("reply line too long: %r" % bytes(self.buf[:100]))
            self._fill()

    def reply(self):
        """(code, [text lines]) of one possibly multi-line reply."""
        lines = []
        while True:
            l = self.line()
            m = re.match(r"(\d{3})([ -])(.*)", l) or re.fullmatch(r"(\d{3})()()", l)
            assert m, "malformed reply line %r" % l
            lines.append(m.group(3))
            if m.group(2) != "-":
                return int(m.group(1)), lines

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply()

    def expect(self, line, code):
        r = self.cmd(line)
        assert r[0] == code, "%s -> %r (expected %d)" % (line, r, code)
        return r

    def lhlo(self, name="client.test"):
        return self.expect("LHLO " + name, 250)

    def data(self, message, naccepted):
        """DATA with message (bytes, CRLF added and dot-stuffed here); returns the per-recipient
        replies (naccepted of them), or [the DATA reply] if DATA was refused."""
        r = self.cmd("DATA")
        if r[0] != 354:
            return [r]
        self.send(dotstuff_smtp(message) + b".\r\n")
        return self.replies(naccepted)

    def expect_closed(self, timeout=5.0):
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

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dotstuff_smtp(message):
    """message (bytes, any line ends) -> CRLF lines, dot-stuffed, ending with CRLF."""
    c = to_crlf(message)
    if c and not c.endswith(b"\r\n"):
        c += b"\r\n"
    lines = c.split(b"\r\n")[:-1]
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)


# ---------------------------------------------------------------------------------------------
# What must be stored


def lf_message(message):
    """The message as stored: CRLF -> LF, ending with LF."""
    m = message.replace(b"\r\n", b"\n")
    if m and not m.endswith(b"\n"):
        m += b"\n"
    return m


def stored_expected(message, sender, rcpt=None):
    """The exact file content for message delivered from sender (to rcpt if single recipient)."""
    if isinstance(sender, str):
        sender = sender.encode("utf-8")
    head = b"Return-Path: <" + sender + b">\n"
    if rcpt is not None:
        if isinstance(rcpt, str):
            rcpt = rcpt.encode("utf-8")
        head += b"Delivered-To: " + rcpt + b"\n"
    return head + lf_message(message)


def split_added_headers(content):
    """(Return-Path value or None, Delivered-To value or None, rest) of a stored file."""
    rp = dt = None
    m = re.match(rb"Return-Path: <([^>\n]*)>\n", content)
    if m:
        rp = m.group(1)
        content = content[m.end():]
    m = re.match(rb"Delivered-To: <?([^<>\n]*)>?\n", content)
    if m:
        dt = m.group(1)
        content = content[m.end():]
    return rp, dt, content


def read(path):
    with open(path, "rb") as f:
        return f.read()


def delivered(srv, user):
    """[(name, path, content)] of every message file in user's new/ and cur/, sorted by name."""
    out = []
    for base, (sub, flags, path) in sorted(srv.files(user).items()):
        out.append((os.path.basename(path), path, read(path)))
    return out


def tmp_files(srv, user):
    d = os.path.join(srv.maildir(user), "tmp")
    if not os.path.isdir(d):
        return []
    return sorted(os.listdir(d))


def check_name_sizes(name, content):
    """The file name carries ,S=<size>,W=<CRLF size> matching content."""
    base = name.split(":", 1)[0]
    s = re.search(r",S=(\d+)", base)
    w = re.search(r",W=(\d+)", base)
    assert s and w, "file name %r lacks ,S= and ,W=" % name
    assert int(s.group(1)) == len(content), "%s: S=%s but the file has %d octets" % (name, s.group(1), len(content))
    assert int(w.group(1)) == len(to_crlf(content)), "%s: W=%s but CRLF size is %d" % (
        name, w.group(1), len(to_crlf(content)))
    return int(s.group(1)), int(w.group(1))


def find_token(srv, user, token):
    """[(name, path, content)] of user's message files whose content contains token."""
    if isinstance(token, str):
        token = token.encode()
    return [d for d in delivered(srv, user) if token in d[2]]


def wait_delivered(srv, user, count, timeout=5.0):
    return wait_until(lambda: len(srv.files(user)) >= count, timeout)


def msg(token, body=b"Hello.\n", extra_headers=b""):
    """A small message identified by token (in Subject, Message-ID and body), LF line ends."""
    if isinstance(token, str):
        token = token.encode()
    return (b"From: Sender <sender@example.org>\n"
            b"To: Demo <demo@example.org>\n"
            b"Subject: test " + token + b"\n"
            b"Message-ID: <" + token + b"@buzon.test>\n"
            b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n" + extra_headers +
            b"\n" + body + b"token: " + token + b"\n")
