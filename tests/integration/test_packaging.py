"""Packaging: `make install` and `make uninstall`, the systemd units (checked with systemd-analyze,
and against the config they serve), the man pages (mandoc lint), the example config and the key
lists of the documentation (so that none can fall behind `buzon check-config`), and buzon's side
of systemd: socket activation and the Type=notify messages."""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess

import pytest

from buzontest import READY_TIMEOUT, REPO_DIR, buzon_bin, valgrind_prefix

EXAMPLE = os.path.join(REPO_DIR, "dist", "buzon.conf.example")
SERVICE_IN = os.path.join(REPO_DIR, "dist", "systemd", "buzon.service.in")
SOCKET_UNIT = os.path.join(REPO_DIR, "dist", "systemd", "buzon.socket")
TMPFILES = os.path.join(REPO_DIR, "dist", "tmpfiles.d", "buzon.conf")
MAN8 = os.path.join(REPO_DIR, "docs", "buzon.8")
MAN5 = os.path.join(REPO_DIR, "docs", "buzon.conf.5")

# What `make install` puts under DESTDIR with the default directories, and the modes.
DEFAULT_TREE = {
    "usr/local/sbin/buzon": 0o755,
    "usr/local/share/man/man8/buzon.8": 0o644,
    "usr/local/share/man/man5/buzon.conf.5": 0o644,
    "etc/buzon/buzon.conf.example": 0o644,
    "usr/local/lib/systemd/system/buzon.service": 0o644,
    "usr/local/lib/systemd/system/buzon.socket": 0o644,
    "usr/local/lib/tmpfiles.d/buzon.conf": 0o644,
}

# ---------------------------------------------------------------------------------------------
# helpers


def _make(*args):
    """Runs a Makefile target against the tree under test (the directory of BUZON_BIN), without
    rebuilding it (-o): the test must install what it tests, and `make check` runs it for the
    sanitizer tree as well. The outer make's job server is not for this make."""
    build = os.path.dirname(os.path.abspath(buzon_bin()))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    cmd = ["make", "-s", "--no-print-directory", "-C", REPO_DIR, "BUILD=" + build,
           "-o", os.path.join(build, "buzon")] + list(args)
    return subprocess.run(cmd, capture_output=True, env=env, timeout=60)


def _files_under(root):
    found = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _check_config(path):
    r = subprocess.run([buzon_bin(), "check-config", "-c", path], capture_output=True, timeout=30)
    assert r.returncode == 0, "check-config %s failed: %s" % (path, r.stderr.decode())
    return r.stdout.decode()


