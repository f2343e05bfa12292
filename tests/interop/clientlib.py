"""Shared pieces of the real-client tests: the seeded messages and the comparison of what a client
delivered with what was seeded."""

import os
import re
import shutil
import subprocess

import pytest

from buzontest import make_message

CLIENT_TIMEOUT = 60

MESSAGES = [
    make_message("interop-plain", b"Hello,\nthis is a plain message.\n\n-- \nsig\n"),
    make_message("interop-dots", b".\n..\n.hidden line\n...\nmiddle\n. dot space\nend\n"),
    make_message("interop-nofinal", b"first line\n.second line\nno final newline"),
    make_message(
        "interop-8bit",
        "Gr\u00fc\u00dfe aus K\u00f6ln, \u00e7a va? \u00a9\n".encode("latin-1") + bytes(range(0xa0, 0x100)) + b"\n",
        extra_headers=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: 8bit\n",
    ),
    make_message("interop-crlf", b"crlf body\n.dot line\n\nlast\n", nl=b"\r\n"),
]


def need(binary):
    path = shutil.which(binary)
    if not path:
        pytest.skip("%s is not installed (apt-get install %s)" % (binary, binary))
    return path


def run(argv, env=None, cwd=None, timeout=CLIENT_TIMEOUT, input=None):
    try:
        return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail("%s timed out after %ss; stdout %r stderr %r" % (argv[0], timeout, e.stdout, e.stderr))


def _norm(data):
    """Line ends to LF, trailing newlines removed."""
    return data.replace(b"\r\n", b"\n").rstrip(b"\n")


def _split(data):
    data = _norm(data)
    head, sep, body = data.partition(b"\n\n")
    return head, body


def _unfold(head):
    return re.sub(rb"\n[ \t]+", b" ", head).split(b"\n")


def message_id(data):
    head, _ = _split(data)
    for line in _unfold(head):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip()
    return None


def check_delivered(seeded, received, what):
    """Every seeded message was received exactly once, with identical body and all seeded headers."""
    by_id = {}
    for r in received:
        mid = message_id(r)
        assert mid is not None, "%s: a received message has no Message-ID: %r" % (what, r[:300])
        by_id.setdefault(mid, []).append(r)
    expect = {message_id(s): s for s in seeded}
    assert set(by_id) == set(expect), "%s: received %r, expected %r" % (what, sorted(by_id), sorted(expect))
    for mid, s in expect.items():
        got = by_id[mid]
        assert len(got) == 1, "%s: %s received %d times" % (what, mid, len(got))
        shead, sbody = _split(s)
        rhead, rbody = _split(got[0])
        assert rbody == sbody, "%s: body of %s differs:\nexpected %r\ngot      %r" % (what, mid, sbody, rbody)
        rlines = set(_unfold(rhead))
        for line in _unfold(shead):
            assert line in rlines, "%s: header %r of %s missing in %r" % (what, line, mid, rhead)


def read_maildir(path):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(path, sub)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
    return out


def read_dir(path):
    out = []
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out.append(f.read())
    return out


def make_out_maildir(path):
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def seed(srv, messages=MESSAGES):
    return [srv.deliver(m) for m in messages]
