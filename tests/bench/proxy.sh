#!/usr/bin/env bash
# Benchmark of `mailtoken proxy` beside the yardsticks, in one run, against the e2e suite's
# Dovecot and OAuth server on 127.0.0.1. Three ways to the same mailbox:
#   direct      the client speaks TLS to Dovecot's imaps port and logs in with XOAUTH2 (SASL-IR)
#               with the token in hand: the best a program with OAuth2 of its own can do;
#   mailtoken   the client logs in to `mailtoken proxy` with LOGIN; the proxy reaches Dovecot's
#               imaps port over TLS with XOAUTH2, the way it reaches Microsoft's or Google's;
#   emailproxy  the same through `emailproxy` from PyPI (the most used proxy of its kind), set up
#               the same way: TLS to the imaps port, the same access token already cached.
# Figures: one session (connect, log in, LOGOUT), median, the three interleaved; CONCURRENT
# sessions at once, wall time; FETCH of a mailbox of about SIZE_MB (1 MiB messages), MB/s.
# Not a test and not run by CI. As root (it starts Dovecot like tests/e2e, and installs
# emailproxy into a virtualenv under the run's temporary directory):
#
#     bash tests/bench/proxy.sh
#
# Knobs: ROUNDS=200 (mailtoken and direct) EP_ROUNDS=20 (emailproxy: each of its logins
# derives keys with 1.3 million PBKDF2 rounds) CONCURRENT=100 SIZE_MB=200.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-200} EP_ROUNDS=${EP_ROUNDS:-20} CONCURRENT=${CONCURRENT:-100} SIZE_MB=${SIZE_MB:-200}
# Tokens that outlive the run: the benchmark measures the proxies, not refreshes.
export E2E_AT_TTL=3600
source tests/e2e/lib.sh
trap 'kill ${PROXY_PID:-} ${EP_PID:-} 2>/dev/null || true; e2e_stop_all; [[ -n ${E2E_DIR:-} ]] && rm -rf "$E2E_DIR"' EXIT

say "bench: release build"
cargo build --release --locked --quiet --bins
export MAILTOKEN_BIN=$PWD/target/release/mailtoken
e2e_install_packages
e2e_install_node
e2e_build
e2e_start_all
device_login e2e >/dev/null 2>&1 || die "login failed"
# Both proxies verify Dovecot's certificate against the suite's own CA.
export SSL_CERT_FILE=$E2E_DIR/tls/ca.pem
read -r PROXY_IMAP EP_IMAP <<<"$(e2e_free_ports 2)"

cfg="$E2E_DIR/tmp/bench-proxy.toml"
sed -e "s/^imap_port = $IMAP_PORT\$/imap_port = $IMAPS_PORT/" -e 's/^imap_tls = "none"$/imap_tls = "tls"/' \
  "$MAILTOKEN_CONFIG" >"$cfg"
printf '\n[proxy]\nimap = "127.0.0.1:%s"\n' "$PROXY_IMAP" >>"$cfg"
chmod 600 "$cfg"
MAILTOKEN_CONFIG=$cfg "$E2E_BIN" proxy 2>"$E2E_DIR/logs/proxy.err" &
PROXY_PID=$!

say "bench: emailproxy from PyPI, in a virtualenv"
venv="$E2E_DIR/emailproxy"
python3 -m venv "$venv" 2>/dev/null || {
  apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv "$venv"
}
"$venv/bin/pip" install --quiet --disable-pip-version-check emailproxy
EP_VERSION=$("$venv/bin/pip" show emailproxy | sed -n 's/^Version: //p')
TOKEN=$("$E2E_BIN" token e2e)
EP_PASSWORD=bench-password
# emailproxy keeps its tokens in its config, encrypted with the password the mail program
# sends; a login of its own needs a person at a browser. So the config is written here, with
# emailproxy's own Cryptographer, holding the access token mailtoken already has.
epcfg="$E2E_DIR/tmp/emailproxy.config"
TOKEN=$TOKEN "$venv/bin/python" - "$epcfg" "$E2E_USER" "$EP_IMAP" "$IMAPS_PORT" "$OIDC_PORT" "$EP_PASSWORD" <<'PY'
import configparser, os, sys, time
path, user, port, upstream, oidc, password = sys.argv[1:]
sys.argv = sys.argv[:1]  # emailproxy reads the command line when imported
import emailproxy

c = configparser.ConfigParser()
c[f"IMAP-{port}"] = {"server_address": "127.0.0.1", "server_port": upstream,
                     "local_address": "127.0.0.1"}
c[user] = {"permission_url": f"http://127.0.0.1:{oidc}/auth",
           "token_url": f"http://127.0.0.1:{oidc}/token",
           "oauth2_scope": "openid email offline_access mail",
           "redirect_uri": "http://localhost", "client_id": "mailtoken-e2e"}
crypt = emailproxy.Cryptographer(c, user, password)
c[user].update({"token_salt": crypt.salt, "token_iterations": str(crypt.iterations),
                "access_token": crypt.encrypt(os.environ["TOKEN"]),
                "access_token_expiry": str(int(time.time()) + 3000),
                "refresh_token": crypt.encrypt("unused: the access token outlives the run")})
with open(path, "w") as f:
    c.write(f)
PY
"$venv/bin/emailproxy" --no-gui --config-file "$epcfg" --log-file "$E2E_DIR/logs/emailproxy.log" \
  >/dev/null 2>&1 &
