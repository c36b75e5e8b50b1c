#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints, then all unit and integration tests.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo clippy --no-default-features (a build without the OS keyring, for packagers)"
cargo clippy --all-targets --locked --no-default-features -- -D warnings

step "cargo test"
cargo test --all-targets --locked

step "OS keyring store against a real Secret Service (GNOME Keyring)"
bash tests/keyring.sh

step "end-to-end: real OAuth2 server, Dovecot and mail clients"
bash tests/e2e/run.sh
