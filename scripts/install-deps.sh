#!/usr/bin/env bash
# Installs the Debian packages buzon needs, when run as root and only those that are missing.
# Usage: scripts/install-deps.sh [build|test]   (test = build + everything the test suite uses)
set -euo pipefail
what=${1:-build}
build_pkgs="build-essential pkg-config libevent-dev libssl-dev libcrypt-dev libsodium-dev libinih-dev libidn11-dev libseccomp-dev libsystemd-dev"
test_pkgs="libcmocka-dev python3 python3-pytest curl fetchmail mpop getmail6 swaks postfix dovecot-pop3d clang libclang-rt-14-dev mandoc prometheus"
pkgs=$build_pkgs
[ "$what" = test ] && pkgs="$build_pkgs $test_pkgs"

missing=()
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "buzon: missing Debian packages: ${missing[*]}" >&2
	echo "buzon: run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "buzon: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
