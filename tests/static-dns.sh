#!/usr/bin/env bash
# The statically linked build (`cargo build-static`) still resolves host names through the
# system's resolver on the refresh path: in a network namespace of its own whose resolv.conf
# names a small DNS server on 127.0.0.1:53, a refresh against
# https://tokens.mailtoken.test:PORT/token (a certificate from a CA made here, trusted through
# SSL_CERT_FILE) must reach the token server there. The same run with the default (dynamic)
# build shows the check itself works.
#
#     bash tests/static-dns.sh      (root: it makes a network namespace; ~5 min to build)
#
# Not part of tests/all.sh: the default build is the dynamic one, and a second build of the
# whole dependency tree for the static target would double CI's build time.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "static-dns.sh: needs root (ip netns)" >&2; exit 1; }
cargo build --release --locked --quiet --bins
cargo build-static --locked --quiet
ns=mailtoken-dns-$$ work=$(mktemp -d /tmp/mailtoken-dns.XXXXXX)
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "/etc/netns/$ns" "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
# `ip netns exec` mounts /etc/netns/NAME/* over /etc/*: this resolv.conf only in there.
mkdir -p "/etc/netns/$ns"
echo "nameserver 127.0.0.1" >"/etc/netns/$ns/resolv.conf"

# One name, one address: A queries for *.mailtoken.test get 127.0.0.1, anything else none.
ip netns exec "$ns" python3 - <<'PY' &
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    q, peer = s.recvfrom(512)
    i = 12
    labels = []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode())
        i += q[i] + 1
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    question = q[12:i + 5]
    ours = qtype == 1 and ".".join(labels).endswith("mailtoken.test")
    answer = (b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")) if ours else b""
    s.sendto(q[:2] + b"\x81\x80" + q[4:6] + struct.pack(">HHH", int(ours), 0, 0) + question + answer, peer)
PY
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=static-dns CA" -keyout "$work/ca.key" -out "$work/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=tokens.mailtoken.test" \
  -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:tokens.mailtoken.test\nextendedKeyUsage=serverAuth\n' >"$work/ext.cnf"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 1 -extfile "$work/ext.cnf" -out "$work/server.pem" 2>/dev/null
ip netns exec "$ns" python3 tests/tools/token_server.py --access resolved-and-refreshed --refresh rt-2 \
  --tls "$work/server.pem" "$work/server.key" --port-file "$work/port" &
for _ in $(seq 50); do [[ -s $work/port ]] && break; sleep 0.1; done
port=$(cat "$work/port")
mkdir -m 700 "$work/data"
cat >"$work/config.toml" <<EOF
[accounts.dns]
provider = "generic"
user = "me@mailtoken.test"
client_id = "static-dns"
token_endpoint = "https://tokens.mailtoken.test:$port/token"
scopes = ["mail", "offline_access"]
EOF
failed=0
for bin in target/release/mailtoken target/x86_64-unknown-linux-gnu/release/mailtoken; do
  printf '{"version":1,"access_token":"old","token_type":"Bearer","expires_at":1,"refresh_token":"rt-1"}' \
    >"$work/data/dns.json"
  chmod 600 "$work/data/dns.json"
  kind=$(file -b "$bin" | grep -o 'static[a-z-]*\|dynamically linked' | head -1)
  if out=$(SSL_CERT_FILE=$work/ca.pem ip netns exec "$ns" "$bin" --config "$work/config.toml" --data-dir "$work/data" token dns 2>&1) &&
    [[ $out == resolved-and-refreshed ]]; then
    echo "ok: $bin ($kind) resolved tokens.mailtoken.test and refreshed"
  else
    echo "FAILED: $bin ($kind): $out"
    failed=1
  fi
done
exit $failed
