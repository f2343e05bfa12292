"""SIGHUP re-reads the TLS certificate and key (with the whole configuration) without dropping
sessions; a bad new certificate refuses the reload, keeps the old one and the log says why."""

import os
import shutil
import signal

from buzontest import wait_until
from tlstest import TPop3, _make_leaf, client_context, pki_dir, tls_server


def served_cert(srv):
    ctx = client_context(srv.ca)
    c = TPop3(srv.tls_port, context=ctx)
    der = c.sock.getpeercert(binary_form=True)
    c.cmd("QUIT")
    c.close()
    return der


def new_server_cert(srv, name):
    """A fresh localhost certificate from the same test CA, written over the configured files."""
    d = os.path.dirname(srv.ca)  # the server's copy of the test PKI; the CA key stays outside
    ca_key = os.path.join(d, "ca.key")
    if not os.path.exists(ca_key):
        shutil.copyfile(os.path.join(pki_dir(), "ca.key"), ca_key)
    _make_leaf(d, name, "ca", "/CN=localhost",
               "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
               "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for ext in ("pem", "key"):
        path = os.path.join(d, "%s.%s" % (name, ext))
        os.chmod(path, 0o644)
    shutil.copyfile(os.path.join(d, name + ".pem"), srv.pki["server.pem"])
    shutil.copyfile(os.path.join(d, name + ".key"), srv.pki["server.key"])


def test_sighup_reloads_certificate_and_keeps_sessions(make_server):
    srv = tls_server(make_server)
    before = served_cert(srv)
    open_session = TPop3(srv.tls_port, context=client_context(srv.ca))
    open_session.login()
    new_server_cert(srv, "server2")
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reloaded" in srv.stderr_text(), 5), srv.stderr_text()[-2000:]
    assert wait_until(lambda: served_cert(srv) != before, 5), "new connections still get the old certificate"
    # the session opened before the reload goes on
    assert open_session.stat() == (0, 0)
    open_session.quit()


def test_bad_certificate_keeps_the_old_one(make_server):
    srv = tls_server(make_server)
    before = served_cert(srv)
    with open(srv.pki["server.pem"], "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reload_refused" in srv.stderr_text(), 5), srv.stderr_text()[-2000:]
    assert "keeping=running" in srv.stderr_text()
    assert served_cert(srv) == before
    c = TPop3(srv.tls_port, context=client_context(srv.ca))
    c.login()
    c.quit()
