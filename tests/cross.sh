#!/usr/bin/env bash
# mailtoken's code for the other systems it runs on, compiled and linted from this Linux
# machine: macOS (x86_64 and arm64) and FreeBSD (x86_64). `cargo clippy --all-targets -D
# warnings` for each, both feature sets, so that the platform code in src/sys (and every cfg)
# is checked, not only Linux's. Nothing is linked or run: there is no Mac or BSD here (the
# README says what is tested where).
#
# ring, the crypto library, compiles C files for the target; Debian's clang does it with
# --target given no system headers but three one-line stubs (its C needs only memcpy and
# friends, assert and Apple's TargetConditionals.h). The Rust standard library of each target
# comes from `rustup target add`. Either missing fails this script: it never passes without
# having checked.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd)

fail() { echo "cross.sh: $*" >&2; exit 1; }

installed="$(rustup target list --installed)" || fail "rustup is needed to add the targets"
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" && continue
  timeout 600 rustup target add "$t" ||
    fail "cannot install the Rust target $t (rustup target add $t): nothing was checked for it"
done
if ! command -v clang >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q clang >/dev/null ||
      fail "cannot install clang (apt-get install clang), which compiles ring's C for the targets"
  else
    fail "clang is needed to compile ring's C for the targets (apt-get install clang)"
  fi
fi

stubs="$(mktemp -d /tmp/mailtoken-cross.XXXXXX)"
trap 'rm -rf "$stubs"' EXIT
echo '#pragma once' >"$stubs/TargetConditionals.h"
printf '#pragma once\n#define assert(x) ((void)0)\n' >"$stubs/assert.h"
cat >"$stubs/string.h" <<'H'
#pragma once
#include <stddef.h>
void *memcpy(void *, const void *, size_t);
void *memset(void *, int, size_t);
void *memmove(void *, const void *, size_t);
int memcmp(const void *, const void *, size_t);
H

# A target directory of its own: another target's build does not disturb the Linux one.
export CARGO_TARGET_DIR="${CROSS_TARGET_DIR:-target/cross}"
for t in "${targets[@]}"; do
  var="${t//-/_}"
  export "CC_$var=clang" "CFLAGS_$var=-ffreestanding -nostdlibinc -I$stubs"
  for features in "" "--no-default-features"; do
    echo "== cargo clippy --target $t $features" >&2
    cargo clippy --locked --target "$t" --all-targets $features -- -D warnings
  done
done
echo "cross.sh: ${targets[*]}: compiled and linted, both feature sets" >&2
