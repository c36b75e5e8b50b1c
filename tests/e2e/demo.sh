#!/usr/bin/env bash
# Try mailtoken locally, with nothing but this machine: builds mailtoken, starts a real OAuth2
# server (oidc-provider) and a real mail server (Dovecot) on 127.0.0.1, logs in, fetches a
# token, sends a message and reads it back, printing each step. Stops everything at the end.
#
#   bash tests/e2e/demo.sh        (as root)
#
# Needs root (apt-get for Dovecot and the mail tools; Dovecot starts as root), Node 20, npm.
# The browser part of the login is played by tests/e2e/approve.mjs, signing in as the test
# user; with `bash tests/e2e/run.sh --serve` you can do that part yourself.
set -euo pipefail

source "$(dirname "$0")/lib.sh"

trap 'e2e_stop_all; [[ -n ${E2E_DIR:-} ]] && rm -rf "$E2E_DIR"' EXIT
trap 'exit 130' INT TERM

STEP=0
BOLD='' PLAIN=''
[[ -t 1 ]] && BOLD=$'\033[1m' PLAIN=$'\033[0m'
step() {
  STEP=$((STEP + 1))
  printf '\n%s==> %d. %s%s\n' "$BOLD" "$STEP" "$*" "$PLAIN"
}
# Print a command as it could be typed, run it, indent its output.
show() {
  local quoted
  quoted=$(printf '%q ' "$@")
  printf '    $ %s\n' "${quoted% }"
  "$@" 2>&1 | sed 's/^/    /'
}

step "Install what is missing with apt-get (${E2E_APT_PACKAGES[*]}) and npm (oidc-provider), and build mailtoken"
e2e_install_packages
e2e_install_node
e2e_build
echo "    mailtoken: $E2E_BIN"

step "Start the servers on 127.0.0.1"
e2e_start_all
cat <<EOF
    OAuth2/OIDC server (oidc-provider)  $ISSUER
    Dovecot IMAP                        127.0.0.1:$IMAP_PORT (TLS: $IMAPS_PORT)
    Dovecot SMTP submission             127.0.0.1:$SUBMISSION_PORT
    access tokens live ${E2E_AT_TTL}s; Dovecot checks each one at the server's introspection endpoint
EOF

step "The mailtoken config (account \`e2e\`)"
sed -n '/^\[accounts.e2e\]/,/^$/p' "$MAILTOKEN_CONFIG" | sed 's/^/    /'

step "Log in: mailtoken login e2e (device flow; the approver signs in as $E2E_USER)"
device_login e2e 2>/dev/null || {
  cat "$E2E_DIR"/logs/login-e2e.*.err
  die "login failed"
}
sed 's/^/    /' "$E2E_DIR"/logs/login-e2e.*.err

step "Fetch a token (what mail programs run)"
token=$(mailtoken token e2e)
echo "    $ mailtoken token e2e"
echo "    ${token:0:12}... (${#token} characters)"
show mailtoken status e2e

step "Log in to IMAP with it (curl)"
echo "    $ curl -u '$E2E_USER:' --oauth2-bearer \"\$(mailtoken token e2e)\" imap://127.0.0.1:$IMAP_PORT/"
curl -sS --max-time 15 -u "$E2E_USER:" --oauth2-bearer "$token" "imap://127.0.0.1:$IMAP_PORT/" | sed 's/^/    /'

subject="mailtoken demo $(date +%H:%M:%S)"
step "Send a message over SMTP submission"
if [[ $(mailtoken --help) == *send-test* ]]; then
  show mailtoken send-test e2e --to "$E2E_USER" --subject "$subject"
else
  echo "    (no send-test command in this mailtoken: using msmtp)"
  printf 'Subject: %s\n\nhello\n' "$subject" |
    timeout 60 msmtp --host=127.0.0.1 --port="$SUBMISSION_PORT" --auth=xoauth2 --tls=off \
      --user="$E2E_USER" --from="$E2E_USER" --passwordeval="mailtoken token e2e" "$E2E_USER"
fi

step "Read it back over IMAP"
imap_read_back "$subject" | grep -E '^(From|To|Subject|Date):' | sed 's/^/    /'

step "Done: stopping the servers"
