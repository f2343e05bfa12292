"""Per-name certificates chosen by SNI ([tls] sni = NAME=CERT:KEY, …), exact names before
wildcards, the default certificate otherwise; they survive a SIGHUP reload."""

import os
import shutil
import signal
import socket
import ssl

from buzontest import wait_until
from tlstest import _make_leaf, pki_dir, tls_server

LEAF_EXT = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n")


def make_named_cert(srv, file_name, dns):
    d = os.path.dirname(srv.ca)
    ca_key = os.path.join(d, "ca.key")
    if not os.path.exists(ca_key):
        shutil.copyfile(os.path.join(pki_dir(), "ca.key"), ca_key)
    _make_leaf(d, file_name, "ca", "/CN=" + dns, LEAF_EXT % dns)
    paths = [os.path.join(d, file_name + ext) for ext in (".pem", ".key")]
    for p in paths:
        os.chmod(p, 0o644)
        if srv.run_as:
            os.chown(p, srv._uid, srv._gid)
    return paths


def served_names(srv, server_name):
    """The DNS names in the certificate the server presents for server_name (verified)."""
    ctx = ssl.create_default_context(cafile=srv.ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", srv.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            cert = s.getpeercert()
    return sorted(v for k, v in cert.get("subjectAltName", ()) if k == "DNS")


def sni_server(make_server):
    srv = tls_server(make_server, start=False)
    other = make_named_cert(srv, "other", "other.test")
    wild = make_named_cert(srv, "wild", "*.wild.test")
    exact = make_named_cert(srv, "exact", "exact.wild.test")
    # one entry per line: inih reads at most 200 characters a line; continuation lines extend lists
    srv.settings["tls"]["sni"] = "other.test=%s:%s\n    *.wild.test=%s:%s\n    exact.wild.test=%s:%s" % (
        other[0], other[1], wild[0], wild[1], exact[0], exact[1])
    srv.write_config()
    from tlstest import start_tls_server
    start_tls_server(srv)
    return srv


def test_sni_picks_the_certificate(make_server):
    srv = sni_server(make_server)
    assert served_names(srv, "other.test") == ["other.test"]
    assert served_names(srv, "OTHER.test") == ["other.test"]
    assert served_names(srv, "a.wild.test") == ["*.wild.test"]
    assert served_names(srv, "exact.wild.test") == ["exact.wild.test"]  # exact before wildcard
    assert served_names(srv, "b.a.wild.test") == ["localhost"]  # a wildcard covers one label
    assert served_names(srv, "localhost") == ["localhost"]
    assert served_names(srv, "unknown.example") == ["localhost"]


def test_sni_survives_reload(make_server):
    srv = sni_server(make_server)
    os.kill(srv.proc.pid, signal.SIGHUP)
    assert wait_until(lambda: "event=reloaded" in srv.stderr_text(), 5)
    assert served_names(srv, "other.test") == ["other.test"]
    assert served_names(srv, "a.wild.test") == ["*.wild.test"]


def test_bad_sni_entry_refused(make_server):
    srv = tls_server(make_server, start=False)
    srv.settings["tls"]["sni"] = "other.test=relative.pem:key.pem"
    srv.write_config()
    r = srv.cli("check-config", "-c", srv.conf)
    assert r.returncode != 0 and b"sni" in r.stderr, r.stderr
