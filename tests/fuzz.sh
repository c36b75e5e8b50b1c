#!/usr/bin/env bash
# Fuzz mailtoken's parsers with cargo-fuzz (libFuzzer) for a bounded time per target:
#
#     bash tests/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, all targets)
#
# Targets (tests/fuzz/fuzz_targets, invariants in tests/fuzz/invariants.rs): config, token_file,
# oauth_reply, discovery, callback, mail_reply, proxy_input. Not part of CI; tests/integration/parsers.rs runs the same invariants
# over generated inputs in `cargo test`. A crash leaves its input in tests/fuzz/artifacts/TARGET/:
# add it to tests/fuzz/seeds/TARGET/ so tests/integration/parsers.rs replays it, then fix the bug.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer wants nightly flags; on stable,
# RUSTC_BOOTSTRAP=1 allows them. Exits non-zero on the first crash.
set -euo pipefail
cd "$(dirname "$0")/fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config token_file oauth_reply discovery callback mail_reply proxy_input)
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: install cargo-fuzz first" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
    echo "==> $target for ${seconds}s" >&2
    mkdir -p "corpus/$target"
    # corpus/ collects what the fuzzer finds; seeds/ is read only.
    cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | tee "corpus/$target.log" | grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|==[0-9]+==|SUMMARY|Test unit written)' || true
    if grep -qE 'SUMMARY|Test unit written|panicked' "corpus/$target.log"; then
        echo "fuzz.sh: $target crashed; see tests/fuzz/corpus/$target.log and tests/fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