def _settings(printed):
    """{(section, key): [values]} from `buzon check-config` output (lists repeat the key)."""
    out, section = {}, None
    for line in printed.splitlines():
        m = re.fullmatch(r"\[([a-z0-9]+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.fullmatch(r"([a-z_]+) ?= ?(.*)", line)
        if m:
            values = out.setdefault((section, m.group(1)), [])
            if m.group(2).strip():
                values.append(m.group(2).strip())
    return out


class ExampleLine:
    def __init__(self, section, key, value, commented, explanation):
        self.section, self.key, self.value = section, key, value
        self.commented, self.explanation = commented, explanation


def _example_lines(text):
    """The settings of the example config: '# ' lines explain the setting that follows them,
    ';key = value' is a setting left at its default (or an example), 'key = value' is set."""
    lines, section, explanation = [], None, []
    for line in text.splitlines():
        if line.startswith("#"):
            explanation.append(line)
            continue
        m = re.fullmatch(r"\[([a-z0-9]+)\]", line)
        if m:
            section, explanation = m.group(1), []
            continue
        m = re.fullmatch(r"(;?)([a-z_]+) = (.*)", line)
        if m:
            lines.append(ExampleLine(section, m.group(2), m.group(3), m.group(1) == ";",
                                     " ".join(explanation)))
            explanation = []
            continue
        assert line.strip() == "", "example config: line neither comment nor setting: %r" % line
    return lines


def _listen_values(settings, *keys):
    return {v for k in keys for v in settings.get(("pop3", k), [])}


# ---------------------------------------------------------------------------------------------
# make install / uninstall


def test_make_install_tree_and_uninstall(tmp_path):
    root = tmp_path / "root"
    # an admin's own config is there before: it must survive install and uninstall
    os.makedirs(root / "etc" / "buzon")
    (root / "etc" / "buzon" / "buzon.conf").write_text("[pop3]\nlisten = 127.0.0.1:110\n")

    r = _make("install", "DESTDIR=%s" % root)
    assert r.returncode == 0, r.stderr.decode()
    expected = dict(DEFAULT_TREE, **{"etc/buzon/buzon.conf": None})
    found = _files_under(root)
    assert set(found) == set(expected)
    for path, mode in DEFAULT_TREE.items():
        assert found[path] == mode, "%s has mode %o, expected %o" % (path, found[path], mode)
    assert (root / "etc" / "buzon" / "buzon.conf").read_text() == "[pop3]\nlisten = 127.0.0.1:110\n"
    assert not os.lstat(root / "etc" / "buzon").st_mode & 0o022, "config directory writable by others"

    # copies, except the service, whose paths are filled in
    for installed, source in (("usr/local/share/man/man8/buzon.8", MAN8),
                              ("usr/local/share/man/man5/buzon.conf.5", MAN5),
                              ("etc/buzon/buzon.conf.example", EXAMPLE),
                              ("usr/local/lib/systemd/system/buzon.socket", SOCKET_UNIT),
                              ("usr/local/lib/tmpfiles.d/buzon.conf", TMPFILES)):
        assert _read(root / installed) == _read(source), installed
    service = _read(root / "usr/local/lib/systemd/system/buzon.service")
    assert not re.search(r"@[A-Z]+@", service), "placeholder left in buzon.service"
    exec_start = re.search(r"^ExecStart=(.*)$", service, re.M).group(1)
    assert exec_start == "/usr/local/sbin/buzon serve -c /etc/buzon/buzon.conf"

    binary = str(root / "usr/local/sbin/buzon")
    r = subprocess.run([binary, "--help"], capture_output=True, timeout=30)
    assert r.returncode == 0 and b"serve" in r.stdout, r
    # the unit's -c is the path the binary uses without -c
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, timeout=30)
    assert b"/etc/buzon/buzon.conf" in r.stdout, r.stdout

    r = _make("uninstall", "DESTDIR=%s" % root)
    assert r.returncode == 0, r.stderr.decode()
    assert set(_files_under(root)) == {"etc/buzon/buzon.conf"}
    # without a config of its own, the directory goes too
    os.unlink(root / "etc" / "buzon" / "buzon.conf")
    r = _make("uninstall", "DESTDIR=%s" % root)
    assert r.returncode == 0, r.stderr.decode()
    assert not os.path.exists(root / "etc" / "buzon")


def test_make_install_honours_directories(tmp_path):
    root = tmp_path / "root"
    r = _make("install", "DESTDIR=%s" % root, "PREFIX=/usr", "SBINDIR=/usr/bin",
              "MANDIR=/usr/man", "SYSCONFDIR=/opt/etc", "UNITDIR=/lib/systemd/system",
              "TMPFILESDIR=/run/tmpfiles.d")
    assert r.returncode == 0, r.stderr.decode()
    assert set(_files_under(root)) == {
        "usr/bin/buzon", "usr/man/man8/buzon.8", "usr/man/man5/buzon.conf.5",
        "opt/etc/buzon/buzon.conf.example", "lib/systemd/system/buzon.service",
        "lib/systemd/system/buzon.socket", "run/tmpfiles.d/buzon.conf"}
    service = _read(root / "lib/systemd/system/buzon.service")
    assert re.search(r"^ExecStart=/usr/bin/buzon serve -c /opt/etc/buzon/buzon.conf$", service, re.M)

    # PREFIX alone moves everything but the config
    root2 = tmp_path / "root2"
    r = _make("install", "DESTDIR=%s" % root2, "PREFIX=/usr")
    assert r.returncode == 0, r.stderr.decode()
    assert set(_files_under(root2)) == {p.replace("usr/local/", "usr/") for p in DEFAULT_TREE}


