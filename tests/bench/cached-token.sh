#!/usr/bin/env bash
# Benchmark of the cached path: `mailtoken token NAME` when the stored access
# token still has more than refresh_margin seconds of life, so no network
# request is made. It is compared with `cat` of the token file, the least a
# credential helper could possibly do.
#
# Not a test, and not run by tests/all.sh or CI. Run it from anywhere:
#
#     bash tests/bench/cached-token.sh
#
# Environment knobs (all optional):
#     RUNS=1000       timed runs per command
#     WARMUP=50       untimed warm-up runs per command
#     BENCH_JSON=...  where hyperfine's JSON goes
#                     (default: target/bench/cached-token.json)
#
# Needs: cargo, python3, hyperfine and GNU time (the last two are installed
# with apt-get when missing; that needs root).
# Exits non-zero if any step fails, including when `mailtoken token` does not
# print exactly the stored access token.

set -euo pipefail

RUNS="${RUNS:-1000}"
WARMUP="${WARMUP:-50}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
BENCH_JSON="${BENCH_JSON:-$repo/target/bench/cached-token.json}"

die() { echo "cached-token.sh: $*" >&2; exit 1; }

apt_install() {
    # $1 = package name. Runs apt-get update once per script run.
    if [ "$(id -u)" -ne 0 ]; then
        die "$1 is missing and installing it needs root (apt-get install $1)"
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

command -v python3 >/dev/null || die "python3 is required"

# --- tools ------------------------------------------------------------------
if ! command -v hyperfine >/dev/null; then
    echo "== installing hyperfine" >&2
    apt_install hyperfine
fi
command -v hyperfine >/dev/null || die "hyperfine still missing after install"

TIME_BIN=/usr/bin/time
if ! "$TIME_BIN" -f %M true >/dev/null 2>&1; then
    echo "== installing GNU time" >&2
    apt_install time
fi
"$TIME_BIN" -f %M true >/dev/null 2>&1 || die "GNU time ($TIME_BIN) still unusable"

# --- build ------------------------------------------------------------------
echo "== cargo build --release" >&2
cargo build --release
BIN="$repo/target/release/mailtoken"
[ -x "$BIN" ] || die "no binary at $BIN"

# --- fixture: config + token store ------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/mailtoken-bench.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
umask 077

cfg="$tmp/config.toml"
data="$tmp/data"
mkdir -m 0700 "$data"

# Endpoints point at the discard port on loopback. The cached path must never
# contact them; if it did, the call would fail (connection refused) and the
# check below would catch it.
cat >"$cfg" <<'TOML'
refresh_margin = 300

[accounts.work]
provider = "generic"
user = "alice@example.com"
client_id = "mailtoken-bench"
device_authorization_endpoint = "http://127.0.0.1:9/device"
token_endpoint = "http://127.0.0.1:9/token"
scopes = ["mail", "offline_access"]
TOML
chmod 0600 "$cfg"

token_file="$data/work.json"
# A token of realistic length (Microsoft access tokens are 1-3 KB).
python3 - "$token_file" <<'PY'
import json, os, secrets, sys, time
path = sys.argv[1]
store = {
    "version": 1,
    "access_token": "bench." + secrets.token_urlsafe(1500),
    "token_type": "Bearer",
    "expires_at": int(time.time()) + 3600,
    "refresh_token": "bench-refresh." + secrets.token_urlsafe(48),
    "scope": "mail offline_access",
}
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(store, f)
PY
chmod 0600 "$token_file"
expected="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["access_token"])' "$token_file")"
before_sum="$(sha256sum "$token_file")"

# Keep the user's real config and store out of reach, whatever the binary does
# with the environment.
export XDG_CONFIG_HOME="$tmp/xdg-config" XDG_DATA_HOME="$tmp/xdg-data"
unset MAILTOKEN_CONFIG MAILTOKEN_DATA_DIR

# --- correctness check of the cached path -----------------------------------
echo "== checking that the cached call prints the stored token" >&2
set +e
"$BIN" --config "$cfg" --data-dir "$data" token work >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "--- stderr:" >&2; cat "$tmp/err" >&2
    die "\`mailtoken token work\` exited $rc (expected 0)"
fi
printf '%s\n' "$expected" | cmp -s - "$tmp/out" \
    || die "\`mailtoken token work\` did not print exactly the stored access token and one newline"
[ "$(sha256sum "$token_file")" = "$before_sum" ] \
    || die "the token file changed on the cached path"

# --- timing -----------------------------------------------------------------
mkdir -p "$(dirname "$BENCH_JSON")"
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
echo "== hyperfine: $WARMUP warm-up + $RUNS timed runs per command" >&2
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    --export-json "$BENCH_JSON" \
    -n cat "cat '$token_file'" \
    -n mailtoken "'$BIN' --config '$cfg' --data-dir '$data' token work"

# The benchmark must not have refreshed or rewritten anything either.
[ "$(sha256sum "$token_file")" = "$before_sum" ] \
    || die "the token file changed during the benchmark"

# --- size and memory --------------------------------------------------------
size_bytes="$(stat -c %s "$BIN")"
stripped_bytes="$size_bytes"
if command -v strip >/dev/null; then
    # The release profile already strips; this only confirms it.
    cp "$BIN" "$tmp/mailtoken.stripped"
    if strip "$tmp/mailtoken.stripped" 2>/dev/null; then
        stripped_bytes="$(stat -c %s "$tmp/mailtoken.stripped")"
    else
        echo "cached-token.sh: warning: strip failed; reporting the size as built" >&2
    fi
fi

"$TIME_BIN" -f %M -o "$tmp/rss-mailtoken" \
    "$BIN" --config "$cfg" --data-dir "$data" token work >/dev/null
"$TIME_BIN" -f %M -o "$tmp/rss-cat" cat "$token_file" >/dev/null
rss_mailtoken="$(tail -n 1 "$tmp/rss-mailtoken")"
rss_cat="$(tail -n 1 "$tmp/rss-cat")"

# --- report -----------------------------------------------------------------
python3 - "$BENCH_JSON" "$size_bytes" "$stripped_bytes" "$rss_mailtoken" "$rss_cat" <<'PY'
import json, sys
path, size, stripped, rss_mt, rss_cat = sys.argv[1:6]
res = {r["command"]: r for r in json.load(open(path))["results"]}
for name in ("cat", "mailtoken"):
    if name not in res:
        sys.exit(f"cached-token.sh: no result named {name!r} in {path}")

def us(s):
    return f"{s * 1e6:8.1f} µs"

print()
print(f"{'command':<10} {'median':>11} {'mean':>11} {'stddev':>11} {'min':>11} {'runs':>6}")
for name in ("cat", "mailtoken"):
    r = res[name]
    print(f"{name:<10} {us(r['median']):>11} {us(r['mean']):>11} {us(r['stddev']):>11} "
          f"{us(r['min']):>11} {len(r['times']):>6}")
ratio = res["mailtoken"]["median"] / res["cat"]["median"]
print()
print(f"median(mailtoken) / median(cat) = {ratio:.2f}")
print(f"release binary: {int(size)} bytes ({int(size) / 1024 / 1024:.2f} MiB); "
      f"after strip: {int(stripped)} bytes ({int(stripped) / 1024 / 1024:.2f} MiB)")
print(f"peak RSS of one cached call: mailtoken {rss_mt} KiB, cat {rss_cat} KiB")
print(f"hyperfine JSON: {path}")
PY

echo
echo "machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//') ($(nproc) CPUs)"
echo "tools: $(hyperfine --version); $(rustc --version)"
echo "load average before timing: $load_before (other work on the machine skews the figures)"