EP_PID=$!
for p in "$PROXY_IMAP" "$EP_IMAP"; do
  wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" || die "nothing listens on $p"
done

echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg); LANG=${LANG:-unset}; $(date -u +%F)"
echo "mailtoken $($E2E_BIN --version | cut -d' ' -f2) (release build), emailproxy $EP_VERSION ($("$venv/bin/python" --version)), Dovecot $(dovecot --version | cut -d' ' -f1)"
TOKEN=$TOKEN python3 - "$IMAPS_PORT" "$PROXY_IMAP" "$EP_IMAP" "$E2E_USER" "$EP_PASSWORD" \
  "$ROUNDS" "$EP_ROUNDS" "$CONCURRENT" "$SIZE_MB" "$SSL_CERT_FILE" <<'PY'
import base64, imaplib, os, socket, ssl, statistics, sys, threading, time

direct_port, proxy_port, ep_port = (int(a) for a in sys.argv[1:4])
user, ep_password = sys.argv[4:6]
rounds, ep_rounds, concurrent, size_mb = (int(a) for a in sys.argv[6:10])
tls = ssl.create_default_context(cafile=sys.argv[10])
xoauth2 = f"user={user}\x01auth=Bearer {os.environ['TOKEN']}\x01\x01".encode()

# (port, TLS to it?, login line, imaplib login) for each way in.
ways = {
    "direct": (direct_port, True, b"a1 AUTHENTICATE XOAUTH2 " + base64.b64encode(xoauth2) + b"\r\n",
               lambda m: m.authenticate("XOAUTH2", lambda _: xoauth2)),
    # By the account's name: e2e and e2e2 share the user, and the proxy does not guess.
    "mailtoken": (proxy_port, False, b"a1 LOGIN e2e any\r\n",
                  lambda m: m.login("e2e", "any")),
    "emailproxy": (ep_port, False, f"a1 LOGIN {user} {ep_password}\r\n".encode(),
                   lambda m: m.login(user, ep_password)),
}

def connect(way):
    port, over_tls, _, login = ways[way]
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls) if over_tls else imaplib.IMAP4("127.0.0.1", port)
    login(m)
    return m

def session(way):
    """One IMAP session on a raw socket, each command one write: connect, log in, log out."""
    port, over_tls, login, _ = ways[way]
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if over_tls:
        s = tls.wrap_socket(s, server_hostname="127.0.0.1")
    f = s.makefile("rwb")
    f.readline()
    for line, tag in ((login, b"a1 "), (b"a2 LOGOUT\r\n", b"a2 ")):
        f.write(line)
        f.flush()
        while True:
            reply = f.readline()
            if not reply:
                raise EOFError(f"{way}: connection closed")
            if reply.startswith(tag):
                if tag == b"a1 " and not reply.startswith(b"a1 OK"):
                    raise RuntimeError(f"{way}: {reply!r}")
                break
    s.close()

def session_ms(way):
    t = time.perf_counter()
    session(way)
    return (time.perf_counter() - t) * 1000

# Fill the mailbox (straight to Dovecot) with 1 MiB messages.
m = connect("direct")
m.select("INBOX")
have = int(m.status("INBOX", "(MESSAGES)")[1][0].split()[2].strip(b")"))
body = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * (1024 * 1024 // 78)
for _ in range(max(0, size_mb - have)):
    m.append("INBOX", None, None, body)
m.logout()

for way in ways:  # warm up, and prove each way logs in
    for _ in range(3):
        session_ms(way)
times = {way: [] for way in ways}
for i in range(rounds):
    for way in ("direct", "mailtoken") + (("emailproxy",) if i < ep_rounds else ()):
        times[way].append(session_ms(way))

def storm(way):
    errors = []
    def one():
        try:
            session(way)
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=one) for _ in range(concurrent)]
    t = time.perf_counter()
    for th in threads: th.start()
    for th in threads: th.join()
    return (time.perf_counter() - t) * 1000, len(errors)

def fetch_mb_s(way):
    m = connect(way)
    m.select("INBOX", readonly=True)
    t = time.perf_counter()
    typ, data = m.fetch("1:*", "(BODY.PEEK[])")
    secs = time.perf_counter() - t
    total = sum(len(part[1]) for part in data if isinstance(part, tuple))
    m.logout()
    return total / secs / 1e6, total / 1e6

storms = {way: storm(way) for way in ways}
fetches = {way: fetch_mb_s(way) for way in ways}
med = {way: statistics.median(t) for way, t in times.items()}
size = fetches["direct"][1]
print(f"{'':38} {'direct':>10} {'mailtoken':>10} {'emailproxy':>10}")
print(f"{'one session (login, LOGOUT), med ms':38}" + "".join(f" {med[w]:10.2f}" for w in ways)
      + f"   (+{med['mailtoken'] - med['direct']:.2f} ms via mailtoken; rounds {rounds}/{rounds}/{ep_rounds})")
print(f"{f'{concurrent} concurrent sessions, wall ms':38}" + "".join(f" {storms[w][0]:10.0f}" for w in ways)
      + "   (errors: " + " / ".join(str(storms[w][1]) for w in ways) + ")")
print(f"{f'FETCH {size:.0f} MB, MB/s':38}" + "".join(f" {fetches[w][0]:10.0f}" for w in ways)
      + f"   (mailtoken {fetches['mailtoken'][0] / fetches['direct'][0] * 100:.0f}% of direct)")
PY
