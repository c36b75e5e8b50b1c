# Shared by run.sh, demo.sh and `run.sh --serve`: install what the suite needs, start the
# real servers on 127.0.0.1 (oidc-provider, Dovecot with an SMTP relay into Dovecot LMTP),
# write a mailtoken config for them, and stop everything again. Sourced, not run.
#
# Everything lives in one temp dir ($E2E_DIR); nothing outside it is touched except the
# packages installed by apt-get and npm. Every wait is bounded.

E2E_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_ROOT=$(cd "$E2E_HERE/../.." && pwd)

# Test fixtures, not secrets: these only ever exist on 127.0.0.1 for the length of a run.
E2E_USER=alice@example.test
E2E_PASSWORD=alice-e2e-password
E2E_APP_SECRET=e2e-app-secret-0123456789
E2E_DOVECOT_SECRET=e2e-dovecot-secret-0123456789
# Access-token lifetime at the OAuth server, and the refresh margin mailtoken is given: a
# token is handed out from the cache while it has more than E2E_MARGIN seconds left.
E2E_AT_TTL=${E2E_AT_TTL:-25}
E2E_MARGIN=5

E2E_APT_PACKAGES=(dovecot-imapd dovecot-pop3d dovecot-submissiond dovecot-lmtpd curl msmtp mutt isync
  libsasl2-modules-kdexoauth2 tmux openssl ca-certificates
  getmail6 offlineimap3 fetchmail aerc git git-email libauthen-sasl-perl libio-socket-ssl-perl
  alpine postfix libsasl2-modules chromium)