# ---------------------------------------------------------------------------------------------
# systemd units


def test_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    root = tmp_path / "root"
    r = _make("install", "DESTDIR=%s" % root)
    assert r.returncode == 0, r.stderr.decode()
    # verify wants ExecStart's binary to exist: a copy of the units pointing at the staged one,
    # and the staged man pages on MANPATH for Documentation=
    units = tmp_path / "units"
    os.makedirs(units)
    staged = str(root / "usr/local/sbin/buzon")
    service = _read(root / "usr/local/lib/systemd/system/buzon.service")
    (units / "buzon.service").write_text(service.replace("/usr/local/sbin/buzon", staged))
    shutil.copy(root / "usr/local/lib/systemd/system/buzon.socket", units / "buzon.socket")
    env = dict(os.environ, MANPATH=str(root / "usr/local/share/man"))
    cmd = ["systemd-analyze", "verify"]
    if shutil.which("man") is None:
        cmd.append("--man=no")
    r = subprocess.run(cmd + [str(units / "buzon.service"), str(units / "buzon.socket")],
                       capture_output=True, env=env, timeout=60)
    # verify exits 0 on unknown keys and bad values too: any message is a finding
    messages = (r.stdout + r.stderr).decode().strip()
    assert r.returncode == 0 and messages == "", messages


def test_units_agree_with_the_config():
    defaults = _settings(_check_config(EXAMPLE))
    service = _read(SERVICE_IN)
    socket_unit = _read(SOCKET_UNIT)

    # every socket the unit passes is one the example config serves (else buzon refuses to start),
    # and so is the commented 995 once listen_tls is uncommented
    active = re.findall(r"^ListenStream=(.+)$", socket_unit, re.M)
    assert active and set(active) <= _listen_values(defaults, "listen", "listen_tls")
    commented = re.findall(r"^#ListenStream=(.+)$", socket_unit, re.M)
    example_listens = {l.value for l in _example_lines(_read(EXAMPLE))
                       if l.section == "pop3" and l.key in ("listen", "listen_tls")}
    assert set(commented) <= example_listens

    # a stop lets sessions drain for drain_time, then the children a few seconds to exit
    drain = int(defaults[("server", "drain_time")][0].rstrip("s"))
    timeout = re.search(r"^TimeoutStopSec=(\d+)s$", service, re.M)
    assert timeout and int(timeout.group(1)) >= drain + 30, "TimeoutStopSec too close to drain_time"

    # the control socket's directory is the one the service and tmpfiles.d create
    control_dir = os.path.dirname(defaults[("server", "control_socket")][0])
    assert re.search(r"^RuntimeDirectory=%s$" % os.path.basename(control_dir), service, re.M)
    assert re.search(r"^d %s 0755 root root -$" % re.escape(control_dir), _read(TMPFILES), re.M)
    assert re.search(r"^KillMode=mixed$", service, re.M)
    assert re.search(r"^Type=notify$", service, re.M)


# ---------------------------------------------------------------------------------------------
# man pages and the key lists of the documentation


def test_man_pages_lint_clean():
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (Debian package mandoc): man pages not linted")
    r = _make("man-lint")
    messages = (r.stdout + r.stderr).decode().strip()
    assert r.returncode == 0 and messages == "", messages


def _man5_keys():
    keys, section = set(), None
    for line in _read(MAN5).splitlines():
        m = re.fullmatch(r"\.Ss \[([a-z0-9]+)\]", line)
        if m:
            section = m.group(1)
        elif line.startswith(".Sh "):
            section = None
        m = re.fullmatch(r"\.It Cm ([a-z_]+)", line)
        if m and section:
            keys.add((section, m.group(1)))
    return keys


