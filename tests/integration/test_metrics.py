"""Prometheus metrics ([metrics] listen): what a scripted session does shows up in /metrics with
the right labels, the text passes `promtool check metrics` (Debian package prometheus), and
counters never go backwards when a worker is killed and restarted."""

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from buzontest import DEMO_PASS, DEMO_USER, IO_TIMEOUT, free_port, group_processes, wait_until
from lmtptest import Lmtp, msg, setup_lmtp, wait_delivered
from tlstest import TPop3, client_context, start_tls_server, tls_server

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(srv):
    """The samples of one /metrics scrape as {series: value}, series being the name and labels
    exactly as rendered; and the raw text."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % srv.metrics_port,
                                timeout=IO_TIMEOUT) as r:
        assert r.status == 200
        assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers
        text = r.read().decode("utf-8")
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples, text


def metrics_server(make_server, settings=None):
    """A server with TLS (STLS and implicit), LMTP on TCP and /metrics on a free port."""
    srv = tls_server(make_server, start=False,
                     settings=dict({"auth": {"failure_delay": "100ms"}}, **(settings or {})))
    srv.metrics_port = free_port()
    srv.settings["metrics"] = {"listen": "127.0.0.1:%d" % srv.metrics_port}
    setup_lmtp(srv, unix=False, start=False)
    start_tls_server(srv)
    assert wait_until(lambda: _answers(srv), timeout=10), srv.stderr_text()[-3000:]
    return srv


def _answers(srv):
    try:
        scrape(srv)
        return True
    except (OSError, urllib.error.URLError):
        return False


def delta(before, after, series):
    return after.get(series, 0) - before.get(series, 0)


def sessions(samples, listener, state):
    return samples['buzon_pop3_sessions{listener="%s",state="%s"}' % (listener, state)]


def test_scripted_session_is_counted(make_server):
    srv = metrics_server(make_server)
    before, _ = scrape(srv)
    assert before['buzon_build_info{version="%s"}' % before_version(before)] == 1
    assert abs(before["buzon_start_time_seconds"] - time.time()) < 120
    for role in ("pop3", "auth", "lmtp", "admin"):
        assert before['buzon_processes{role="%s"}' % role] >= 1, role

    with Lmtp(("127.0.0.1", srv.lmtp_port)) as c:
        c.lhlo()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("RCPT TO:<demo@example.org>", 250)
        c.expect("RCPT TO:<nobody-here@example.org>", 550)
        assert c.data(msg("metrics-one"), 1)[0][0] == 250
    wait_delivered(srv, DEMO_USER, 1)

    p = srv.connect()
    p.ok("USER " + DEMO_USER)
    assert p.cmd("PASS wrong").startswith("-ERR [AUTH]")
    p.err("XYZZY")
    p.login()
    during, _ = scrape(srv)
    assert sessions(during, "pop3", "authenticated") == sessions(before, "pop3", "authenticated") + 1
    other = srv.connect()
    other.ok("USER " + DEMO_USER)
    assert other.cmd("PASS " + DEMO_PASS).startswith("-ERR [IN-USE]")
    other.quit()
    p.multi("RETR 1")
    p.ok("DELE 1")
    p.quit()
    p.close()
    t = TPop3(srv.tls_port, context=client_context(srv.ca))
    t.login()
    t.quit()
    t.close()

    # sessions end in the worker after the client has its last reply: wait for the gauges
    assert wait_until(lambda: all(sessions(scrape(srv)[0], lst, st) == 0
                                  for lst in ("pop3", "pop3s")
                                  for st in ("connected", "authenticated")), timeout=5)
    after, _ = scrape(srv)
    expect = {
        'buzon_pop3_logins_total{mechanism="USER",result="ok"}': 2,
        'buzon_pop3_logins_total{mechanism="USER",result="failed"}': 1,
        'buzon_pop3_logins_total{mechanism="USER",result="refused"}': 1,
        'buzon_pop3_lock_conflicts_total': 1,
        'buzon_pop3_error_replies_total{code="AUTH"}': 1,
        'buzon_pop3_error_replies_total{code="IN-USE"}': 1,
        'buzon_pop3_error_replies_total{code="none"}': 1,
        'buzon_pop3_commands_total{command="RETR"}': 1,
        'buzon_pop3_commands_total{command="unknown"}': 1,
        'buzon_pop3_command_duration_seconds_count{command="RETR"}': 1,
        'buzon_pop3_command_duration_seconds_bucket{command="RETR",le="+Inf"}': 1,
        'buzon_pop3_retrieved_messages_total': 1,
        'buzon_pop3_deleted_messages_total': 1,
        'buzon_pop3_connections_total{listener="pop3"}': 2,
        'buzon_pop3_connections_total{listener="pop3s"}': 1,
        'buzon_tls_handshakes_total{result="ok",version="TLSv1.3"}': 1,
        'buzon_lmtp_deliveries_total{result="delivered"}': 1,
        'buzon_auth_penalties_total': 1,
    }
    got = {series: delta(before, after, series) for series in expect}
    assert got == expect
    assert delta(before, after, "buzon_lmtp_delivered_bytes_total") >= len(msg("metrics-one"))
    assert delta(before, after, "buzon_pop3_sent_bytes_total") > len(msg("metrics-one"))
    assert delta(before, after, "buzon_pop3_received_bytes_total") > 0
    # a failed PASS waits for its 100 ms penalty before the reply: that is in its latency
    assert delta(before, after, 'buzon_pop3_command_duration_seconds_sum{command="PASS"}') >= 0.1


def before_version(samples):
    versions = [s for s in samples if s.startswith("buzon_build_info{")]
    assert len(versions) == 1, versions
    return re.search(r'version="([^"]*)"', versions[0]).group(1)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_exposition(make_server):
    srv = metrics_server(make_server)
    c = srv.login()
    c.quit()
    _, text = scrape(srv)
    r = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
    # promtool's lint also warns on exit 0: there should be nothing to say
    assert r.stdout.strip() == b"" and r.stderr.strip() == b"", (r.stdout + r.stderr).decode()


def _worker_pids(srv):
    return [pid for pid, name in group_processes(srv.proc.pid) if name == "buzon-pop3"]


def test_counters_survive_a_killed_worker(make_server):
    """The master folds a dead worker's counters into the retired totals and drops its gauges."""
    srv = metrics_server(make_server)
    c = srv.login()
    c.quit()
    c.close()
    held = srv.login()  # open when its worker dies
    before, _ = scrape(srv)
    assert sessions(before, "pop3", "authenticated") == 1
    old = _worker_pids(srv)
    assert len(old) == 1, old
    os.kill(old[0], signal.SIGKILL)
    held.expect_closed(5)
    assert wait_until(lambda: (lambda pids: len(pids) == 1 and pids != old)(_worker_pids(srv)),
                      timeout=10)
    assert wait_until(lambda: scrape(srv)[0]['buzon_processes{role="pop3"}'] == 1, timeout=10)
    after, _ = scrape(srv)
    assert sessions(after, "pop3", "authenticated") == 0
    for series, value in before.items():
        if series.startswith(("buzon_pop3_sessions", "buzon_processes", "buzon_start_time")):
            continue  # gauges
        assert after[series] >= value, series
    ok = 'buzon_pop3_logins_total{mechanism="USER",result="ok"}'
    assert after[ok] == before[ok] == 2
    # the new worker counts on top of the retired totals
    c = srv.login()
    c.quit()
    assert scrape(srv)[0][ok] == 3
    # a killed child makes the master's exit status non-zero (test_supervision.py)
    assert srv.stop(check=False) == 1
    srv.problems.clear()
