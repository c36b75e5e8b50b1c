#!/usr/bin/env bash
# The hot path at its limit: the cached `mailtoken token NAME` against `LC_ALL=C cat` of the
# token file (the least any helper can do), side by side, interleaved, in one run:
#   1. cached call, raw and xoauth2, vs cat: median wall time of each process (spawn to exit);
#   2. the same with 500 accounts in the config vs 1;
#   3. peak RSS of a cached call (GNU time's %M);
#   4. a refresh (`--force-refresh`) against a token server on 127.0.0.1 vs the same request
#      made by curl;
#   5. a storm: 64 callers at expiry while the server takes 300 ms; how long after the first
#      caller printed the new token the other 63 print theirs; beside it, the floor of the
#      machine, timed the same way: 63 minimal C programs that wait as mailtoken does (a
#      shared lock on the lock file), then read the token file and print it.
# Every process is started with posix_spawn from one Python loop and reaped with wait4; all
# run with LC_ALL=C. Not a test and not in CI:
#
#     bash tests/bench/fast-path.sh            PAIRS=300 ROUNDS=10 to change the counts
#
# OTHER_BIN=PATH adds the cached calls of another build of mailtoken (a statically linked
# one, or the build before a change) to the same interleaved runs, with data directories of
# its own.
#
# Needs cargo, python3, curl, GNU time (/usr/bin/time) and cc (for the storm's floor).
set -euo pipefail
PAIRS=${PAIRS:-300} ROUNDS=${ROUNDS:-10}
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
command -v curl >/dev/null && command -v cc >/dev/null && [[ -x /usr/bin/time ]] ||
  { echo "fast-path.sh: curl, cc and GNU time are needed (apt-get install curl gcc time)" >&2; exit 1; }
echo "== building the release binary (the default release profile)" >&2
(cd "$repo" && cargo build --release --locked --quiet --bins)
work="$(mktemp -d /tmp/mailtoken-fast.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export LC_ALL=C
# The storm's yardstick: a waiter that does nothing but wait for the lock, read the file and
# print it.
cat >"$work/waiter.c" <<'C'
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char buf[4096];
    int lock = argc < 3 ? -1 : open(argv[1], O_RDONLY);
    if (lock < 0 || flock(lock, LOCK_SH) < 0) return 1;
    int fd = open(argv[2], O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
    return n > 0 && write(1, buf, n) == n ? 0 : 1;
}
C
cc -O2 -o "$work/waiter" "$work/waiter.c"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg), $(uname -sr), $(ldd --version | head -1 | sed 's/.* //') glibc; LC_ALL=C; $(date -u +%F)"
echo "binary: $(stat -c %s "$repo/target/release/mailtoken") bytes; $(file -b "$repo/target/release/mailtoken" | cut -d, -f1-2,4)"
PYTHONPATH="$repo/tests/tools" python3 - "$repo/target/release/mailtoken" "$work" "$PAIRS" "$ROUNDS" "${OTHER_BIN:-}" <<'PY'
import contextlib, fcntl, json, os, select, statistics, subprocess, sys, time
from token_server import TokenServer

binary, work, pairs, rounds, other = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
# The refresh's server answers at once; the storm's takes 300 ms (server.delay).
server = TokenServer(one_write=True).start()
url = server.url

def account(name):
    return (f'[accounts.{name}]\nprovider = "generic"\nuser = "{name}@example.com"\n'
            f'client_id = "bench"\ntoken_endpoint = "{url}"\nscopes = ["mail", "offline_access"]\n'
            'imap_host = "imap.example.com"\nsmtp_host = "smtp.example.com"\n\n')

# One data directory per config, as a user has: the snapshot of `work` belongs to one config.
configs, data = {}, {}
for n in (1, 500):
    configs[n] = os.path.join(work, f"config-{n}.toml")
    data[n] = os.path.join(work, f"data-{n}")
    os.mkdir(data[n], 0o700)
with open(configs[1], "w") as f:
    f.write(account("work"))
with open(configs[500], "w") as f:
    f.write("".join(account(f"acct{i:03}") for i in range(250)) + account("work")
            + "".join(account(f"acct{i:03}") for i in range(250, 499)))

