#!/usr/bin/env bash
# Whole-process timing of mailtoken against what it replaces, on this machine, in one run:
#
#   1. cached `mailtoken token NAME` vs `cat` of the token file vs mutt_oauth2.py (Debian's
#      mutt package) with a cached token, GPG-encrypted as the script ships it;
#   2. the refresh path (`--force-refresh`) against a local fake token server;
#   3. a storm: 64 `mailtoken token` callers started together at expiry (one refreshes).
#
# Prints median and spread (hyperfine), peak RSS (GNU time %M, max over runs), the stripped
# release binary's size, the ratios, and the targets: cached <= 2x cat, >= 30x faster than
# mutt_oauth2.py, peak RSS <= 6 MB, binary <= 8 MB. It reports; it does not fail on a miss.
#
#     bash tests/bench/compare.sh            RUNS=500 STORM_RUNS=10 to change the counts
#
# Not a test and not in CI. Needs cargo, hyperfine, GNU time, gpg, python3 and mutt's
# examples (apt-get install hyperfine time gnupg mutt; done here when missing and root).
set -euo pipefail

RUNS="${RUNS:-500}"
REFRESH_RUNS="${REFRESH_RUNS:-100}"
STORM_RUNS="${STORM_RUNS:-10}"
CALLERS=64

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
die() { echo "compare.sh: $*" >&2; exit 1; }

need() { # command package
    command -v "$1" >/dev/null && return
    [ "$(id -u)" -eq 0 ] || die "$1 missing: apt-get install $2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need hyperfine hyperfine
need gpg gnupg
[ -x /usr/bin/time ] || need /usr/bin/time time
script_src=""
for f in /usr/share/doc/mutt/examples/mutt_oauth2.py /usr/share/doc/mutt/examples/mutt_oauth2.py.gz; do
    [ -e "$f" ] && script_src="$f" && break
done
if [ -z "$script_src" ]; then
    need mutt mutt
    script_src=$(ls /usr/share/doc/mutt/examples/mutt_oauth2.py* | head -1)
fi
# The interpreter a Debian user has; a pyenv shim would add its own start-up to every run.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

echo "== building the release binary" >&2
(cd "$repo" && cargo build --release --quiet)
BIN="$repo/target/release/mailtoken"

work="$(mktemp -d /tmp/mailtoken-bench.XXXXXX)"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    GNUPGHOME="$work/gnupg" gpgconf --kill gpg-agent 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- a tiny rotating token server on 127.0.0.1 ----------------------------------------------
"$PYTHON" "$repo/tests/tools/token_server.py" --scope "mail offline_access" --port-file "$work/port" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")
[ -n "$port" ] || die "the fake token server did not start"

# --- mailtoken: one cached account, one for the refresh path and the storm ------------------
mkdir -m 700 "$work/data"
cat > "$work/config.toml" <<EOF
[accounts.bench]
provider = "generic"
client_id = "bench"
token_endpoint = "http://127.0.0.1:$port/token"
scopes = ["mail", "offline_access"]

[accounts.storm]
provider = "generic"
client_id = "bench"
token_endpoint = "http://127.0.0.1:$port/token"
scopes = ["mail", "offline_access"]
EOF
write_token() { # name expires_at
    printf '{"version":1,"access_token":"cached-at-%s","token_type":"Bearer","expires_at":%s,"refresh_token":"rt-%s","scope":"mail offline_access"}\n' \
        "$1" "$2" "$1" > "$work/data/$1.json"
    chmod 600 "$work/data/$1.json"
}
write_token bench 4102444800
write_token storm 4102444800
export MAILTOKEN_CONFIG="$work/config.toml" MAILTOKEN_DATA_DIR="$work/data"
[ "$("$BIN" token bench)" = "cached-at-bench" ] || die "mailtoken did not print the cached token"

# --- mutt_oauth2.py with a GPG-encrypted cached token ---------------------------------------
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"
gpg --batch --quiet --passphrase '' --quick-gen-key bench@mailtoken.invalid default default never 2>/dev/null
case "$script_src" in
    *.gz) gunzip -c "$script_src" > "$work/mutt_oauth2.py" ;;
    *) cp "$script_src" "$work/mutt_oauth2.py" ;;
esac
# The two pipes the script asks its user to set (see its header); nothing else changes.
sed -i \
    -e "s|^ENCRYPTION_PIPE = .*|ENCRYPTION_PIPE = ['gpg', '--batch', '--yes', '--encrypt', '--recipient', 'bench@mailtoken.invalid']|" \
    -e "s|^DECRYPTION_PIPE = .*|DECRYPTION_PIPE = ['gpg', '--batch', '--quiet', '--decrypt']|" \
    "$work/mutt_oauth2.py"
printf '{"registration": "microsoft", "authflow": "devicecode", "email": "bench@example.com", "access_token": "cached-at-mutt", "access_token_expiration": "2099-12-31T00:00:00", "refresh_token": "rt-mutt"}' |
    gpg --batch --yes --encrypt --recipient bench@mailtoken.invalid > "$work/mutt.token"
