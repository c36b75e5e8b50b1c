#!/usr/bin/env bash
# Every check CI runs, in order: formatting, lints, all unit and integration tests (and again
# the ones the portable system code touches, with it forced), the lints for macOS and FreeBSD,
# the keyring and end-to-end suites, the packages, then fuzzing.
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

step "the portable system code (what macOS and FreeBSD run) on Linux: the tests it touches"
# src/sys's portable ways (a thread for the lock's deadline, written bytes for reserved room,
# no peer check in the proxy) forced with --cfg mailtoken_portable, in a target directory of
# their own: the lock and storm tests, the full disk, the waits, and the proxy asking everyone
# for the password.
RUSTFLAGS="--cfg mailtoken_portable" CARGO_TARGET_DIR=target/portable \
  cargo clippy --all-targets --locked -- -D warnings
RUSTFLAGS="--cfg mailtoken_portable" CARGO_TARGET_DIR=target/portable \
  cargo test --locked --lib
RUSTFLAGS="--cfg mailtoken_portable" CARGO_TARGET_DIR=target/portable \
  cargo test --locked --test integration -- quick:: survival:: crash:: refresh:: relogin:: local_input:: \
  proxy_users::where_connections_have_no_known_user

step "macOS (x86_64, arm64) and FreeBSD: compiled and linted (clippy -D warnings)"
bash tests/cross.sh

step "OS keyring store against a real Secret Service (GNOME Keyring)"
bash tests/keyring.sh

step "end-to-end: real OAuth2 server, Dovecot and mail clients"
bash tests/e2e/run.sh

step "packages: release tarball, crate, .deb, Arch, Homebrew and Nix recipes, oldest Rust"
bash tests/packaging.sh

step "fuzz every parser target for 60 s (cargo-fuzz; about 12 minutes with the build)"
# Pinned: cargo-fuzz 0.13.2 is the release tests/fuzz.sh was written and checked against (its
# --fuzz-dir flag, its exit status after a clean -max_total_time, its artifact paths), and it
# installs with this machine's Rust 1.95 in about 30 s. --locked builds it with the
# dependency versions it was released with, so a newer dependency that wants a newer Rust
# cannot break the install. Installed when missing or not 0.13.x.
case "$(cargo fuzz --version 2>/dev/null)" in
cargo-fuzz\ 0.13.*) ;;
*) timeout 900 cargo install cargo-fuzz --version 0.13.2 --locked ;;
esac
bash tests/fuzz.sh 60