def write_tokens(n, expires_at):
    path = os.path.join(data[n], "work.json")
    with open(path, "w") as f:
        json.dump({"version": 1, "access_token": "bench-at-0", "token_type": "Bearer",
                   "expires_at": expires_at, "refresh_token": "bench-rt-0"}, f)
    os.chmod(path, 0o600)
    return path

token_file = write_tokens(1, 4102444800)
write_tokens(500, 4102444800)
env = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "HOME": work}
def mailtoken(n, *args, build=None):
    data_dir = other_data[n] if build else data[n]
    return [build or binary, "--config", configs[n], "--data-dir", data_dir, "token", "work", *args]

# The other build keeps data directories of its own: its config snapshot may be of another
# format version, which would make each build throw the other's away.
other_data = {}
if other:
    for n in configs:
        other_data[n] = os.path.join(work, f"data-other-{n}")
        os.mkdir(other_data[n], 0o700)
        for name in ("work.json",):
            with open(os.path.join(data[n], name), "rb") as f, \
                 open(os.path.join(other_data[n], name), "wb") as g:
                g.write(f.read())
            os.chmod(os.path.join(other_data[n], name), 0o600)

def spawn(argv, out=None):
    fa = [(os.POSIX_SPAWN_OPEN, 1, out or os.devnull, os.O_WRONLY, 0)]
    return os.posix_spawn(argv[0], argv, env, file_actions=fa)

def timed(argv):
    """Wall time from spawn to reaping, in µs."""
    t = time.perf_counter_ns()
    pid = spawn(argv)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, argv
    return (time.perf_counter_ns() - t) / 1000

def peak_rss_kib(argv, runs=20):
    """GNU time's %M (the process's own peak; a child of this Python would inherit its size)."""
    out = [subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=env, capture_output=True,
                          text=True).stderr.split()[-1] for _ in range(runs)]
    return max(int(kib) for kib in out)

# The config snapshots: made by a first call once each config is 2 s old.
time.sleep(2.1)
for n in configs:
    for build, data_dir in [(None, data[n])] + ([(other, other_data[n])] if other else []):
        out = subprocess.run(mailtoken(n, build=build), env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "bench-at-0", out
        assert os.path.exists(os.path.join(data_dir, "work.config")), "no snapshot"

cat = ["/bin/cat", token_file]
cases = {
    "cat token file": cat,
    "token (1 account)": mailtoken(1),
    "token -f xoauth2": mailtoken(1, "-f", "xoauth2"),
    "token (500 accounts)": mailtoken(500),
}
if other:
    cases["other build: token"] = mailtoken(1, build=other)
    cases["other build: 500 accts"] = mailtoken(500, build=other)
for argv in cases.values():  # warm up
    for _ in range(20):
        timed(argv)
times = {name: [] for name in cases}
for _ in range(pairs):
    for name, argv in cases.items():
        times[name].append(timed(argv))
rss = {name: peak_rss_kib(argv) for name, argv in cases.items()}
med = {name: statistics.median(t) for name, t in times.items()}
print(f"\ncached call, median of {pairs} interleaved runs each (spawn to exit):")
for name in cases:
    q = statistics.quantiles(times[name], n=10)
    print(f"  {name:24} {med[name]:7.0f} µs  (p10 {q[0]:.0f}, p90 {q[-1]:.0f})  "
          f"{med[name] / med['cat token file']:.2f}x cat   peak RSS {rss[name] / 1024:.1f} MiB")
print(f"  500 accounts / 1 account: {med['token (500 accounts)'] / med['token (1 account)']:.3f}")

# A refresh against the server, and the same request made by curl.
force = mailtoken(1, "--force-refresh")
curl = ["/usr/bin/curl", "-s", "-o", "/dev/null", "-X", "POST", "-d",
        "grant_type=refresh_token&refresh_token=x&client_id=bench", url]
refresh = {"mailtoken --force-refresh": force, "curl (same request)": curl}
for argv in refresh.values():
    for _ in range(5):
        timed(argv)
rt = {name: [] for name in refresh}
for _ in range(min(pairs, 100)):
    for name, argv in refresh.items():
        rt[name].append(timed(argv))
rmed = {name: statistics.median(t) for name, t in rt.items()}
# The server's own latency as curl sees it, request sent to reply read, without curl's start-up.
inside = statistics.median(float(subprocess.run(curl[:-1] + ["-w", "%{time_total}", url],
                                                capture_output=True, text=True).stdout) * 1e6
                           for _ in range(50))
print(f"\nrefresh against http://127.0.0.1 (server answers at once), median of {min(pairs, 100)}:")
for name in refresh:
    print(f"  {name:26} {rmed[name]:7.0f} µs   (whole process)")
print(f"  {'the exchange inside curl':26} {inside:7.0f} µs   (curl's time_total)")
print(f"  mailtoken / curl process {rmed['mailtoken --force-refresh'] / rmed['curl (same request)']:.2f}; "
      f"mailtoken / exchange {rmed['mailtoken --force-refresh'] / inside:.1f}")

def spawn_all(program, argv, n):
    """n processes of `program`, each with its stdout on a pipe of its own."""
    procs = []
    for _ in range(n):
        r, w = os.pipe()
        pid = os.posix_spawn(program, argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
        os.close(w)
        procs.append((pid, r))
    return procs

def reap_all(procs, release=lambda: None):
    """When each process's output arrived (ns), then every process reaped. This reader runs
    at real-time priority when it may (as root), from before `release` on, so that it notes
    each output when it comes and not when 63 runnable processes let it run; `priority`
    says which it was."""
    arrived, fds = [], {r for _, r in procs}
    deadline = time.monotonic() + 30
    with reader_priority():
        release()
        while fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(fds), [], [], 1)
            now = time.perf_counter_ns()
            for r in ready:
                if os.read(r, 4096):
                    arrived.append(now)
                os.close(r)
                fds.discard(r)
    for pid, _ in procs:
        os.waitpid(pid, 0)
    return arrived

priority = ["normal"]
@contextlib.contextmanager
def reader_priority():
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        priority[0] = "real-time (SCHED_FIFO)"
    except PermissionError:
        pass
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))

