"""Helpers for tests that SIGKILL a running server: kill its whole process group (master, workers,
auth, LMTP) now or after a delay measured from a chosen moment, and wait until every member is
really gone, so that the next start finds the maildrop unlocked and the ports free.

Standard library only; the server is a buzontest.BuzonServer (started with start_new_session, so
its process group id is the master's pid).
"""

import os
import random
import signal
import socket
import subprocess
import threading

from buzontest import wait_until


def port_outside_ephemeral_range():
    """A free TCP port on 127.0.0.1 below the kernel's ephemeral range. While a killed server is
    down, any connect() on the machine may otherwise be given its port as a local port (even a
    connect to that very port, which then connects to itself), and the restart fails with
    EADDRINUSE for as long as that socket lives; the kernel never hands out ports outside
    ip_local_port_range, so such a port stays free for the server."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(min(10000, low // 2), low - 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port below %d" % low)


def use_port_outside_ephemeral_range(srv):
    """Moves srv's POP3 listener (not started yet) to port_outside_ephemeral_range()."""
    srv.port = port_outside_ephemeral_range()
    srv.settings["pop3"]["listen"] = "127.0.0.1:%d" % srv.port


def _stat_fields(path):
    """The fields of a /proc .../stat file after the command name: [state, ppid, pgrp, ...]."""
    try:
        with open(path) as f:
            st = f.read()
    except OSError:
        return []
    return st[st.rfind(")") + 2:].split()


def _threads_alive(pid):
    """Whether any thread of pid is still running or exiting. A process's leader shows as a zombie
    as soon as it has exited itself, while other threads (a worker's offload threads, perhaps
    finishing an fsync before the kill can take them) still hold the shared descriptors: the
    listening socket, the maildrop lock."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    return any(_stat_fields("/proc/%d/task/%s/stat" % (pid, tid))[:1] not in ([], ["Z"], ["X"])
               for tid in tids)


def live_group_members(pgid):
    """PIDs of the process group that still have a thread that is not dead or a zombie. An
    orphaned worker killed with its master is reaped by PID 1, which here may take a second or
    two; a process whose threads are all zombies holds no socket, lock or file, so it does not
    have to be waited for."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields("/proc/%s/stat" % entry)
        if len(fields) > 2 and int(fields[2]) == pgid and _threads_alive(int(entry)):
            out.append(int(entry))
    return out


def sigkill_server(srv):
    """SIGKILL to srv's process group; returns once every member is dead or a zombie."""
    proc, srv.proc = srv.proc, None
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
    left = wait_until(lambda: not live_group_members(proc.pid), 10, 0.005)
    assert left, "processes of group %d survive SIGKILL: %r" % (
        proc.pid, live_group_members(proc.pid))


class DelayedKill:
    """SIGKILLs the process group pgid delay seconds after it is made, from a thread, so that the
    kill lands wherever the server happens to be meanwhile. fired tells whether it was sent."""

    def __init__(self, pgid, delay):
        self.fired = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pgid, delay), daemon=True)
        self._thread.start()

    def _run(self, pgid, delay):
        if self._cancel.wait(delay):
            return
        self.fired.set()
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def join(self, timeout=10.0):
        """Waits until the kill was sent (or cancelled)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "kill thread did not finish"

    def cancel(self):
        self._cancel.set()
        self.join()


def port_sockets(port):
    """The kernel's TCP sockets on port (ss output), for a failure message about a restart."""
    try:
        return subprocess.run(["ss", "-tanpo", "( sport = :%d or dport = :%d )" % (port, port)],
                              capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "(ss failed: %s)" % e
