#!/usr/bin/env bash
# Runs the OS-keyring store test against a real Secret Service: GNOME Keyring on a private
# D-Bus session, unlocked with a throwaway password, in a throwaway HOME. Installs what it
# needs from Debian when missing (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dbus-run-session >/dev/null || need+=(dbus-daemon dbus-bin)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
command -v secret-tool >/dev/null || need+=(libsecret-tools)
if ((${#need[@]})); then
    echo "keyring.sh: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The throwaway HOME below must not hide the toolchain.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
# Build first, outside the bus session, so its time does not count against the timeout.
cargo test --locked --test integration --no-run >/dev/null 2>&1

HOME=$home XDG_DATA_HOME=$home/.local/share timeout 300 dbus-run-session -- bash -c '
    echo -n throwaway | gnome-keyring-daemon --unlock --components=secrets >/dev/null
    cargo test --locked --test integration -- --ignored stores::keyring_store
' 2> >(grep -v "Failed to set fd limit" >&2)