def after_first(rounds_of, one_round):
    """`one_round(n)` run `rounds_of` times, each giving when the outputs arrived: the others'
    delays after the first output (all rounds) and each round's last, as medians (ms)."""
    lags, lasts = [], []
    for n in range(rounds_of):
        t = sorted(one_round(n))
        lags.extend((x - t[0]) / 1e6 for x in t[1:])
        lasts.append((t[-1] - t[0]) / 1e6)
    return f"median {statistics.median(lags):.1f} ms, last {statistics.median(lasts):.1f} ms"

# The storm: the token expired, 64 callers at once, the server slow enough that every
# caller is waiting on the lock when the refresher stores the new token.
def storm_round(_):
    write_tokens(1, 1)
    before = server.served
    arrived = reap_all(spawn_all(binary, mailtoken(1), 64))
    assert server.served - before == 1, f"{server.served - before} refreshes in one storm"
    assert len(arrived) == 64, f"{len(arrived)} of 64 callers printed"
    return arrived

server.delay = 0.3
storm = after_first(rounds, storm_round)
print(f"\nstorm: 64 callers at expiry, server 300 ms, {rounds} rounds; one refresh each round; "
      f"reader priority {priority[0]}")
print(f"  after the first printed, the other 63 printed: {storm} (medians over rounds)")

# The floor: 63 minimal waiters on the lock, let go when the holder has replaced the file.
waiter = os.path.join(work, "waiter")
lock, target = os.path.join(work, "floor.lock"), os.path.join(work, "floor.json")
def floor_round(n):
    holder = open(lock, "w")
    fcntl.flock(holder, fcntl.LOCK_EX)
    procs = spawn_all(waiter, [waiter, lock, target], 63)
    time.sleep(0.3)
    with open(target + ".new", "w") as f:
        f.write(f"released-{n}")
    os.rename(target + ".new", target)
    arrived = reap_all(procs, release=holder.close)
    assert len(arrived) == 63, f"{len(arrived)} of 63 minimal waiters printed"
    return arrived

print(f"  the machine's floor, 63 minimal C waiters: {after_first(rounds, floor_round)}")
PY
