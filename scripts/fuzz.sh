#!/usr/bin/env bash
# Runs every libFuzzer target of build dir $1 (made by `make fuzz-build`) for FUZZ_SECONDS each,
# FUZZ_JOBS at a time, and prints one line per target and a summary; exits 1 if any target found a
# crash, a leak or a timeout. Called by `make fuzz`; see fuzz/README.md.
#
# Each target fuzzes fuzz/out/<target>/corpus (gitignored, kept between runs), into which the
# committed seeds of fuzz/corpus/<target>/ are copied first, with fuzz/dict/<target>.dict. Findings
# and the full log land in fuzz/out/<target>/.
#
# Environment: FUZZ_SECONDS (default 60), FUZZ_JOBS (default 1), FUZZ_TARGETS (space-separated
# names, default all), FUZZ_TIMEOUT (seconds one input may take, default 20).
set -u

build=${1:?usage: scripts/fuzz.sh BUILD_DIR}
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
input_timeout=${FUZZ_TIMEOUT:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 2

targets=${FUZZ_TARGETS:-}
if [ -z "$targets" ]; then
	for bin in "$build"/fuzz_*; do
		[ -x "$bin" ] && targets="$targets ${bin##*/fuzz_}"
	done
fi
if [ -z "$targets" ]; then
	echo "fuzz: no targets in $build (run make fuzz-build)" >&2
	exit 2
fi

# Scratch space for targets that write files per input: tmpfs when there is one.
scratch_base=/tmp
[ -w /dev/shm ] && scratch_base=/dev/shm

# The value after "key: " in the last libFuzzer status line of a log.
last_field() {
	grep -E '^#[0-9]+' "$1" | tail -n 1 | sed -n "s/.* $2: \([0-9]*\).*/\1/p"
}

# Runs one target; writes its summary line to fuzz/out/<target>/result.
run_one() {
	local target=$1 out=fuzz/out/$1
	local bin=$build/fuzz_$target log=$out/log dict=fuzz/dict/$1.dict
	local tmp status execs edges features corpus result artifact

	mkdir -p "$out/corpus"
	rm -f "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* "$out/result"
	if [ -d "fuzz/corpus/$target" ]; then
		cp -p "fuzz/corpus/$target"/* "$out/corpus/" 2>/dev/null
	fi
	local options=(-max_total_time="$seconds" -timeout="$input_timeout" -rss_limit_mb=2048
		-artifact_prefix="$out/" -print_final_stats=1)
	[ -f "$dict" ] && options+=(-dict="$dict")
	tmp=$(mktemp -d "$scratch_base/buzon-fuzz-run-$target-XXXXXX")
	FUZZ_TMPDIR=$tmp "$bin" "$out/corpus" "${options[@]}" >"$log" 2>&1
	status=$?
	rm -rf "$tmp"

	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	[ -n "$execs" ] || execs=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed 's/^#\([0-9]*\).*/\1/')
	edges=$(last_field "$log" cov)
	features=$(last_field "$log" ft)
	corpus=$(ls "$out/corpus" | wc -l)
	artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
	if [ "$status" -eq 0 ] && [ -z "$artifact" ]; then
		result=ok
	else
		result="FAILED: $(grep -m1 -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|invariant failed' "$log" | sed 's/^==[0-9]*== *//')"
		result="$result; input ${artifact:-not saved}; log $log"
	fi
	printf 'fuzz %s: %s execs, %s edges (cov), %s ft, corpus %s, %s\n' "$target" \
		"${execs:-0}" "${edges:-0}" "${features:-0}" "$corpus" "$result" | tee "$out/result"
}

running=0
for target in $targets; do
	if [ ! -x "$build/fuzz_$target" ]; then
		echo "fuzz: $build/fuzz_$target is missing" >&2
		mkdir -p "fuzz/out/$target"
		echo "fuzz $target: FAILED: not built" | tee "fuzz/out/$target/result"
		continue
	fi
	run_one "$target" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
done
wait

passed=0
failed=0
for target in $targets; do
	if grep -q ', ok$' "fuzz/out/$target/result" 2>/dev/null; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
