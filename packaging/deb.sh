#!/usr/bin/env bash
# The .deb: target/debian/mailtoken_VERSION-1_ARCH.deb, made by cargo-deb from
# [package.metadata.deb] in Cargo.toml: /usr/bin/mailtoken and mailtoken-full (the release
# profile, linked against the system's glibc, which Depends then names), man pages,
# completions in the system's directories, the systemd user units in /usr/lib/systemd/user
# naming /usr/bin/mailtoken, and README, licence and contrib in /usr/share/doc/mailtoken.
#
#   bash packaging/deb.sh          (needs cargo-deb: cargo install cargo-deb --locked)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
command -v cargo-deb >/dev/null ||
  { echo "deb.sh: cargo-deb is needed (cargo install cargo-deb --locked)" >&2; exit 1; }
cargo build --release --locked --quiet --bins
bash packaging/extras.sh target/release/mailtoken /usr/bin/mailtoken target/packaging
# Built above, with the lock file; cargo-deb only packs (and strips) what is there.
cargo deb --no-build --quiet
ls target/debian/mailtoken_*.deb
