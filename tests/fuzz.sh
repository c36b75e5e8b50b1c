#!/usr/bin/env bash
# Fuzz mailtoken's parsers with cargo-fuzz (libFuzzer) for a bounded time per target:
#
#     bash tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, all targets)
#
# Targets (tests/fuzz/fuzz_targets, invariants in tests/fuzz/invariants.rs): config, token_file,
# oauth_reply, discovery, callback, mail_reply, proxy_input. tests/all.sh (the test command,
# and so CI) runs `bash tests/fuzz.sh 60`: one build of all targets, then 60 s per target.
# Measured on the 2-core machine from a cold tests/fuzz/target, in a clean clone, with another
# `cargo test` sharing the machine (1-minute load 2.5 while building, 1.3 while fuzzing):
# build 280 s, fuzzing 432 s, 712 s (12 minutes) in all, plus 31 s to install cargo-fuzz.
# Executions in 60 s: config 0.64 M, token_file 2.30 M, oauth_reply 1.19 M, discovery 2.04 M,
# callback 1.67 M, mail_reply 0.85 M, proxy_input 1.38 M; 10.1 M in all.
# tests/integration/parsers.rs also runs the same invariants over generated inputs in
# `cargo test`.
#
# It exits non-zero, naming the target, when the build fails or overruns its time limit, when
# `cargo fuzz` exits non-zero for any reason (a crash, a leak, a slow input, a bad target
# name; after a clean -max_total_time libFuzzer exits 0), when it overruns SECONDS plus
# FUZZ_RUN_SLACK, when a new crash-/leak-/timeout-/oom- file appears in
# tests/fuzz/artifacts/TARGET/, or when libFuzzer's final stats (stat::number_of_executed_units)
# are missing or show nothing run beyond replaying the corpus it started from. It prints one
# line per target with the executions and executions per second, and the total at the end.
#
# A crash leaves its input in tests/fuzz/artifacts/TARGET/: add it to tests/fuzz/seeds/TARGET/
# so tests/integration/parsers.rs replays it, then fix the bug. The full log of a target is
# tests/fuzz/corpus/TARGET.log; corpus/TARGET collects what the fuzzer finds (seeds/ is only
# read), and later runs start from it.
#
# Needs cargo-fuzz 0.13 (tests/all.sh installs it). It is run with `--fuzz-dir .` from
# tests/fuzz because cargo-fuzz otherwise looks for fuzz/Cargo.toml under the crate root.
# libFuzzer wants nightly flags; on the stable toolchain RUSTC_BOOTSTRAP=1 allows them.
#
# Knobs (environment):
#   FUZZ_BUILD_TIMEOUT  seconds the build of all targets may take (default 1800)
#   FUZZ_RUN_SLACK      seconds a target may run past SECONDS before it is killed and counted
#                       as a failure (default 300: room for a rebuild when the source changed
#                       since the build step, loading the corpus, and one input's -timeout)
#   FUZZ_ARGS           extra libFuzzer flags, after the defaults so they win. For example
#                       FUZZ_ARGS=-runs=0 only replays the corpus and fuzzes nothing, which
#                       the script reports as a failure.
set -euo pipefail
cd "$(dirname "$0")/fuzz"

all_targets=(config token_file oauth_reply discovery callback mail_reply proxy_input)
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
build_timeout="${FUZZ_BUILD_TIMEOUT:-1800}"
run_slack="${FUZZ_RUN_SLACK:-300}"
read -r -a extra_args <<<"${FUZZ_ARGS:-}"

die() { echo "fuzz.sh: $*" >&2; exit 1; }
for n in "$seconds" "$build_timeout" "$run_slack"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || die "not a positive number of seconds: '$n'"
done
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: install cargo-fuzz first (tests/all.sh does)" >&2; exit 2; }
command -v timeout >/dev/null || die "needs timeout(1) (coreutils)"

export RUSTC_BOOTSTRAP=1

