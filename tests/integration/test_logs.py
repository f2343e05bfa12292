"""Logs: log_format = json (every line one JSON object), the session_end line of POP3 and LMTP
sessions with exact byte counts, and log_output = syslog (RFC 3164 datagrams with the mail
facility, from the master and from sandboxed children, falling back to stderr when the syslog
socket goes away). BUZON_SYSLOG_SOCKET points the server at a datagram socket the test binds."""

import json
import os
import re
import socket
import threading
import time

import pytest

from buzontest import DEMO_PASS, DEMO_USER, make_message, wait_until
from lmtptest import Lmtp, setup_lmtp
from tlstest import TPop3, client_context, tls_server

SEVERITY = {"debug": 7, "info": 6, "warn": 4, "error": 3}
MAIL_FACILITY = 2


class ByteCounting:
    """Mixed into a test client: counts the protocol bytes it sends and receives (plaintext, as
    the server's session_end line counts them). str data is sent in the client's encoding."""

    sent = 0
    received = 0
    encoding = "utf-8"

    def _fill(self):
        before = len(self.buf)
        try:
            super()._fill()
        finally:
            self.received += len(self.buf) - before

    def send(self, data):
        if isinstance(data, str):
            data = data.encode(self.encoding)
        self.sent += len(data)
        super().send(data)


class CountingPop3(ByteCounting, TPop3):
    encoding = "latin-1"


class CountingLmtp(ByteCounting, Lmtp):
    pass


def json_lines(text):
    """Every line of text parsed as a JSON object that has the four fixed keys first."""
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError("not a JSON line (%s): %r" % (e, line))
        assert list(obj)[:4] == ["ts", "level", "proc", "event"], line
        assert all(isinstance(v, str) for v in obj.values()), line
        out.append(obj)
    return out


def events(objs, name):
    return [o for o in objs if o["event"] == name]


def test_json_lines_and_the_session_end_line(make_server):
    srv = tls_server(make_server, implicit=False, settings={"server": {"log_format": "json"}})
    srv.deliver(make_message("logged", b"one message\n"))
    # a session that never logs in
    c = srv.connect()
    c.quit()
    c.close()
    # a session over STLS: bytes before and after the switch count, TLS records do not
    c = CountingPop3(srv.port)
    c.starttls(client_context(srv.ca))
    version = c.sock.version()
    c.login(DEMO_USER, DEMO_PASS)
    assert b"one message" in c.retr(1)
    c.ok("DELE 1")
    c.ok("QUIT")
    c.expect_closed()
    c.close()
    srv.stop()

    objs = json_lines(srv.stderr_text())
    login = events(objs, "login")
    assert len(login) == 1, login
    ends = {o["session"]: o for o in events(objs, "session_end")}
    end = ends[login[0]["session"]]
    assert end["proc"] == "pop3/0" and end["level"] == "info"
    expected = {"user": DEMO_USER, "ip": "127.0.0.1", "tls": version, "mechanism": "USER",
                "commands": "6", "bytes_in": str(c.sent), "bytes_out": str(c.received),
                "retrieved": "1", "deleted": "1", "reason": "quit"}
    assert {k: end[k] for k in expected} == expected, end
    assert re.fullmatch(r"\d+\.\d{3}", end["duration"]) and float(end["duration"]) < 30, end
    assert list(end)[4:] == ["session", "user", "ip", "tls", "mechanism", "commands", "bytes_in",
                             "bytes_out", "retrieved", "deleted", "reason", "duration"], end
    # every session (the two above, the harness's readiness probes) ended with exactly one line
    connects = events(objs, "connect")
    assert len(connects) >= 3, connects
    assert sorted(ends) == sorted(o["session"] for o in connects), (ends, connects)
    assert len(events(objs, "session_end")) == len(ends), objs
    anonymous = [o for o in ends.values() if o["user"] == ""]
    assert len(anonymous) == len(ends) - 1, ends
    for o in anonymous:
        assert (o["tls"], o["mechanism"], o["reason"], o["retrieved"]) == ("no", "", "quit", "0"), o
        assert o["bytes_in"] == "6", o  # QUIT\r\n


def test_lmtp_session_end_line(make_server):
    srv = make_server(start=False)
    setup_lmtp(srv, unix=False)
    c = CountingLmtp(("127.0.0.1", srv.lmtp_port))
    c.lhlo()
    c.expect("MAIL FROM:<sender@example.org>", 250)
    c.expect("RCPT TO:<%s>" % DEMO_USER, 250)
    c.expect("RCPT TO:<nosuch@example.org>", 550)
    assert [r[0] for r in c.data(make_message("via lmtp", b"hello\n"), 1)] == [250]
    c.expect("QUIT", 221)
    c.expect_closed()
    c.close()
    srv.stop()

    lines = re.findall(r"^ts=\S+ level=info proc=lmtp event=session_end (.*)$", srv.stderr_text(),
                       re.M)
    fields = [dict(kv.split("=", 1) for kv in line.split(" ")) for line in lines]
    mine = [f for f in fields if f["transactions"] == "1"]
    assert len(mine) == 1, lines
    got = {k: mine[0][k] for k in ("ip", "recipients", "delivered", "bytes_in", "bytes_out", "reason")}
    assert got == {"ip": "127.0.0.1", "recipients": "1", "delivered": "1", "bytes_in": str(c.sent),
                   "bytes_out": str(c.received), "reason": "quit"}, mine[0]
    assert re.fullmatch(r"\d+\.\d{3}", mine[0]["duration"]), mine[0]


