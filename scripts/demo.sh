#!/usr/bin/env bash
# `make run`: a demo under ./run/ — a config, a user demo/demo with a welcome message in its
# Maildir — then the server in the foreground on 127.0.0.1 (port 1110, or $PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
port=${PORT:-1110}
lmtp_port=${LMTP_PORT:-2424}
metrics_port=${METRICS_PORT:-9155}
bin=$top/build/buzon
run=$top/run

# The passwd-file gets a directory of its own: the auth process's sandbox may read everything
# beneath that directory, and it must not hold the mail (docs/DESIGN.md, "Sandbox").
mkdir -p "$run/mail/demo/new" "$run/mail/demo/cur" "$run/mail/demo/tmp" "$run/auth"
user_line=""
owner=$(id -un)
if [ "$(id -u)" -eq 0 ]; then
	# buzon never runs its children as root; the demo's mail belongs to the unprivileged "nobody"
	owner=nobody
	user_line="user = nobody"
	if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$run" 2>/dev/null; then
		echo "buzon: $run is not reachable by user nobody (a parent directory is private);" >&2
		echo "buzon: clone the repository somewhere world-traversable, e.g. /srv or /opt" >&2
		exit 1
	fi
fi

cat >"$run/buzon.conf" <<CONF
; buzon demo configuration, written by make run (scripts/demo.sh)
[server]
workers = auto
log_level = info
$user_line
; \`buzon who|kick|stats|reload|ban -c $run/buzon.conf\` talk to the server here
control_socket = $run/control.sock

[pop3]
listen = 127.0.0.1:$port

[lmtp]
listen = 127.0.0.1:$lmtp_port

[auth]
passwd_file = $run/auth/users
failure_delay = 1s

[mail]
location = maildir:$run/mail/%u

[metrics]
; Prometheus: curl http://127.0.0.1:$metrics_port/metrics
listen = 127.0.0.1:$metrics_port
CONF

if ! [ -f "$run/auth/users" ] || ! grep -q '^demo:' "$run/auth/users"; then
	printf 'demo\n' | "$bin" user add -c "$run/buzon.conf" --password-stdin demo
fi
if [ -z "$(find "$run/mail/demo/new" "$run/mail/demo/cur" -type f | head -n 1)" ]; then
	cat >"$run/mail/demo/new/$(date +%s).M0P$$.welcome" <<MAIL
From: buzon <postmaster@localhost>
To: demo <demo@localhost>
Subject: Welcome to buzon
Date: $(date -R)
Message-ID: <welcome.$(date +%s)@localhost>

Hello!

This message was put in the demo Maildir by make run. Read it with
    curl -u demo:demo pop3://127.0.0.1:$port/1
or point any POP3 client at 127.0.0.1 port $port, user demo, password demo.
MAIL
fi
chown -R "$owner" "$run"

cat <<TEXT

buzon demo: POP3 on 127.0.0.1:$port, user demo, password demo
  list messages:   curl -u demo:demo pop3://127.0.0.1:$port/
  read message 1:  curl -u demo:demo pop3://127.0.0.1:$port/1
  deliver a new one over LMTP (python3 standard library):
    python3 -c 'import smtplib; smtplib.LMTP("127.0.0.1", $lmtp_port).sendmail("me@localhost", ["demo"], "Subject: hi\n\nhello\n")'
  who is connected: build/buzon who -c $run/buzon.conf     (also stats, kick, ban, reload)
  metrics:         curl http://127.0.0.1:$metrics_port/metrics
  config:          $run/buzon.conf     (stop with Ctrl-C)

TEXT
exec "$bin" serve -c "$run/buzon.conf"
