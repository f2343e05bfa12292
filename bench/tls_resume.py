#!/usr/bin/env python3
"""TLS 1.3 resumed handshakes per second against a POP3S port: `openssl s_time -reuse` never reads
the server's session ticket under TLS 1.3, so it cannot resume; this client reads the greeting
(which brings the ticket), then reconnects with the saved session for SECONDS, counting
handshakes and how many really resumed. Prints "rate resumed_fraction".
usage: bench/tls_resume.py PORT SECONDS"""
import socket
import ssl
import sys
import time


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    session = None
    done = resumed = 0
    deadline = time.monotonic() + seconds
    start = time.monotonic()
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.recv(512)  # the +OK greeting; the NewSessionTicket arrives with it
                done += 1
                resumed += 1 if s.session_reused else 0
                session = s.session
    elapsed = time.monotonic() - start
    print("%.1f %.3f" % (done / elapsed, resumed / max(done, 1)))


if __name__ == "__main__":
    main()
