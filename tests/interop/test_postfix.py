"""Postfix hands mail to buzon over LMTP (TCP and UNIX socket), then it is read over POP3.

A private Postfix instance runs from a temporary config_directory/queue_directory with its smtpd
on a free loopback port and `local_transport = lmtp:...` pointing at buzon; nothing of the
system's Postfix configuration is used or changed. Needs root (Postfix's master runs as root and
drops to mail_owner) and the Debian package `postfix`.

By hand:  sudo /usr/bin/python3 -m pytest -v tests/interop/test_postfix.py
(set BUZON_POSTFIX_KEEP=1 to keep the temp directory with Postfix's maillog on failure).
"""

import os
import shutil
import smtplib
import subprocess
import tempfile

import pytest

from buzontest import free_port, to_crlf, wait_until
from lmtptest import find_token, setup_lmtp, split_added_headers

POSTFIX = "/usr/sbin/postfix"
USERS = (("demo", "secret"), ("alice", "alicepw"))

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{smtp_port} inet n -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.example.test
mydomain = example.test
myorigin = example.test
mydestination = example.test
mynetworks = 127.0.0.0/8
relayhost =
local_transport = {transport}
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
biff = no
queue_run_delay = 1s
minimal_backoff_time = 1s
maximum_backoff_time = 2s
delay_warning_time = 0
smtputf8_enable = yes
"""


def postfix_unusable():
    """None if a private Postfix can run here, else the reason."""
    if not os.access(POSTFIX, os.X_OK):
        return ("Postfix is not installed (%s); install it with "
                "`DEBIAN_FRONTEND=noninteractive apt-get install -y postfix`" % POSTFIX)
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (its master process runs as root)"
    try:
        import pwd, grp  # noqa: E401
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError as e:
        return "Postfix's user or group is missing: %s" % e
    return None


class PrivatePostfix:
    def __init__(self, transport):
        self.dir = tempfile.mkdtemp(prefix="buzon-postfix-")
        os.chmod(self.dir, 0o755)
        self.smtp_port = free_port()
        self.started = False
        for d in ("queue", "data"):
            os.makedirs(os.path.join(self.dir, d))
        shutil.chown(os.path.join(self.dir, "data"), "postfix", "postfix")
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(dir=self.dir, transport=transport))
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(smtp_port=self.smtp_port))

    def run(self, *args, timeout=60):
        return subprocess.run([POSTFIX, "-c", self.dir] + list(args), capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self):
        r = self.run("start")
        if r.returncode != 0:
            raise AssertionError("postfix start failed (%d):\n%s%s\n%s" % (
                r.returncode, r.stdout.decode(), r.stderr.decode(), self.log()))
        self.started = True
        ok = wait_until(self._smtp_up, 20, 0.1)
        assert ok, "Postfix smtpd not answering on port %d:\n%s" % (self.smtp_port, self.log())

    def _smtp_up(self):
        try:
            s = smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=2)
            s.quit()
            return True
        except (OSError, smtplib.SMTPException):
            return False

    def log(self):
        try:
            with open(os.path.join(self.dir, "maillog"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-6000:]
        except OSError:
            return "(no maillog)"

    def queue(self):
        r = subprocess.run(["/usr/sbin/postqueue", "-c", self.dir, "-p"], capture_output=True, timeout=30)
        return r.stdout.decode("utf-8", "replace")

    def flush(self):
        subprocess.run(["/usr/sbin/postqueue", "-c", self.dir, "-f"], capture_output=True, timeout=30)

    def master_pid(self):
        try:
            with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if self.started:
            pid = self.master_pid()
            r = self.run("stop")
            if r.returncode != 0:
                self.run("abort")
            self.started = False
            if pid:
                wait_until(lambda: not _alive(pid), 15, 0.1)

    def cleanup(self, keep=False):
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@pytest.fixture
def postfix_factory():
    reason = postfix_unusable()
    if reason:
        pytest.skip(reason)
    made = []

    def factory(transport):
        pf = PrivatePostfix(transport)
        made.append(pf)
        pf.start()
        return pf

    yield factory
    for pf in made:
        try:
            pf.stop()
        finally:
            pf.cleanup(keep=bool(os.environ.get("BUZON_POSTFIX_KEEP")))


def wait_for_token(srv, user, token, pf, timeout=30):
    found = wait_until(lambda: find_token(srv, user, token), timeout, 0.1)
    assert found, "message %s did not reach %s's Maildir within %ds.\nqueue:\n%s\nPostfix log:\n%s\n" \
                  "buzon stderr:\n%s" % (token, user, timeout, pf.queue(), pf.log(), srv.stderr_text()[-3000:])
    return found


BODY = (b"Hello through Postfix.\r\n"
        b"..a line that starts with a dot\r\n"
        b".\r\n"
        b"8-bit: \xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac\r\n"
        b"last line\r\n")


def message(token):
    return (b"From: Sender <sender@example.net>\r\n"
            b"To: Demo <demo@example.test>\r\n"
            b"Subject: " + token.encode() + b"\r\n"
            b"Message-ID: <" + token.encode() + b"@postfix.test>\r\n"
            b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n"
            b"\r\n" + BODY)


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_postfix_delivers_over_lmtp(make_server, postfix_factory, via):
    srv = make_server(users=USERS, start=False)
    setup_lmtp(srv)
    if via == "tcp":
        transport = "lmtp:inet:127.0.0.1:%d" % srv.lmtp_port
    else:
        transport = "lmtp:unix:" + srv.lmtp_path
    pf = postfix_factory(transport)
    token = "postfix-" + via
    s = smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=30)
    try:
        s.ehlo("client.test")
        refused = s.sendmail("sender@example.net", ["demo@example.test", "alice@example.test"],
                             message(token), mail_options=["BODY=8BITMIME"])
        assert refused == {}
        s.quit()
    finally:
        s.close()
    (name, path, content), = wait_for_token(srv, "demo", token, pf)
    (_, apath, acontent), = wait_for_token(srv, "alice", token, pf)
    rp, dt, rest = split_added_headers(content)
    assert rp == b"sender@example.net", content[:300]
    head, _, body = rest.partition(b"\n\n")
    assert body == BODY.replace(b"\r\n", b"\n"), body
    assert b"\nSubject: " + token.encode() + b"\n" in b"\n" + head
    assert b"Received: " in head  # Postfix's trace header
    # POP3 serves the stored bytes with CRLF
    p = srv.login()
    assert p.stat()[0] == 1
    data = p.retr(1)
    p.quit()
    assert data == to_crlf(content)
    assert data.endswith(b"\r\n\r\n" + BODY) or data.split(b"\r\n\r\n", 1)[1] == BODY
    p = srv.login("alice", "alicepw")
    assert p.retr(1).split(b"\r\n\r\n", 1)[1] == BODY
    p.quit()


def test_postfix_unknown_user_bounces(make_server, postfix_factory):
    """A 550 5.1.1 from buzon makes Postfix bounce (no retry); the good recipient still gets it."""
    srv = make_server(users=USERS, start=False)
    setup_lmtp(srv)
    pf = postfix_factory("lmtp:inet:127.0.0.1:%d" % srv.lmtp_port)
    token = "postfix-mixed"
    s = smtplib.SMTP("127.0.0.1", pf.smtp_port, timeout=30)
    try:
        s.sendmail("sender@example.net", ["demo@example.test", "nosuch@example.test"], message(token))
        s.quit()
    finally:
        s.close()
    wait_for_token(srv, "demo", token, pf)
    assert wait_until(lambda: "5.1.1" in pf.log() and "status=bounced" in pf.log(), 20, 0.2), pf.log()
