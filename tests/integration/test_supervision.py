"""The master restarts a POP3 worker or the auth process that dies, and the service goes on; the
crash is logged and makes the final exit status non-zero, so that it cannot go unnoticed."""

import os
import signal

from buzontest import Closed, wait_until
from test_privileges import children_of, role_of


def child_with_role(server, role):
    found = wait_until(lambda: [k for k in children_of(server.proc.pid) if role_of(k) == role], 5)
    assert found, "no %s child" % role
    return found[0]


def login_works(server):
    try:
        c = server.login()
        c.quit()
        return True
    except (AssertionError, OSError, Closed):
        return False


def test_killed_worker_is_restarted(make_server):
    srv = make_server()
    srv.deliver(b"Subject: kept\n\nbody\n")
    worker = child_with_role(srv, "pop3")
    c = srv.login()
    c.ok("DELE 1")
    os.kill(worker, signal.SIGKILL)
    c.expect_closed(5)
    assert wait_until(lambda: worker not in children_of(srv.proc.pid), 5)
    assert wait_until(lambda: login_works(srv), 10), srv.stderr_text()
    # the session that died held a DELE without QUIT: nothing was deleted
    c = srv.login()
    assert c.stat()[0] == 1
    c.quit()
    assert srv.stop(check=False) == 1
    assert "event=child_killed child=pop3" in srv.stderr_text()
    srv.problems.clear()


def test_killed_auth_process_is_restarted(make_server):
    srv = make_server()
    auth = child_with_role(srv, "auth")
    os.kill(auth, signal.SIGKILL)
    assert wait_until(lambda: auth not in children_of(srv.proc.pid), 5)
    assert wait_until(lambda: login_works(srv), 10), srv.stderr_text()
    assert srv.stop(check=False) == 1
    assert "event=child_killed child=auth" in srv.stderr_text()
    srv.problems.clear()