chmod 600 "$work/mutt.token"
MUTT=("$PYTHON" "$work/mutt_oauth2.py" "$work/mutt.token")
[ "$("${MUTT[@]}")" = "cached-at-mutt" ] || die "mutt_oauth2.py did not print the cached token"

# --- timing ---------------------------------------------------------------------------------
json="$work/json"
mkdir "$json"
echo "== cached path: $RUNS runs each" >&2
hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$json/cached.json" \
    -n "mailtoken token (cached)" "$BIN token bench" \
    -n "cat token file" "cat $work/data/bench.json" >/dev/null
hyperfine -N --warmup 3 --runs "$(( RUNS / 10 > 20 ? RUNS / 10 : 20 ))" --export-json "$json/mutt.json" \
    -n "mutt_oauth2.py (cached, gpg)" "${MUTT[*]}" >/dev/null
echo "== refresh path: $REFRESH_RUNS runs" >&2
hyperfine -N --warmup 3 --runs "$REFRESH_RUNS" --export-json "$json/refresh.json" \
    -n "mailtoken token --force-refresh" "$BIN token storm --force-refresh" >/dev/null

echo "== storm: $CALLERS callers at expiry, $STORM_RUNS runs" >&2
cat > "$work/storm.sh" <<EOF
#!/bin/sh
i=0
while [ \$i -lt $CALLERS ]; do "$BIN" token storm > "$work/out.\$i" & i=\$((i+1)); done
wait
EOF
chmod +x "$work/storm.sh"
hyperfine --warmup 1 --runs "$STORM_RUNS" --export-json "$json/storm.json" \
    --prepare "$PYTHON -c \"import json,sys; p='$work/data/storm.json'; t=json.load(open(p)); t['expires_at']=1; open(p+'.x','w').write(json.dumps(t)); import os; os.rename(p+'.x',p)\"" \
    -n "$CALLERS callers at expiry" "$work/storm.sh" >/dev/null
distinct=$(cat "$work"/out.* | sort -u | wc -l)

# --- memory and size ------------------------------------------------------------------------
peak_rss() { # runs the command 20 times, prints the largest %M (KiB)
    local max=0 m
    for _ in $(seq 20); do
        /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>&1
        m=$(tail -1 "$work/rss")
        [ "$m" -gt "$max" ] && max=$m
    done
    echo "$max"
}
rss_cached=$(peak_rss "$BIN" token bench)
rss_cat=$(peak_rss cat "$work/data/bench.json")
rss_mutt=$(peak_rss "${MUTT[@]}")
rss_refresh=$(peak_rss "$BIN" token storm --force-refresh)
size=$(stat -c %s "$BIN")

# --- report ---------------------------------------------------------------------------------
"$PYTHON" - "$json" "$rss_cached" "$rss_cat" "$rss_mutt" "$rss_refresh" "$size" "$distinct" <<'PY'
import json, os, statistics, sys
d, rss_cached, rss_cat, rss_mutt, rss_refresh, size, distinct = sys.argv[1:]
rows = {}
for f in ("cached", "mutt", "refresh", "storm"):
    for r in json.load(open(os.path.join(d, f + ".json")))["results"]:
        t = r["times"]
        q = statistics.quantiles(t, n=20)
        rows[r["command"]] = (statistics.median(t), q[0], q[-1], r["stddev"] or 0, len(t))
print(f"{'command':34} {'median':>10} {'p5':>10} {'p95':>10} {'stddev':>10} {'runs':>5}")
for name, (med, p5, p95, sd, n) in rows.items():
    ms = lambda x: f"{x * 1000:.3f} ms"
    print(f"{name:34} {ms(med):>10} {ms(p5):>10} {ms(p95):>10} {ms(sd):>10} {n:>5}")
cached = rows["mailtoken token (cached)"][0]
cat = rows["cat token file"][0]
mutt = rows["mutt_oauth2.py (cached, gpg)"][0]
print()
print(f"peak RSS (max of 20 runs): mailtoken cached {int(rss_cached)/1024:.1f} MB, refresh {int(rss_refresh)/1024:.1f} MB, "
      f"cat {int(rss_cat)/1024:.1f} MB, mutt_oauth2.py {int(rss_mutt)/1024:.1f} MB")
print(f"stripped release binary: {int(size)/1e6:.2f} MB ({int(size)} bytes)")
print(f"storm: distinct tokens printed in the last run: {distinct} (1 expected)")
print()
def verdict(ok): return "met" if ok else "MISSED"
print(f"cached / cat          = {cached / cat:6.2f}x   target <= 2x   {verdict(cached <= 2 * cat)}")
print(f"mutt_oauth2 / cached  = {mutt / cached:6.1f}x   target >= 30x  {verdict(mutt >= 30 * cached)}")
print(f"peak RSS cached       = {int(rss_cached)/1024:6.2f} MB  target <= 6 MB {verdict(int(rss_cached) <= 6 * 1024)}")
print(f"binary size           = {int(size)/1e6:6.2f} MB  target <= 8 MB {verdict(int(size) <= 8e6)}")
PY
