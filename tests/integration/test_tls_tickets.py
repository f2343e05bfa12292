"""Session tickets resume on any worker: the master gives every worker the same ticket keys, so a
client that reconnects resumes whichever worker the kernel picks (with per-worker keys about half
of the resumptions would fail on two workers), and a certificate reload keeps the keys."""

import os
import signal
import socket
import ssl

from buzontest import wait_until
from tlstest import tls_server


def resumed_share(srv, version, tries=24):
    ctx = ssl.create_default_context(cafile=srv.ca)
    ctx.minimum_version = ctx.maximum_version = version
    session, resumed = None, 0
    for _ in range(tries):
        with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                assert s.recv(512).startswith(b"+OK")  # the greeting; the ticket comes with it
                resumed += 1 if s.session_reused else 0
                session = s.session
    return resumed / (tries - 1)  # the first connection cannot resume


def test_tickets_resume_across_workers(make_server):
    srv = tls_server(make_server, workers=2)
    assert resumed_share(srv, ssl.TLSVersion.TLSv1_3) == 1.0
    assert resumed_share(srv, ssl.TLSVersion.TLSv1_2) == 1.0


def test_tickets_survive_reload(make_server):
    srv = tls_server(make_server, workers=2)
    ctx = ssl.create_default_context(cafile=srv.ca)
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.recv(512)
            session = s.session
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reloaded" in srv.stderr_text(), 5)
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.recv(512)
            assert s.session_reused