def _readme_keys():
    return set(re.findall(r"^\| ([a-z0-9]+) \| `([a-z_]+)` \|", _read(os.path.join(REPO_DIR, "README.md")), re.M))


def test_documentation_lists_every_key():
    keys = set(_settings(_check_config(EXAMPLE)))
    assert len(keys) > 40
    assert _man5_keys() == keys, "buzon.conf.5: missing %s, unknown %s" % (
        sorted(keys - _man5_keys()), sorted(_man5_keys() - keys))
    assert _readme_keys() == keys, "README table: missing %s, unknown %s" % (
        sorted(keys - _readme_keys()), sorted(_readme_keys() - keys))


def test_man8_documents_every_command_and_option():
    r = subprocess.run([buzon_bin(), "--help"], capture_output=True, timeout=30)
    commands = re.findall(r"^  ([a-z-]+) ", r.stdout.decode(), re.M)
    assert "serve" in commands and "version" in commands
    page = _read(MAN8)
    synopsis = page.split(".Sh SYNOPSIS")[1].split(".Sh DESCRIPTION")[0]
    for command in commands:
        assert re.search(r"^\.Cm %s\b" % re.escape(command), synopsis, re.M), \
            "buzon.8 SYNOPSIS lacks %s" % command
        if command == "version":
            continue
        r = subprocess.run([buzon_bin(), command, "--help"], capture_output=True, timeout=30)
        usage = (r.stdout + r.stderr).decode()
        # "-c, --config FILE" and "--scheme S": the page may use either name of an option
        for short, long in re.findall(r"^\s+(?:-([a-zA-Z]), )?--([a-z-]+)", usage, re.M):
            if long == "help":
                continue
            names = [r"\.Fl -%s\b" % re.escape(long)] + ([r"Fl %s\b" % short] if short else [])
            assert any(re.search(n, page) for n in names), \
                "buzon.8 lacks option --%s of %s" % (long, command)


# ---------------------------------------------------------------------------------------------
# the example config


def test_example_config_lists_every_key():
    printed = _settings(_check_config(EXAMPLE))
    lines = _example_lines(_read(EXAMPLE))
    in_example = {(l.section, l.key) for l in lines}
    missing = sorted(set(printed) - in_example)
    assert not missing, "keys missing from dist/buzon.conf.example: %s" % missing
    seen = set()
    for l in lines:
        assert (l.section, l.key) not in seen, "%s %s twice" % (l.section, l.key)
        seen.add((l.section, l.key))
        assert l.explanation, "[%s] %s has no explanation" % (l.section, l.key)
    # uncommented: only what a server cannot run without
    assert {(l.section, l.key) for l in lines if not l.commented} == {
        ("server", "user"), ("pop3", "listen"), ("auth", "passwd_file"), ("mail", "location")}


def test_example_config_shows_the_real_defaults(tmp_path):
    """Uncommenting a ';key = value' line of a key that has a default changes nothing: the value
    shown is the default. Keys without one say so, or say what stands in for it."""
    text = _read(EXAMPLE)
    as_shipped = _check_config(EXAMPLE)
    printed = _settings(as_shipped)
    with_defaults = []
    for line in text.splitlines():
        m = re.fullmatch(r";([a-z_]+) = .*", line)
        if m:
            section = [s for s in re.findall(r"^\[([a-z0-9]+)\]", text[:text.index(line)], re.M)][-1]
            if printed[(section, m.group(1))]:
                line = line[1:]
        with_defaults.append(line)
    path = tmp_path / "defaults.conf"
    path.write_text("\n".join(with_defaults) + "\n")
    assert _check_config(str(path)) == as_shipped
    for l in _example_lines(text):
        if l.commented and not printed[(l.section, l.key)]:
            assert "No default" in l.explanation or "Default:" in l.explanation, \
                "[%s] %s: the explanation must say there is no default" % (l.section, l.key)


