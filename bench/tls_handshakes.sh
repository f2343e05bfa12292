#!/usr/bin/env bash
# TLS handshakes per second, full and resumed, against buzon's implicit-TLS listener and
# Dovecot's pop3s listener (tuned: pop3-login service_count=0), on loopback, on this machine, in
# the same run, rounds alternating (buzon, Dovecot, buzon, Dovecot, ...). The client is
# `openssl s_time` (PARALLEL processes, each one connection at a time), the same for both, so
# ratios are what counts; client and server share this machine's cores.
# Usage: bench/tls_handshakes.sh [SECONDS_PER_RUN] [ROUNDS] [PARALLEL]   (needs root for Dovecot)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
parallel=${3:-4}
top=$PWD
work=$(mktemp -d /tmp/buzon-tlsbench-XXXXXX)
chmod 755 "$work"
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$work"' EXIT

command -v dovecot >/dev/null || { echo "dovecot not installed (apt-get install dovecot-pop3d)" >&2; exit 1; }
[ -x build/buzon ] || make -s

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
b_port=$(port); b_tls=$(port); d_tls=$(port)

# one certificate for both (P-256 ECDSA, what a modern deployment uses)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
	-keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

cat >"$work/buzon.conf" <<CONF
[server]
workers = auto
user = nobody
log_level = warn
control_socket = $work/control.sock
[pop3]
listen = 127.0.0.1:$b_port
listen_tls = 127.0.0.1:$b_tls
[tls]
cert = $work/cert.pem
key = $work/key.pem
[auth]
passwd_file = $work/users
[mail]
location = maildir:$work/mail/%u
CONF
echo 'demo:{PLAIN}demo' >"$work/users"
chown nobody "$work/users"

mkdir -p "$work/dovecot"
cat >"$work/dovecot.conf" <<CONF
base_dir = $work/dovecot/run
state_dir = $work/dovecot/state
log_path = $work/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = required
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
ssl_min_protocol = TLSv1.2
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = $d_tls
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}
service pop3 {
  service_count = 0
  client_limit = 1000
}
passdb {
  driver = passwd-file
  args = $work/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$work/mail/%u
}
mail_location = maildir:~/Maildir
CONF

build/buzon serve -c "$work/buzon.conf" 2>"$work/buzon.log" &
echo $! >"$work/buzon.pid"
dovecot -c "$work/dovecot.conf" -F &
echo $! >"$work/dovecot.pid"
sleep 1.5

# prints connections per second of PARALLEL s_time clients together
run() { # port mode(-new|-reuse) proto
	for ((p = 0; p < parallel; p++)); do
		openssl s_time -connect "127.0.0.1:$1" "$2" "$3" -time "$secs" 2>/dev/null |
			awk '/connections in/ && /real seconds/ {print $1 / $4; exit}' &
	done | awk '{sum += $1} END {printf "%.0f\n", sum}'
	wait
}

declare -A results
for mode in -new -reuse; do
	for proto in -tls1_3 -tls1_2; do
		for ((r = 1; r <= rounds; r++)); do
			results[buzon$mode$proto]+="$(run "$b_tls" "$mode" "$proto") "
			results[dovecot$mode$proto]+="$(run "$d_tls" "$mode" "$proto") "
		done
	done
done

# TLS 1.3 resumption with a client that reads the ticket (s_time cannot): PARALLEL clients summed
resume13() { # port
	for ((p = 0; p < parallel; p++)); do
		/usr/bin/python3 bench/tls_resume.py "$1" "$secs" &
	done | awk '{sum += $1; frac += $2; n++} END {printf "%.0f %.2f\n", sum, frac / n}'
	wait
}
for ((r = 1; r <= rounds; r++)); do
	read -r rate frac < <(resume13 "$b_tls")
	results[buzon_r13]+="$rate "
	results[buzon_r13_frac]="$frac"
	read -r rate frac < <(resume13 "$d_tls")
	results[dovecot_r13]+="$rate "
	results[dovecot_r13_frac]="$frac"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '| handshakes/s (%s x openssl s_time, %ss, %s rounds) | buzon | Dovecot 2.3 tuned | buzon/Dovecot |\n' \
	"$parallel" "$secs" "$rounds"
printf '|---|---|---|---|\n'
for mode in -new -reuse; do
	for proto in -tls1_3 -tls1_2; do
		# s_time -reuse does not resume TLS 1.3 (it never reads the ticket): see the row below
		[ "$mode$proto" = -reuse-tls1_3 ] && continue
		b=$(echo "${results[buzon$mode$proto]}" | median)
		d=$(echo "${results[dovecot$mode$proto]}" | median)
		label=$([ "$mode" = -new ] && echo full || echo resumed)
		printf '| %s %s | %.0f (%s) | %.0f (%s) | %.2f |\n' "$label" "${proto#-}" "$b" \
			"${results[buzon$mode$proto]% }" "$d" "${results[dovecot$mode$proto]% }" \
			"$(awk -v b="$b" -v d="$d" 'BEGIN {print (d > 0 ? b / d : 0)}')"
	done
done
b=$(echo "${results[buzon_r13]}" | median)
d=$(echo "${results[dovecot_r13]}" | median)
printf '| resumed tls1_3 (Python client reading the ticket; resumed share %s / %s) | %.0f (%s) | %.0f (%s) | %.2f |\n' \
	"${results[buzon_r13_frac]}" "${results[dovecot_r13_frac]}" "$b" "${results[buzon_r13]% }" \
	"$d" "${results[dovecot_r13]% }" "$(awk -v b="$b" -v d="$d" 'BEGIN {print (d > 0 ? b / d : 0)}')"
