#!/usr/bin/env bash
# Runs every test against one build tree: the cmocka unit tests, then the protocol and real-client
# suites (pytest) against that tree's buzon. Prints each runner's summary and a closing
# "SUITE: N passed, M failed" line. Usage: scripts/check.sh BUILD_DIR [LABEL]
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
label=${2:-tests}
python=${PYTHON:-/usr/bin/python3}
# UNIT_WRAPPER runs each unit test under a tool (`make check-valgrind` puts valgrind there)
read -r -a unit_wrapper <<<"${UNIT_WRAPPER:-}"
passed=0
failed=0

for t in "$build"/tests/test_*; do
	[ -x "$t" ] || continue
	echo "== unit: $t"
	out=$("${unit_wrapper[@]}" "$t" 2>&1)
	rc=$?
	echo "$out" | grep -E '^\[  (PASSED|FAILED)  \]|^\[  ERROR   \]|FAILED TEST' || true
	n_ok=$(echo "$out" | grep -c '^\[       OK \]')
	# cmocka names a failed test twice (when it fails and in the closing list): count names
	n_bad=$(echo "$out" | grep '^\[  FAILED  \] [a-z_]' | sort -u | wc -l)
	passed=$((passed + n_ok))
	failed=$((failed + n_bad))
	if [ $rc -ne 0 ] && [ "$n_bad" -eq 0 ]; then
		echo "$out" | tail -20
		failed=$((failed + 1))
	fi
done

echo "== protocol and real-client tests: BUZON_BIN=$build/buzon"
report=$(mktemp)
BUZON_BIN="$PWD/$build/buzon" "$python" -m pytest -q -p no:cacheprovider \
	--junitxml="$report" tests/integration tests/interop
rc=$?
if [ -s "$report" ]; then
	read -r t_tests t_fail t_err t_skip < <("$python" - "$report" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
tot = lambda k: sum(int(s.get(k, 0)) for s in suites)
print(tot("tests"), tot("failures"), tot("errors"), tot("skipped"))
PY
)
	passed=$((passed + t_tests - t_fail - t_err - t_skip))
	failed=$((failed + t_fail + t_err))
elif [ $rc -ne 0 ]; then
	failed=$((failed + 1))
fi
rm -f "$report"

echo "$label: $passed passed, $failed failed"
# `make check` adds the trees up into one closing line
[ -n "${CHECK_SUMMARY:-}" ] && echo "$passed $failed" >>"$CHECK_SUMMARY"
[ "$failed" -eq 0 ]