def test_example_config_examples_are_valid(tmp_path):
    """Every commented line, uncommented, is a value buzon accepts."""
    path = tmp_path / "everything.conf"
    path.write_text(re.sub(r"^;", "", _read(EXAMPLE), flags=re.M))
    everything = _settings(_check_config(str(path)))
    assert everything[("tls", "cert")] and everything[("pop3", "listen_tls")]


# ---------------------------------------------------------------------------------------------
# buzon serve under systemd: socket activation and Type=notify


def _listening_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def _start_socket_activated(srv, sockets):
    """Starts srv's `buzon serve` the way systemd does with a socket unit: the sockets at fd 3, 4,
    …, LISTEN_FDS their count and LISTEN_PID the server's own pid (bash sets it to its own, then
    becomes buzon). The test's copies are closed, so only buzon holds them."""
    srv.write_config()
    srv.own_passwd_file()
    parked = [os.dup(s.fileno()) for s in sockets]
    moves = " ".join("%d<&%d %d<&-" % (3 + i, fd, fd) for i, fd in enumerate(parked))
    script = 'exec %s; export LISTEN_PID=$$; exec "$@"' % moves
    errpath = os.path.join(srv.base, "serve-%d.stderr" % len(srv.runs))
    with open(errpath, "wb") as err:
        proc = subprocess.Popen(
            ["bash", "-c", script, "bash"] + valgrind_prefix(srv.base) + [srv.bin, "serve", "-c", srv.conf],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            pass_fds=parked, env=dict(os.environ, LISTEN_FDS=str(len(sockets))))
    for fd in parked:
        os.close(fd)
    for s in sockets:
        s.close()
    srv.proc = proc
    srv.runs.append((proc, errpath))
    return proc


def test_serve_takes_its_listener_from_systemd(make_server):
    srv = make_server(start=False)
    # bound and listening here, without SO_REUSEPORT: buzon can serve it only by taking it
    _start_socket_activated(srv, [_listening_socket(srv.port)])
    srv.wait_ready()
    with srv.login() as c:
        c.ok("NOOP")
        c.quit()
    srv.stop()


def test_serve_refuses_a_systemd_socket_no_address_takes(make_server):
    srv = make_server(start=False)
    stray = _listening_socket(0)
    stray_port = stray.getsockname()[1]
    proc = _start_socket_activated(srv, [_listening_socket(srv.port), stray])
    try:
        proc.wait(READY_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("buzon serve started although systemd passed 127.0.0.1:%d, which the config "
                    "does not list:\n%s" % (stray_port, srv.stderr_text()))
    srv.proc = None  # it was meant to exit
    assert proc.returncode != 0
    assert "127.0.0.1:%d" % stray_port in srv.stderr_text(), srv.stderr_text()


def _notifications(sock, until, timeout):
    """Datagrams from the stand-in NOTIFY_SOCKET until one holds the line `until`."""
    got = []
    sock.settimeout(timeout)
    while True:
        try:
            message = sock.recv(4096).decode()
        except socket.timeout:
            pytest.fail("no %s from buzon within %ss; got %r" % (until, timeout, got))
        got.append(message)
        if until in message.split("\n"):
            return got


def test_serve_notifies_systemd(make_server, monkeypatch):
    srv = make_server(start=False)
    path = os.path.join(srv.base, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        srv.start()
        # READY=1 only once it serves: by then a client gets the greeting
        _notifications(notify, "READY=1", READY_TIMEOUT)
        with srv.connect() as c:
            c.ok("QUIT")
        # a reload is bracketed by RELOADING=1 and READY=1
        srv.proc.send_signal(signal.SIGHUP)
        got = _notifications(notify, "READY=1", READY_TIMEOUT)
        assert any("RELOADING=1" in m.split("\n") for m in got), got
        srv.stop()
        _notifications(notify, "STOPPING=1", 1.0)
    finally:
        notify.close()
