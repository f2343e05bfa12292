"""curl's POP3 support against buzon."""

import re

from buzontest import Pop3, pop3_size, retr_expected
from clientlib import MESSAGES, need, run, seed


def _curl(srv, path, *extra, user="demo:secret"):
    curl = need("curl")
    return run([curl, "-s", "-S", "--max-time", "30", "-u", user] + list(extra)
               + ["pop3://127.0.0.1:%d/%s" % (srv.port, path)])


def test_curl_retr_each_message(server):
    seed(server)
    for i, m in enumerate(MESSAGES):
        r = _curl(server, str(i + 1))
        assert r.returncode == 0, r.stderr
        assert r.stdout == retr_expected(m), "message %d" % (i + 1)
    # RETR through curl marks the messages seen but deletes nothing.
    files = server.files()
    assert len(files) == len(MESSAGES)
    assert all(f[1] and "S" in f[1] for f in files.values()), files


def test_curl_list_and_uidl(server):
    seed(server)
    r = _curl(server, "")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines == ["%d %d" % (i + 1, pop3_size(m)) for i, m in enumerate(MESSAGES)]
    r = _curl(server, "", "-X", "UIDL")
    assert r.returncode == 0, r.stderr
    uidl = [l.split() for l in r.stdout.decode().splitlines()]
    assert [int(n) for n, _ in uidl] == list(range(1, len(MESSAGES) + 1))
    assert all(re.fullmatch(r"[0-9a-f]{16}", u) for _, u in uidl)
    c = Pop3(server.port)
    c.login()
    assert c.uidl() == {int(n): u for n, u in uidl}
    c.quit()


def test_curl_top(server):
    seed(server)
    r = _curl(server, "", "-X", "TOP 2 0")
    assert r.returncode == 0, r.stderr
    head = retr_expected(MESSAGES[1]).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert r.stdout == head


def test_curl_dele(server):
    bases = seed(server)
    r = _curl(server, "", "-X", "DELE 2", "-I")
    assert r.returncode == 0, r.stderr
    files = server.files()
    assert sorted(files) == sorted(bases[:1] + bases[2:]), files
    r = _curl(server, "")
    assert len(r.stdout.decode().splitlines()) == len(MESSAGES) - 1


def test_curl_wrong_password(server):
    seed(server)
    r = _curl(server, "1", user="demo:wrong")
    assert r.returncode != 0
    assert len(server.files()) == len(MESSAGES)
