#!/usr/bin/env bash
# Runs the whole test suite: every Bazel test but the timed scenarios, then
# those alone, everything but the scenarios again under ASan+UBSan, the
# concurrency tests under TSan, and a bounded libFuzzer run of every fuzz
# target (tests/fuzz). Installs what it needs first.
# Ends with one line "N passed, M failed" and exits non-zero on any failure.
#
#   tools/test.sh                 # everything
#   SKIP_ASAN=1 SKIP_TSAN=1 tools/test.sh   # skip the sanitizer passes
#   SKIP_SCENARIOS=1 tools/test.sh          # skip the timed scenario pass
#   FUZZ_SECONDS=10 tools/test.sh # shorter fuzz runs (default 30 s per target)
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failures=()
failed_logs=()
log_dir=$(mktemp -d)

# Runs bazel test with the given flags and counts targets by their status.
run_bazel_suite() {
  local label=$1
  shift
  local log="$log_dir/$label.log"
  echo "== bazel test $* //..." >&2
  bazel test --keep_going "$@" //... 2>&1 | tee "$log" | grep -E "^(//|INFO: Build|ERROR|FAIL)" >&2
  local p f
  p=$(grep -cE "^//[^ ]+ +(\(cached\) )?PASSED" "$log")
  f=$(grep -cE "^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)" "$log")
  if ((p + f == 0)); then
    # Nothing ran: the build itself failed.
    f=1
    failures+=("$label: build failed (see $log)")
  fi
  # A failed test's own log says why; CI keeps only this script's output,
  # so the end of each is printed again at the end (see below).
  # Copied now: a later pass (same output directory) overwrites it.
  local test_log kept
  while read -r test_log; do
    kept="$log_dir/$label.$(echo "$test_log" | tr '/' '_' | tail -c 120)"
    cp "$test_log" "$kept" 2>/dev/null || kept="$test_log"
    failed_logs+=("$label|$kept")
  done < <(sed -nE 's/^FAIL: .* \(see (.*)\)$/\1/p' "$log")
  while read -r line; do failures+=("$label: $line"); done < <(
    grep -E "^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)" "$log" | awk '{print $1}')
  passed=$((passed + p))
  failed=$((failed + f))
}

# In CI every test runs for real; locally Bazel may reuse earlier results.
if [[ -n "${CI:-}" ]]; then
  cache_flag=(--nocache_test_results)
else
  cache_flag=()
fi

# Tests tagged "scenario" assert success rates or latencies of a whole
# scenario (chaos, tail, slow instance, load shedding, reload, discovery
# churn, TLS rotation, the full stack over gRPC against grpcio servers,
# demo). On a
# shared two-core machine they are only honest alone and unsanitized: they
# run once, in their own pass, one at a time ("exclusive"). The parallel
# and sanitized passes run everything else. Tests tagged "nosan" load
# libmeshlib.so into programs that are not sanitized (Python, a C program
# compiled outside Bazel, abidiff): the sanitizer passes skip them.
run_bazel_suite default --test_tag_filters=-scenario "${cache_flag[@]+"${cache_flag[@]}"}"
if [[ -z "${SKIP_SCENARIOS:-}" ]]; then
  run_bazel_suite scenario --test_tag_filters=scenario --local_test_jobs=1 \
    "${cache_flag[@]+"${cache_flag[@]}"}"
fi
if [[ -z "${SKIP_ASAN:-}" ]]; then
  run_bazel_suite asan --config=asan --test_tag_filters=-scenario,-nosan \
    "${cache_flag[@]+"${cache_flag[@]}"}"
fi
if [[ -z "${SKIP_TSAN:-}" ]]; then
  run_bazel_suite tsan --config=tsan --test_tag_filters=concurrency,-scenario,-nosan \
    "${cache_flag[@]+"${cache_flag[@]}"}"
fi

if [[ -z "${SKIP_FUZZ:-}" ]]; then
  echo "== fuzz: every target in tests/fuzz, ${FUZZ_SECONDS:-30}s each" >&2
  if FUZZ_SECONDS="${FUZZ_SECONDS:-30}" bash tests/fuzz/run_fuzzers.sh >"$log_dir/fuzz.log" 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("fuzz: $(grep -o '^!! [a-z_]*' "$log_dir/fuzz.log" | head -3 | tr '\n' ' ')(see $log_dir/fuzz.log)")
    tail -30 "$log_dir/fuzz.log" >&2
  fi
fi

for entry in "${failed_logs[@]+"${failed_logs[@]}"}"; do
  echo "---- ${entry%%|*}: the end of ${entry#*|}" >&2
  tail -40 "${entry#*|}" >&2
done
for f in "${failures[@]+"${failures[@]}"}"; do echo "FAILED: $f" >&2; done
echo "$passed passed, $failed failed"
((failed == 0))