# Build every target first, so the build's time neither counts against a target's time limit
# nor hides in it. `cargo fuzz run` below then only checks that the build is up to date.
echo "==> cargo fuzz build (all targets, at most ${build_timeout}s)" >&2
build_start=$SECONDS
rc=0
timeout -k 30 "$build_timeout" cargo fuzz build --fuzz-dir . || rc=$?
[ "$rc" -eq 0 ] || die "cargo fuzz build failed (exit $rc$([ "$rc" -ne 124 ] || echo ", timed out after ${build_timeout}s"))"
echo "fuzz.sh: built in $((SECONDS - build_start)) s" >&2

total_execs=0
fuzz_start=$SECONDS
for target in "${targets[@]}"; do
    echo "==> $target for ${seconds}s" >&2
    mkdir -p "corpus/$target" "artifacts/$target"
    log="corpus/$target.log"
    stamp=$(mktemp)
    # Only artifacts newer than this stamp are this run's.
    touch "$stamp"
    # corpus/ collects what the fuzzer finds; seeds/ is read only.
    set +e
    timeout -k 30 "$((seconds + run_slack))" \
        cargo fuzz run --fuzz-dir . "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${extra_args[@]}" 2>&1 |
        tee "$log" |
        grep -E '^(#[0-9]+.*(INITED|DONE)|thread .* panicked|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Test unit written|Failing input|Base64:|Error:|error)'
    rc=${PIPESTATUS[0]}
    set -e

    new_artifacts=$(find "artifacts/$target" -type f -newer "$stamp" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
    rm -f "$stamp"
    # The last value wins: libFuzzer prints its final stats once, at the end.
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    per_sec=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    new_units=$(sed -n 's/^stat::new_units_added: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    # "#N INITED": the N inputs run while loading corpus/ and seeds/, before any fuzzing.
    inited=$(sed -n 's/^#\([0-9][0-9]*\)[[:space:]][[:space:]]*INITED.*/\1/p' "$log" | tail -n 1)
    # "Done N runs in S second(s)": how long libFuzzer really ran.
    ran_for=$(sed -n 's/^Done [0-9][0-9]* runs in \([0-9][0-9]*\) second.*/\1/p' "$log" | tail -n 1)

    if [ -n "$new_artifacts" ]; then
        die "$target: found a failing input (exit $rc): $(echo "$new_artifacts" | sed 's|^|tests/fuzz/|' | tr '\n' ' ')
see tests/fuzz/$log; add the input to tests/fuzz/seeds/$target/ and fix the bug"
    fi
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        die "$target: still running ${run_slack}s after its ${seconds}s (exit $rc); see tests/fuzz/$log"
    fi
    if [ "$rc" -ne 0 ]; then
        die "$target: cargo fuzz failed (exit $rc); see tests/fuzz/$log"
    fi
    if grep -qE '^SUMMARY: |^==[0-9]+== ?ERROR' "$log"; then
        die "$target: a sanitizer reported an error though cargo fuzz exited 0; see tests/fuzz/$log"
    fi
    if [ -z "$execs" ]; then
        die "$target: libFuzzer printed no final stats (stat::number_of_executed_units), so nothing is known to have run; see tests/fuzz/$log"
    fi
    if [ "$execs" -eq 0 ]; then
        die "$target: libFuzzer executed no input; see tests/fuzz/$log"
    fi
    if [ -z "$inited" ] || [ "$execs" -le "$inited" ]; then
        die "$target: libFuzzer only replayed the ${inited:-?} inputs of its corpus and fuzzed nothing ($execs executed in all); see tests/fuzz/$log"
    fi
    printf 'fuzz.sh: %-12s %9s executions in %s s, %s/s (%s of them replaying the corpus), %s new corpus units, no crash\n' \
        "$target" "$execs" "${ran_for:-$seconds}" "${per_sec:-?}" "$inited" "${new_units:-?}" >&2
    total_execs=$((total_execs + execs))
done
printf 'fuzz.sh: total %s executions in %d target%s, %s s of fuzzing (%s s wall), no crash\n' \
    "$total_execs" "${#targets[@]}" "$([ ${#targets[@]} -eq 1 ] || echo s)" "$((seconds * ${#targets[@]}))" "$((SECONDS - fuzz_start))" >&2