class FakeSyslog:
    """A datagram socket for BUZON_SYSLOG_SOCKET, read by a thread as fast as it can: the kernel
    queues only net.unix.max_dgram_qlen datagrams (10 by default) for a reader, and the server
    never waits for one (what does not fit goes to stderr)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.datagrams = []
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while self.running:
            try:
                self.datagrams.append(self.sock.recv(65536).decode("utf-8"))
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        """The syslog daemon goes away: its socket is closed and removed."""
        self.running = False
        self.thread.join(5)
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


SYSLOG_LINE = re.compile(r"<(\d+)>buzon\[(\d+)\]: (.*)", re.S)


def parse_datagram(data, log_format):
    """(priority, pid, {level, proc, event, ...}) of one datagram."""
    m = SYSLOG_LINE.fullmatch(data)
    assert m, "not an RFC 3164 buzon datagram: %r" % data
    body = m.group(3)
    if log_format == "json":
        fields = json.loads(body)
    else:
        assert re.match(r"level=\w+ proc=\S+ event=\w+", body), body
        fields = dict(kv.split("=", 1) for kv in body.split(" ")[:3])
    assert "ts" not in fields and not body.startswith("ts="), body  # syslog stamps lines itself
    return int(m.group(1)), int(m.group(2)), fields


def stderr_demo_session_ends(text, log_format):
    """The session_end lines of demo's sessions on stderr (with their time stamp)."""
    if log_format == "json":
        return [o for o in json_lines(text) if o["event"] == "session_end" and o["user"] == DEMO_USER]
    return re.findall(r"^ts=\S+ level=info proc=pop3/0 event=session_end .* user=demo .*$", text,
                      re.M)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_syslog_output(make_server, monkeypatch, log_format):
    srv = make_server(start=False, settings={"server": {"log_output": "syslog",
                                                        "log_format": log_format}})
    syslog = FakeSyslog(os.path.join(srv.base, "syslog.sock"))
    monkeypatch.setenv("BUZON_SYSLOG_SOCKET", syslog.path)
    try:
        srv.start()
        # once the start-up burst is over, a session's few lines fit the queue whatever the load
        assert wait_until(lambda: re.search(r'event=auth_started|"event":"auth_started"',
                                            "\n".join(syslog.datagrams) + srv.stderr_text()), 5), \
            (syslog.datagrams, srv.stderr_text())
        time.sleep(0.2)
        c = srv.login()
        c.quit()
        c.close()
        assert wait_until(lambda: any("session_end" in d and "USER" in d
                                      for d in syslog.datagrams), 5), \
            (syslog.datagrams, srv.stderr_text())
        parsed = [parse_datagram(d, log_format) for d in list(syslog.datagrams)]
        for pri, pid, fields in parsed:
            assert pri == MAIL_FACILITY * 8 + SEVERITY[fields["level"]], (pri, fields)
        assert {f["level"] for _, _, f in parsed} >= {"debug", "info"}, parsed
        pids = {}
        for _, pid, f in parsed:
            pids.setdefault(f["proc"], set()).add(pid)
        # one pid per process, each its own (the master's first lines precede every child)
        assert pids["master"] == {srv.proc.pid}, pids
        assert all(len(p) == 1 for p in pids.values()), pids
        assert len(set.union(*pids.values())) == len(pids), pids
        # the worker's session lines were sent from inside its sandbox
        worker_events = [f["event"] for _, _, f in parsed if f["proc"] == "pop3/0"]
        assert worker_events[-3:] == ["connect", "login", "session_end"], worker_events
        everything = "\n".join(syslog.datagrams) + srv.stderr_text()
        assert re.search(r'proc=pop3/0 event=sandbox |"proc":"pop3/0","event":"sandbox"',
                         everything), everything
        # (start-up lines may have gone to stderr: the queue is short and this reader may lag)
        assert not stderr_demo_session_ends(srv.stderr_text(), log_format), srv.stderr_text()

        # the syslog daemon goes away: lines go to stderr with their time stamp, and the
        # sandboxed worker (which may not reconnect) serves on
        syslog.close()
        c = srv.login()
        c.quit()
        c.close()
        assert wait_until(lambda: len(stderr_demo_session_ends(srv.stderr_text(), log_format)) == 1,
                          5), srv.stderr_text()
    finally:
        syslog.close()
    srv.stop()
    assert "child_killed" not in srv.stderr_text(), srv.stderr_text()
