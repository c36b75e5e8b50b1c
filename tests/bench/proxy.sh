#!/usr/bin/env bash
# Benchmark of `mailtoken proxy`: the same IMAP work straight to Dovecot (XOAUTH2 with the
# token) and through the proxy (LOGIN with any password), side by side in one run, against the
# e2e suite's Dovecot and OAuth server on 127.0.0.1:
#   - one login + LOGOUT, median of ROUNDS, the two kinds interleaved;
#   - CONCURRENT logins at once, wall time;
#   - FETCH of a mailbox of about SIZE_MB (1 MiB messages), MB/s.
# Not a test and not run by CI. As root (it starts Dovecot like tests/e2e):
#
#     bash tests/bench/proxy.sh
#
# Knobs: ROUNDS=200 CONCURRENT=100 SIZE_MB=200.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-200} CONCURRENT=${CONCURRENT:-100} SIZE_MB=${SIZE_MB:-200}
# Tokens that outlive the run: the benchmark measures the proxy, not refreshes.
export E2E_AT_TTL=3600
source tests/e2e/lib.sh
trap 'kill ${PROXY_PID:-} 2>/dev/null || true; e2e_stop_all; [[ -n ${E2E_DIR:-} ]] && rm -rf "$E2E_DIR"' EXIT

say "bench: release build"
cargo build --release --locked --quiet --bin mailtoken
export MAILTOKEN_BIN=$PWD/target/release/mailtoken
e2e_install_packages
e2e_install_node
e2e_build
e2e_start_all
device_login e2e >/dev/null 2>&1 || die "login failed"

read -r PROXY_IMAP <<<"$(e2e_free_ports 1)"
cfg="$E2E_DIR/tmp/bench-proxy.toml"
{ cat "$MAILTOKEN_CONFIG"; printf '\n[proxy]\nimap = "127.0.0.1:%s"\n' "$PROXY_IMAP"; } >"$cfg"
chmod 600 "$cfg"
MAILTOKEN_CONFIG=$cfg "$E2E_BIN" proxy 2>"$E2E_DIR/logs/proxy.err" &
PROXY_PID=$!
wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PROXY_IMAP" || die "the proxy did not listen"

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg); LANG=${LANG:-unset}"
echo "mailtoken $($E2E_BIN --version | cut -d' ' -f2) (release build), Dovecot $(dovecot --version | cut -d' ' -f1)"
E2E_TOKEN=$("$E2E_BIN" token e2e) python3 - "$IMAP_PORT" "$PROXY_IMAP" "$E2E_USER" "$ROUNDS" "$CONCURRENT" "$SIZE_MB" <<'PY'
import imaplib, os, statistics, sys, threading, time

direct_port, proxy_port, user = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rounds, concurrent, size_mb = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
token = os.environ["E2E_TOKEN"]
xoauth2 = f"user={user}\x01auth=Bearer {token}\x01\x01".encode()

import base64, socket

def direct():
    m = imaplib.IMAP4("127.0.0.1", direct_port)
    m.authenticate("XOAUTH2", lambda _: xoauth2)
    return m

def proxied():
    m = imaplib.IMAP4("127.0.0.1", proxy_port)
    m.login(user, "any")
    return m

def session(port, login):
    """One IMAP session on a raw socket, each command one write: connect, log in, log out."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rwb")
    f.readline()
    for line, tag in ((login, b"a1 "), (b"a2 LOGOUT\r\n", b"a2 ")):
        f.write(line)
        f.flush()
        while not f.readline().startswith(tag):
            pass
    s.close()

direct_login = b"a1 AUTHENTICATE XOAUTH2 " + base64.b64encode(xoauth2) + b"\r\n"
proxied_login = ("a1 LOGIN %s any\r\n" % user).encode()

def login_ms(port, login):
    t = time.perf_counter()
    session(port, login)
    return (time.perf_counter() - t) * 1000

# Fill the mailbox (straight to Dovecot) with 1 MiB messages.
m = direct()
m.select("INBOX")
have = int(m.status("INBOX", "(MESSAGES)")[1][0].split()[2].strip(b")"))
body = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * (1024 * 1024 // 78)
for _ in range(max(0, size_mb - have)):
    m.append("INBOX", None, None, body)
m.logout()

for port, login in ((direct_port, direct_login), (proxy_port, proxied_login)):  # warm up
    for _ in range(5):
        login_ms(port, login)
d, p = [], []
for _ in range(rounds):
    d.append(login_ms(direct_port, direct_login))
    p.append(login_ms(proxy_port, proxied_login))

def storm(port, login):
    errors = []
    def one():
        try:
            session(port, login)
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(concurrent)]
    t = time.perf_counter()
    for th in threads: th.start()
    for th in threads: th.join()
    return (time.perf_counter() - t) * 1000, len(errors)

def fetch_mb_s(connect):
    m = connect()
    m.select("INBOX", readonly=True)
    t = time.perf_counter()
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    secs = time.perf_counter() - t
    total = sum(len(part[1]) for part in data if isinstance(part, tuple))
    m.logout()
    return total / secs / 1e6, total / 1e6

sd, ed = storm(direct_port, direct_login)
sp, ep = storm(proxy_port, proxied_login)
fd, size = fetch_mb_s(direct)
fp, _ = fetch_mb_s(proxied)
md, mp = statistics.median(d), statistics.median(p)
print(f"{'':34} {'direct':>10} {'via proxy':>10}")
print(f"{'one session (login, LOGOUT), med ms':34} {md:10.2f} {mp:10.2f}   (+{mp - md:.2f} ms, {rounds} rounds)")
print(f"{f'{concurrent} concurrent logins, wall ms':34} {sd:10.0f} {sp:10.0f}   (errors: {ed} / {ep})")
print(f"{f'FETCH {size:.0f} MB, MB/s':34} {fd:10.0f} {fp:10.0f}   ({fp / fd * 100:.0f}% of direct)")
PY