say() { printf '%s\n' "$*" >&2; }
die() {
  say "e2e: $*"
  exit 1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Every call of mailtoken from these scripts is bounded in time (`timeout` runs the binary
# on PATH, not this function); the mail clients are wrapped in `timeout` where they run.
mailtoken() { timeout 60 mailtoken "$@"; }

# Poll `cmd` until it succeeds, at most `secs` seconds (in 0.2 s steps).
wait_for() {
  local secs=$1
  shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# --- installing ------------------------------------------------------------------------

# apt-get only when a package is missing; `apt-get update` at most once per run.
e2e_install_packages() {
  local missing=() p
  for p in "${E2E_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); run as root, or install them with apt-get"
    say "e2e: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    # policy-rc.d may or may not stop the packaged dovecot from starting; either way it
    # listens on the standard ports and our instance uses its own, so they never meet.
    # Postfix unconfigured: the suite runs an instance of its own (check 9e).
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v node >/dev/null || die "node (20 or later) is needed for the OAuth server"
}

# `npm ci` from the committed lock file, only when node_modules is missing or stale.
e2e_install_node() {
  local stamp="$E2E_HERE/node_modules/.package-lock.json"
  if [[ ! -f $stamp || $E2E_HERE/package-lock.json -nt $stamp ]]; then
    say "e2e: npm ci (oidc-provider)"
    (cd "$E2E_HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
}

e2e_build() {
  if [[ -n ${MAILTOKEN_BIN:-} ]]; then
    E2E_BIN=$MAILTOKEN_BIN
  else
    say "e2e: cargo build"
    (cd "$E2E_ROOT" && cargo build --locked --quiet --bins)
    E2E_BIN="$E2E_ROOT/target/debug/mailtoken"
  fi
  [[ -x $E2E_BIN ]] || die "no mailtoken binary at $E2E_BIN"
}

# --- state and ports ---------------------------------------------------------------------

e2e_free_ports() {
  # The kernel picks free ports; the tiny race until the servers bind them is acceptable.
  node -e '
    const net = require("net");
    const n = Number(process.argv[1]); const servers = [];
    (async () => {
      for (let i = 0; i < n; i++) {
        const s = net.createServer();
        await new Promise((r) => s.listen(0, "127.0.0.1", r));
        servers.push(s);
      }
      console.log(servers.map((s) => s.address().port).join(" "));
      servers.forEach((s) => s.close());
    })();' "$1"
}

e2e_setup_state() {
  E2E_DIR=$(mktemp -d /tmp/mailtoken-e2e.XXXXXX)
  # Dovecot's login processes run as dovenull and the mail as nobody: they need to traverse.
  chmod 755 "$E2E_DIR"
  mkdir -p "$E2E_DIR"/{bin,home,logs,tls,mail,dovecot/run,dovecot/state,mailtoken,tmp}
  mkdir -m 700 "$E2E_DIR/mailtoken/data"
  chown nobody:nogroup "$E2E_DIR/mail"
  # `mailtoken` on PATH under its own name: the contrib files call `mailtoken token ...`.
  ln -s "$E2E_BIN" "$E2E_DIR/bin/mailtoken"
  read -r OIDC_PORT IMAP_PORT IMAPS_PORT POP3_PORT SUBMISSION_PORT LMTP_PORT RELAY_PORT <<<"$(e2e_free_ports 7)"
  ISSUER="http://127.0.0.1:$OIDC_PORT"
  export PATH="$E2E_DIR/bin:$PATH"
  export HOME="$E2E_DIR/home"
  export XDG_CONFIG_HOME="$HOME/.config" XDG_DATA_HOME="$HOME/.local/share" XDG_CACHE_HOME="$HOME/.cache"
  export MAILTOKEN_CONFIG="$E2E_DIR/mailtoken/config.toml"
  export MAILTOKEN_DATA_DIR="$E2E_DIR/mailtoken/data"
  export E2E_APP_SECRET
  cat >"$E2E_DIR/env.sh" <<EOF
# Source this to use mailtoken against the e2e servers by hand.
export PATH="$E2E_DIR/bin:\$PATH"
export MAILTOKEN_CONFIG="$MAILTOKEN_CONFIG"
export MAILTOKEN_DATA_DIR="$MAILTOKEN_DATA_DIR"
export E2E_APP_SECRET="$E2E_APP_SECRET"
EOF
}

# A CA and a server certificate for 127.0.0.1, so the mail clients use TLS as users would.
e2e_make_tls() {
  local t="$E2E_DIR/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=mailtoken e2e CA" -keyout "$t/ca.key" -out "$t/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$t/ext.cnf"
  openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
    -days 2 -extfile "$t/ext.cnf" -out "$t/server.pem" 2>/dev/null
  chmod 600 "$t"/*.key
}

# --- configs -----------------------------------------------------------------------------

e2e_write_dovecot_conf() {
  local d="$E2E_DIR/dovecot"
  # Dovecot asks the OAuth server's introspection endpoint about every token (no cache).
  cat >"$d/oauth2.conf.ext" <<EOF
introspection_mode = post
introspection_url = http://dovecot:$E2E_DOVECOT_SECRET@127.0.0.1:$OIDC_PORT/token/introspection
force_introspection = yes
username_attribute = email
active_attribute = active
active_value = true
timeout_msecs = 10000
EOF
  chmod 600 "$d/oauth2.conf.ext"
  cat >"$d/dovecot.conf" <<EOF
# Dovecot for the mailtoken e2e suite: IMAP (plain + implicit TLS), POP3 (plain), submission
# (STARTTLS) and LMTP, all on 127.0.0.1, logging in only with OAuth2 bearer tokens (XOAUTH2, OAUTHBEARER).
base_dir = $d/run
state_dir = $d/state
log_path = $E2E_DIR/logs/dovecot.log
instance_name = mailtoken-e2e
protocols = imap pop3 submission lmtp
listen = 127.0.0.1
hostname = mail.e2e.test
postmaster_address = postmaster@example.test

ssl = yes
ssl_cert = <$E2E_DIR/tls/server.pem
ssl_key = <$E2E_DIR/tls/server.key
ssl_dh = </usr/share/dovecot/dh.pem
# Plain-text IMAP and POP on 127.0.0.1 are allowed so curl and the proxy's checks can log in
# without TLS setup.
disable_plaintext_auth = no
# The checks log in with wrong tokens on purpose; no need to wait 2 s for each refusal.
# (They do so from 127.0.0.2: Dovecot's auth penalty, up to 15 s per client IP after a
# failure, cannot be turned off in 2.3, and would let a 25 s token expire in the wait.)
auth_failure_delay = 0

auth_mechanisms = xoauth2 oauthbearer
auth_verbose = yes
auth_debug = ${E2E_DEBUG:-no}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $d/oauth2.conf.ext
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$E2E_DIR/mail/%u allow_all_users=yes
}
mail_location = maildir:~/Maildir
# Test-only: check 9c opens 100 IMAP sessions through the proxy at once, all as alice from
# 127.0.0.1; Dovecot's default cap of 10 per user and address refused some when they overlapped.
protocol imap {
  mail_max_userip_connections = 200
}
default_internal_user = dovecot
default_login_user = dovenull

service imap-login {
  inet_listener imap {
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = $POP3_PORT
  }
}
service submission-login {
  inet_listener submission {
    port = $SUBMISSION_PORT
  }
}
service lmtp {
  inet_listener lmtp {
    port = $LMTP_PORT
  }
}
# Submission relays to the local SMTP relay, which delivers through LMTP above.
submission_relay_host = 127.0.0.1
submission_relay_port = $RELAY_PORT
submission_relay_ssl = no
EOF
}

e2e_write_mailtoken_conf() {
  cat >"$MAILTOKEN_CONFIG" <<EOF
# mailtoken accounts for the e2e servers (written by tests/e2e/lib.sh).
refresh_margin = $E2E_MARGIN

# Device flow, endpoints found by OIDC discovery.
[accounts.e2e]
provider = "generic"
user = "$E2E_USER"
client_id = "mailtoken-e2e"
issuer = "$ISSUER"
scopes = ["openid", "email", "offline_access", "mail"]
imap_host = "127.0.0.1"
imap_port = $IMAP_PORT
imap_tls = "none"
pop_host = "127.0.0.1"
pop_port = $POP3_PORT
pop_tls = "none"
smtp_host = "127.0.0.1"
smtp_port = $SUBMISSION_PORT
smtp_tls = "none"

# The device account again, with a login that starts itself again when it dies, told to a
# notifier that keeps what it hears.
[accounts.e2e-relogin]
provider = "generic"
user = "$E2E_USER"
client_id = "mailtoken-e2e"
issuer = "$ISSUER"
scopes = ["openid", "email", "offline_access", "mail"]
imap_host = "127.0.0.1"
imap_port = $IMAP_PORT
imap_tls = "none"
relogin = "device"
notify_command = "env | grep ^MAILTOKEN_ >> $E2E_DIR/tmp/notified-relogin; echo --- >> $E2E_DIR/tmp/notified-relogin"

# Browser flow: authorization code + PKCE, redirect caught on 127.0.0.1.
[accounts.e2e2]
provider = "generic"
user = "$E2E_USER"
client_id = "mailtoken-e2e"
flow = "browser"
authorization_endpoint = "$ISSUER/auth"
token_endpoint = "$ISSUER/token"
scopes = ["openid", "email", "offline_access", "mail"]
imap_host = "127.0.0.1"
imap_port = $IMAP_PORT
imap_tls = "none"

# App-only: client credentials, the secret from the environment.
[accounts.e2e-app]
provider = "generic"
client_id = "mailtoken-e2e-app"
flow = "credentials"
client_secret_env = "E2E_APP_SECRET"
token_endpoint = "$ISSUER/token"
scopes = ["mail"]

# The same, for a client registered for client_secret_basic.
[accounts.e2e-app-basic]
provider = "generic"
client_id = "mailtoken-e2e-app-basic"
flow = "credentials"
client_secret_env = "E2E_APP_SECRET"
token_endpoint = "$ISSUER/token"
token_endpoint_auth_method = "client_secret_basic"
scopes = ["mail"]
EOF
}

# --- servers -----------------------------------------------------------------------------

E2E_PIDS=()

e2e_start_oidc() {
  E2E_OIDC_PORT=$OIDC_PORT E2E_STATE="$E2E_DIR" E2E_AT_TTL=$E2E_AT_TTL E2E_USER=$E2E_USER \
    E2E_PASSWORD=$E2E_PASSWORD E2E_APP_SECRET=$E2E_APP_SECRET E2E_DOVECOT_SECRET=$E2E_DOVECOT_SECRET \
    node "$E2E_HERE/oidc-server.mjs" >>"$E2E_DIR/logs/oidc.log" 2>&1 &
  E2E_PIDS+=($!)
  wait_for 20 curl -fsS --max-time 2 "$ISSUER/.well-known/openid-configuration" ||
    die "the OAuth server did not come up (see $E2E_DIR/logs/oidc.log)"
}

e2e_start_relay() {
  E2E_SMTP_PORT=$RELAY_PORT E2E_LMTP_PORT=$LMTP_PORT \
    node "$E2E_HERE/smtp-relay.mjs" >>"$E2E_DIR/logs/relay.log" 2>&1 &
  E2E_PIDS+=($!)
  wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RELAY_PORT" || die "the SMTP relay did not come up"
}

port_open() { bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

e2e_start_dovecot() {
  [[ $(id -u) == 0 ]] || die "Dovecot is started as root (it drops privileges itself): run as root"
  # Refuses to start on a broken config, and says why.
  dovecot -c "$E2E_DIR/dovecot/dovecot.conf" -n >/dev/null || die "bad Dovecot config"
  dovecot -c "$E2E_DIR/dovecot/dovecot.conf" || die "Dovecot did not start (see $E2E_DIR/logs/dovecot.log)"
  E2E_DOVECOT_STARTED=1
  local p
  for p in $IMAP_PORT $IMAPS_PORT $POP3_PORT $SUBMISSION_PORT $LMTP_PORT; do
    wait_for 15 port_open "$p" || die "Dovecot is not listening on $p (see $E2E_DIR/logs/dovecot.log)"
  done
}

e2e_start_all() {
  e2e_setup_state
  e2e_make_tls
  e2e_write_dovecot_conf
  e2e_write_mailtoken_conf
  e2e_start_oidc
  e2e_start_relay
  e2e_start_dovecot
}

# Stop what this run started, by process id (and Dovecot through its own pid file).
e2e_stop_all() {
  local pid
  if [[ -n ${E2E_DOVECOT_STARTED:-} ]]; then
    local master="$E2E_DIR/dovecot/run/master.pid"
    if [[ -f $master ]]; then
      pid=$(cat "$master")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    E2E_DOVECOT_STARTED=
  fi
  for pid in "${E2E_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${E2E_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  E2E_PIDS=()
}

# --- helpers for the checks --------------------------------------------------------------

# Log in to IMAP with a bearer token through curl. curl 7.88 picks OAUTHBEARER whenever the
# server offers it (it ignores --login-options AUTH=XOAUTH2: curl issue #10259), so this is an
# OAUTHBEARER login;
# imap_sasl below sends mailtoken's own XOAUTH2 and OAUTHBEARER strings.
imap_login() {
  local token=$1 user=${2:-$E2E_USER}
  curl -sS --max-time 15 --user "$user:" --oauth2-bearer "$token" \
    "imap://127.0.0.1:$IMAP_PORT/" >/dev/null
}

# A login that must be refused. It comes from 127.0.0.2 (still this machine's loopback):
# Dovecot penalises the client IP of a failed login, and the good logins from 127.0.0.1
# must not wait for that.
imap_login_refused() {
  local token=$1 user=${2:-$E2E_USER} rc=0
  curl -sS --max-time 15 --interface 127.0.0.2 --user "$user:" --oauth2-bearer "$token" \
    "imap://127.0.0.1:$IMAP_PORT/" >/dev/null 2>&1 || rc=$?
  # 67: login denied. Anything else (a timeout, a refused connection) proves nothing.
  ((rc == 67)) || say "expected curl exit 67 (login denied), got $rc"
  ((rc == 67))
}

# AUTHENTICATE with a ready SASL initial response (what `mailtoken token --format xoauth2`
# or `--format oauthbearer` prints), over a raw IMAP connection. Succeeds on a tagged OK.
imap_sasl() {
  local mech=$1 response=$2 line
  (
    exec 3<>"/dev/tcp/127.0.0.1/$IMAP_PORT"
    read -r -t 10 line <&3 # greeting
    printf 'a1 AUTHENTICATE %s %s\r\n' "$mech" "$response" >&3
    while read -r -t 15 line <&3; do
      line=${line%$'\r'}
      case $line in
        # An error challenge (RFC 7628): answer with an empty response to get the NO.
        "+ "*) printf '\r\n' >&3 ;;
        "a1 OK"*)
          printf 'a2 LOGOUT\r\n' >&3
          exit 0
          ;;
        a1\ *)
          say "$mech: $line"
          exit 1
          ;;
      esac
    done
    exit 1
  )
}

# Print the sequence numbers of INBOX messages whose Subject contains $2.
imap_search() {
  local token=$1 subject=$2
  curl -sS --max-time 15 --user "$E2E_USER:" --oauth2-bearer "$token" \
    "imap://127.0.0.1:$IMAP_PORT/INBOX" -X "SEARCH SUBJECT \"$subject\"" |
    tr -d '\r' | sed -n 's/^\* SEARCH *//p'
}

# Wait (bounded) until a message with this subject is in the INBOX; print it.
imap_read_back() {
  local subject=$1 n=""
  for _ in $(seq 30); do
    n=$(imap_search "$(mailtoken token e2e)" "$subject")
    [[ -n $n ]] && break
    sleep 0.5
  done
  [[ -n $n ]] || {
    say "no message with subject \"$subject\" in the INBOX"
    return 1
  }
  curl -sS --max-time 15 --user "$E2E_USER:" \
    --oauth2-bearer "$(mailtoken token e2e)" "imap://127.0.0.1:$IMAP_PORT/INBOX;MAILINDEX=${n%% *}" |
    tr -d '\r'
}

# How many messages the INBOX holds now.
imap_messages() {
  curl -sS --max-time 15 --user "$E2E_USER:" --oauth2-bearer "$(mailtoken token e2e)" \
    "imap://127.0.0.1:$IMAP_PORT/" -X 'STATUS INBOX (MESSAGES)' | tr -d '\r' |
    sed -n 's/.*(MESSAGES \([0-9]*\)).*/\1/p'
}

# Introspect a token at the OAuth server as Dovecot would; prints the JSON reply.
introspect() {
  curl -sS --max-time 10 -u "dovecot:$E2E_DOVECOT_SECRET" --data-urlencode "token=$1" "$ISSUER/token/introspection"
}

# How many successful token-endpoint grants of this type the OAuth server has seen.
grant_count() {
  curl -sS --max-time 5 "$ISSUER/_e2e/grants" |
    node -e 'const g = JSON.parse(require("fs").readFileSync(0)); console.log(g.success[process.argv[1]] || 0)' "$1"
}

# A field of the stored token file of an account.
store_field() {
  node -e 'console.log(require(process.argv[1])[process.argv[2]] ?? "")' "$MAILTOKEN_DATA_DIR/$1.json" "$2"
}

# `mailtoken login NAME` by the device flow, with the approver in the role of the user: it
# opens the verification page mailtoken printed and types the user code mailtoken printed.
device_login() {
  local name=$1 log="$E2E_DIR/logs/login-$1.$RANDOM"
  timeout 90 mailtoken login "$name" >"$log.out" 2>"$log.err" &
  local pid=$!
  # The prompt is complete once the page address and the code (oidc-provider's form:
  # XXXX-XXXX) are both on stderr.
  local code_re='^[[:space:]]+[A-Z]{4}-[A-Z]{4}[[:space:]]*$'
  if ! wait_for 20 bash -c "grep -q '$ISSUER/device' '$log.err' && grep -Eq '$code_re' '$log.err'"; then
    kill "$pid" 2>/dev/null || true
    say "mailtoken login printed no device code:"
    cat "$log.err" >&2
    return 1
  fi
  local uri code
  uri=$(grep -Eo "$ISSUER/device([^?[:space:]]*)" "$log.err" | head -n 1)
  code=$(grep -E "$code_re" "$log.err" | head -n 1 | tr -d '[:space:]')
  say "device login: $uri, code $code"
  if ! node "$E2E_HERE/approve.mjs" "$uri" --user-code "$code" --login "$E2E_USER" --password "$E2E_PASSWORD"; then
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  if ! wait "$pid"; then
    say "mailtoken login failed:"
    cat "$log.err" >&2
    return 1
  fi
}
