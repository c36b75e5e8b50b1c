#!/usr/bin/env bash
# End-to-end suite: mailtoken against a real OAuth2/OIDC server (oidc-provider) and a real
# mail server (Dovecot checking bearer tokens by introspection), driven by real mail clients
# (curl, msmtp, mutt, mbsync) configured from the contrib/ files users copy.
#
#   bash tests/e2e/run.sh            run every check; exit 1 if one failed
#   bash tests/e2e/run.sh --serve    start the servers and wait (Ctrl-C stops them)
#   E2E_ONLY='device|postfix' bash tests/e2e/run.sh    only the checks whose functions match
#
# Needs root (apt-get, and Dovecot starts as root then drops privileges), Node 20 and npm.
# Everything listens on 127.0.0.1; all state is in one temp dir, removed at the end unless
# E2E_KEEP=1. The last line is "e2e: N passed, M failed".
set -euo pipefail

source "$(dirname "$0")/lib.sh"

MODE=run
case ${1:-} in
  --serve) MODE=serve ;;
  "") ;;
  *) die "usage: bash tests/e2e/run.sh [--serve]" ;;
esac

PASSED=0
FAILED=0
SKIPPED=0
RESULTS=()

cleanup() {
  local rc=$?
  if [[ -n ${E2E_DIR:-} && -S $E2E_DIR/tmux.sock ]]; then
    tmux -S "$E2E_DIR/tmux.sock" kill-server 2>/dev/null || true
  fi
  e2e_stop_all
  if [[ -n ${E2E_DIR:-} && -d $E2E_DIR ]]; then
    # Keep the logs of a failed run to look at; otherwise leave nothing behind.
    if [[ ${E2E_KEEP:-} == 1 || ($MODE == run && $rc != 0) ]]; then
      say "e2e: state and logs kept in $E2E_DIR"
    else
      rm -rf "$E2E_DIR"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run one check in a subshell with errexit on (a check function fails at its first failing
# command), its output in a log file that is shown when it fails. Exit 77 means SKIP.
check() {
  local title=$1 fn=$2 t0 rc log
  # E2E_ONLY=REGEX runs only the checks whose function names match (others are not counted).
  [[ -z ${E2E_ONLY:-} || $fn =~ $E2E_ONLY ]] || return 0
  log="$E2E_DIR/logs/check-$fn.log"
  t0=$(now)
  set +e
  (
    set -e
    "$fn"
  ) >"$log" 2>&1
  rc=$?
  set -e
  local t
  t=$(elapsed "$t0")
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    RESULTS+=("PASS  ${t}s  $title")
    printf 'PASS  %6ss  %s\n' "$t" "$title"
  elif ((rc == 77)); then
    SKIPPED=$((SKIPPED + 1))
    RESULTS+=("SKIP  ${t}s  $title: $(tail -n 1 "$log")")
    printf 'SKIP  %6ss  %s: %s\n' "$t" "$title" "$(tail -n 1 "$log")"
  else
    FAILED=$((FAILED + 1))
    RESULTS+=("FAIL  ${t}s  $title")
    printf 'FAIL  %6ss  %s\n' "$t" "$title"
    sed 's/^/      | /' "$log" | tail -n 40
  fi
}

# Fail the current check with a message.
fail() {
  say "FAILED: $*"
  exit 1
}

# Copy a contrib file and substitute the example values for the test servers, then prove
# the substitution really happened (a changed contrib file must not silently test nothing).
contrib_copy() {
  local src="$E2E_ROOT/contrib/$1" dst=$2
  shift 2
  sed "$@" "$src" >"$dst"
  if grep -nE 'office365|you@example\.com|you%40example\.com|mailtoken token work|"token", "work"|^ACCOUNT=work|--account work' "$dst"; then
    fail "contrib/$(basename "$src"): the lines above were not adapted to the test servers"
  fi
}


# Seconds until the stored access token of an account is due for a refresh (may be < 0).
seconds_until_due() {
  local exp
  exp=$(store_field "$1" expires_at)
  echo $((exp - E2E_MARGIN - $(date +%s)))
}

# --- the checks --------------------------------------------------------------------------

check_device_login() {
  device_login e2e
  local token
  token=$(mailtoken token e2e)
  [[ -n $token ]] || fail "empty token"
  say "introspection: $(introspect "$token")"
  imap_login "$token" || fail "IMAP (curl --oauth2-bearer) refused a fresh token"
  say "curl IMAP login with the token: ok"
  # The SASL strings mailtoken prints for scripts, sent as they are.
  imap_sasl XOAUTH2 "$(mailtoken token e2e --format xoauth2)" || fail "XOAUTH2 string refused"
  imap_sasl OAUTHBEARER "$(mailtoken token e2e --format oauthbearer --host 127.0.0.1 --port "$IMAP_PORT")" ||
    fail "OAUTHBEARER string refused"
  say "AUTHENTICATE XOAUTH2 and OAUTHBEARER with mailtoken's --format strings: ok"
  imap_login_refused "${token}x" || fail "IMAP did not refuse a wrong token"
  imap_login_refused "$token" bob@example.test || fail "IMAP did not refuse alice's token for bob"
  say "wrong token and wrong user refused: ok"
  # mailtoken's own IMAP client, both mechanisms.
  mailtoken check e2e --imap
  mailtoken check e2e --imap --mech oauthbearer
}

check_refresh_rotation() {
  local at1 rt1 at2 rt2 wait refreshes
  at1=$(mailtoken token e2e)
  rt1=$(store_field e2e refresh_token)
  [[ -n $rt1 ]] || fail "no refresh token stored after the device login"
  # Past the access token's real expiry (not just into the refresh margin).
  wait=$(($(store_field e2e expires_at) - $(date +%s) + 1))
  say "waiting ${wait}s for the access token to expire"
  ((wait > 0 && wait <= E2E_AT_TTL + 2)) && sleep "$wait"
  imap_login_refused "$at1" || fail "Dovecot did not refuse the expired access token"
  say "expired token refused by Dovecot: ok"
  refreshes=$(grant_count refresh_token)
  at2=$(mailtoken token e2e)
  rt2=$(store_field e2e refresh_token)
  [[ $at2 != "$at1" ]] || fail "mailtoken printed the expired token"
  [[ $(grant_count refresh_token) == $((refreshes + 1)) ]] || fail "expected exactly one refresh grant"
  [[ -n $rt2 && $rt2 != "$rt1" ]] || fail "the refresh token was not rotated in the store"
  imap_login "$at2" || fail "IMAP refused the refreshed token"
  say "refreshed (one refresh grant), new refresh token stored, IMAP login ok"
  # The old refresh token is dead at the provider.
  local reply
  reply=$(curl -sS --max-time 10 -w ' HTTP %{http_code}' -d grant_type=refresh_token \
    -d client_id=mailtoken-e2e --data-urlencode "refresh_token=$rt1" "$ISSUER/token")
  say "old refresh token: $reply"
  [[ $reply == *invalid_grant*"HTTP 400" ]] || fail "the provider did not refuse the old refresh token"
  # Replaying a rotated refresh token makes oidc-provider revoke the whole grant (reuse
  # detection, RFC 9700 4.14.2): mailtoken must now say a new login is needed (exit 3).
  local rc=0
  mailtoken token e2e --force-refresh >/dev/null 2>"$E2E_DIR/tmp/revoked.err" || rc=$?
  say "after reuse detection: mailtoken token --force-refresh exit $rc: $(cat "$E2E_DIR/tmp/revoked.err")"
  ((rc == 3)) || fail "expected exit 3 (login needed) once the grant is revoked, got $rc"
  [[ $(store_field e2e refresh_token) == "$rt2" ]] || fail "the store changed after a refused refresh"
  # Log in again for the checks that follow.
  device_login e2e
  imap_login "$(mailtoken token e2e)" || fail "IMAP refused the token of the new login"
}

check_msmtp() {
  contrib_copy msmtprc "$HOME/.msmtprc" "${CONTRIB_SED[@]}" -e "s/^port 587$/port $SUBMISSION_PORT/"
  chmod 600 "$HOME/.msmtprc"
  local subject="e2e msmtp $RANDOM$RANDOM"
  printf 'From: %s\nTo: %s\nSubject: %s\n\nSent by msmtp with a token from mailtoken.\n' \
    "$E2E_USER" "$E2E_USER" "$subject" |
    timeout 60 msmtp -a work "$E2E_USER" || {
    cat "$HOME/.msmtp.log" || true
    fail "msmtp could not send"
  }
  say "msmtp log: $(tail -n 1 "$HOME/.msmtp.log")"
  imap_read_back "$subject" | grep -F "Subject: $subject"
  echo "$subject" >"$E2E_DIR/tmp/msmtp-subject"
}

check_send_test() {
  # (Not `mailtoken --help | grep -q`: with pipefail, grep quitting early could fail the pipe.)
  local help
  help=$(mailtoken --help)
  if [[ $help != *send-test* ]]; then
    say "SKIP: mailtoken has no send-test command yet"
    exit 77
  fi
  local subject="e2e send-test $RANDOM$RANDOM"
  timeout 60 mailtoken send-test e2e --to "$E2E_USER" --subject "$subject"
  imap_read_back "$subject" | grep -F "Subject: $subject"
  subject="e2e send-test oauthbearer $RANDOM$RANDOM"
  timeout 60 mailtoken send-test e2e --to "$E2E_USER" --subject "$subject" --mech oauthbearer
  imap_read_back "$subject" | grep -F "Subject: $subject"
}

check_mutt() {
  local rc="$HOME/.muttrc"
  contrib_copy muttrc "$rc" "${CONTRIB_SED[@]}" \
    -e "s#imaps://127\.0\.0\.1:993/#imaps://127.0.0.1:$IMAPS_PORT/#" \
    -e "s#@127\.0\.0\.1:587/#@127.0.0.1:$SUBMISSION_PORT/#"
  grep -q "imaps://127.0.0.1:$IMAPS_PORT/" "$rc" || fail "muttrc: IMAP URL not adapted"
  # Test-only additions: trust the test CA; no caches in $HOME; no mailbox prompts.
  cat >>"$rc" <<EOF
set ssl_ca_certificates_file = "$E2E_DIR/tls/ca.pem"
set header_cache = ""
set message_cachedir = ""
set record = ""
set postpone = no
set move = no
EOF
  # 1. Send with mutt's batch mode through SMTP submission (XOAUTH2 with the token).
  local subject="e2e mutt $RANDOM$RANDOM"
  echo "Sent by mutt in batch mode with a token from mailtoken." |
    timeout 60 mutt -F "$rc" -s "$subject" -- "$E2E_USER" || fail "mutt could not send"
  imap_read_back "$subject" | grep -F "Subject: $subject"
  say "mutt sent a message through SMTP submission: ok"
  # 2. Open the INBOX in a real terminal (tmux) and look for both messages on the screen.
  local tmux_sock="$E2E_DIR/tmux.sock" msmtp_subject
  msmtp_subject=$(cat "$E2E_DIR/tmp/msmtp-subject" 2>/dev/null || echo "$subject")
  tmux -S "$tmux_sock" new-session -d -x 200 -y 50 "TERM=xterm mutt -F '$rc'; sleep 5"
  local screen="" i
  for i in $(seq 60); do
    screen=$(tmux -S "$tmux_sock" capture-pane -p 2>/dev/null || true)
    [[ $screen == *"$subject"* && $screen == *"$msmtp_subject"* ]] && break
    sleep 0.5
  done
  tmux -S "$tmux_sock" send-keys q 2>/dev/null || true
  echo "$screen" | grep -v '^\s*$' | head -n 20
  [[ $screen == *"$subject"* ]] || fail "mutt's INBOX does not show \"$subject\""
  [[ $screen == *"$msmtp_subject"* ]] || fail "mutt's INBOX does not show \"$msmtp_subject\""
  tmux -S "$tmux_sock" kill-server 2>/dev/null || true
  say "mutt opened the INBOX over IMAPS with XOAUTH2: ok"
}

check_mbsync() {
  local rc="$HOME/.mbsyncrc" maildir="$HOME/Mail/work"
  contrib_copy mbsyncrc "$rc" "${CONTRIB_SED[@]}" -e "s/^Port 993$/Port $IMAPS_PORT/" \
    -e "s|^# CertificateFile /path/to/private-ca.pem$|CertificateFile $E2E_DIR/tls/ca.pem|"
  grep -q "^Port $IMAPS_PORT$" "$rc" || fail "mbsyncrc: port not adapted"
  grep -q "^CertificateFile $E2E_DIR/tls/ca.pem$" "$rc" || fail "mbsyncrc: CA not adapted"
  mkdir -p "$maildir"
  timeout 60 mbsync -V work || fail "mbsync failed"
  # The message msmtp sent in check 3; or, if that check failed, any message of this run.
  local subject="e2e "
  [[ -f $E2E_DIR/tmp/msmtp-subject ]] && subject=$(cat "$E2E_DIR/tmp/msmtp-subject")
  grep -rlF "Subject: $subject" "$maildir/INBOX" || fail "no \"$subject\" message in $maildir/INBOX"
  say "mbsync synced the INBOX to $maildir over IMAPS with XOAUTH2: ok"
}

check_storm() {
  local n=16 wait before
  # Make sure there is a stored token, then wait until it is due for a refresh.
  mailtoken token e2e >/dev/null
  wait=$(seconds_until_due e2e)
  say "waiting $((wait + 1))s until the access token is due"
  ((wait + 1 <= E2E_AT_TTL)) || fail "implausible wait ${wait}s"
  ((wait >= 0)) && sleep $((wait + 1))
  before=$(grant_count refresh_token)
  local dir="$E2E_DIR/tmp/storm" i
  mkdir -p "$dir"
  for i in $(seq "$n"); do
    (
      token=$(mailtoken token e2e) || exit 1
      printf '%s\n' "$token" >"$dir/$i.token"
      imap_login "$token" && touch "$dir/$i.ok"
    ) >"$dir/$i.log" 2>&1 &
  done
  wait
  local oks tokens refreshes
  oks=$(find "$dir" -name '*.ok' | wc -l)
  tokens=$(cat "$dir"/*.token 2>/dev/null | sort -u | wc -l)
  refreshes=$(($(grant_count refresh_token) - before))
  say "$n clients: $oks IMAP logins ok, $tokens distinct token(s), $refreshes refresh grant(s)"
  ((oks == n)) || {
    cat "$dir"/*.log
    fail "not every IMAP login succeeded"
  }
  ((tokens == 1)) || fail "the clients got different tokens"
  [[ $(cat "$dir/1.token") == "$(store_field e2e access_token)" ]] || fail "the printed token is not the stored one"
  ((refreshes == 1)) || fail "the provider saw $refreshes refresh grants, expected exactly 1"
}

# The issue that found it: with the default refresh_margin (300 s) and tokens of a minute,
# every call refreshed and a storm made one grant per client. The margin applied is at most
# half a token's life, and a token stored while a caller waited is used as it is.
check_short_lived_tokens() {
  local cfg="$E2E_DIR/tmp/config-margin-300.toml" n=16 before after dir="$E2E_DIR/tmp/storm300" i
  sed 's/^refresh_margin = .*/refresh_margin = 300/' "$MAILTOKEN_CONFIG" >"$cfg"
  chmod 600 "$cfg"
  mkdir -p "$dir"
  MAILTOKEN_CONFIG=$cfg mailtoken token e2e --force-refresh >/dev/null
  before=$(grant_count refresh_token)
  for i in $(seq "$n"); do
    MAILTOKEN_CONFIG=$cfg mailtoken token e2e >"$dir/$i.token" 2>"$dir/$i.log" &
  done
  wait
  after=$(grant_count refresh_token)
  say "right after a refresh, $n callers with refresh_margin = 300 and ${E2E_AT_TTL}s tokens: $((after - before)) refresh grant(s)"
  ((after == before)) || fail "a fresh ${E2E_AT_TTL}s token was refreshed again"
  # Past half its life, one storm makes one grant.
  sleep $((E2E_AT_TTL / 2 + 1))
  before=$(grant_count refresh_token)
  for i in $(seq "$n"); do
    MAILTOKEN_CONFIG=$cfg mailtoken token e2e >"$dir/$i.token" 2>"$dir/$i.log" &
  done
  wait
  after=$(grant_count refresh_token)
  local tokens
  tokens=$(cat "$dir"/*.token | sort -u | wc -l)
  say "past half its life: $n callers, $((after - before)) refresh grant(s), $tokens distinct token(s)"
  ((after - before == 1)) || fail "expected exactly 1 refresh grant, the provider saw $((after - before))"
  ((tokens == 1)) || fail "the callers got different tokens"
}

check_browser_login() {
  local log="$E2E_DIR/logs/login-e2e2"
  timeout 90 mailtoken login e2e2 --browser --no-open >"$log.out" 2>"$log.err" &
  local pid=$!
  # The address is printed before mailtoken starts to wait for the redirect.
  wait_for 20 grep -q "$ISSUER/auth?" "$log.err" || {
    kill "$pid" 2>/dev/null || true
    cat "$log.err"
    fail "mailtoken printed no authorization URL"
  }
  local url
  url=$(grep -o "$ISSUER/auth?[^[:space:]]*" "$log.err" | head -n 1)
  [[ $url == *code_challenge=*code_challenge_method=S256* ]] || fail "no PKCE in $url"
  say "authorization URL: $url"
  node "$E2E_HERE/approve.mjs" "$url" --login "$E2E_USER" --password "$E2E_PASSWORD" || {
    kill "$pid" 2>/dev/null || true
    fail "the approver could not complete the login"
  }
  wait "$pid" || {
    cat "$log.err"
    fail "mailtoken login --browser failed"
  }
  cat "$log.err"
  local token
  token=$(mailtoken token e2e2)
  say "introspection: $(introspect "$token")"
  imap_login "$token" || fail "IMAP refused the browser-flow token"
  say "IMAP login with the browser-flow token: ok"
  # OIDC servers drop offline_access unless consent is prompted for: the login must still be
  # renewable, or it would end with the first access token.
  [[ -n $(store_field e2e2 refresh_token) ]] || fail "the browser login stored no refresh token"
  say "the browser login stored a refresh token"
}

check_relogin() {
  local heard="$E2E_DIR/tmp/notified-relogin" err="$E2E_DIR/tmp/relogin.err" rc=0 rt uri code token
  device_login e2e-relogin || fail "the first device login failed"
  rt=$(store_field e2e-relogin refresh_token)
  # The login dies at the provider, as an admin's revocation or a password change ends it.
  curl -fsS --max-time 10 -d client_id=mailtoken-e2e -d token_type_hint=refresh_token \
    --data-urlencode "token=$rt" "$ISSUER/token/revocation" || fail "the revocation was refused"
  mailtoken token e2e-relogin --force-refresh >/dev/null 2>"$err" || rc=$?
  say "the call that found the login dead: exit $rc: $(cat "$err")"
  ((rc == 3)) || fail "expected exit 3"
  grep -q "A new login was started in the background: open $ISSUER/device" "$err" ||
    fail "the call did not say where to approve the new login"
  wait_for 15 grep -qx MAILTOKEN_EVENT=login-started "$heard" || fail "notify_command heard no login-started"
  uri=$(sed -n 's/^MAILTOKEN_VERIFICATION_URI=//p' "$heard" | tail -n 1)
  code=$(sed -n 's/^MAILTOKEN_USER_CODE=//p' "$heard" | tail -n 1)
  [[ -n $uri && -n $code ]] || fail "the notifier got no address or code: $(cat "$heard")"
  grep -qF "enter the code $code" "$err" || fail "the call and the notifier name different codes"
  # Meanwhile every call that needs the dead login points at the same new one (the access
  # token of the old login is still good until it expires); status shows it.
  rc=0
  mailtoken token e2e-relogin --force-refresh >/dev/null 2>"$err" || rc=$?
  ((rc == 3)) && grep -q "is waiting for approval" "$err" || fail "a second call did not find the waiting login: $(cat "$err")"
  mailtoken status e2e-relogin | grep "new login:" || fail "status does not show the waiting login"
  say "approving from what the notifier heard: $uri, code $code"
  node "$E2E_HERE/approve.mjs" "$uri" --user-code "$code" --login "$E2E_USER" --password "$E2E_PASSWORD" ||
    fail "the approver could not complete the login"
  wait_for 30 bash -c "[[ \$(node -e 'console.log(require(process.argv[1]).refresh_token ?? \"\")' \
    '$MAILTOKEN_DATA_DIR/e2e-relogin.json') != '$rt' ]]" || fail "the background login stored no new login"
  token=$(mailtoken token e2e-relogin)
  [[ $(introspect "$token") == *'"active":true'* ]] || fail "the new access token is not active"
  imap_login "$token" || fail "IMAP refused the token of the background login"
  wait_for 15 grep -qx MAILTOKEN_EVENT=login-done "$heard" || fail "notify_command heard no login-done"
  [[ $(store_field e2e-relogin refresh_token) != "$rt" ]] || fail "the revoked refresh token is still stored"
  ! grep -qF "$rt" "$heard" || fail "the notifier saw a refresh token"
  say "the background login was approved from the notification; IMAP login with its token: ok"
}

check_client_credentials() {
  mailtoken login e2e-app
  local token reply
  token=$(mailtoken token e2e-app)
  reply=$(introspect "$token")
  say "introspection: $reply"
  [[ $reply == *'"active":true'* ]] || fail "introspection says the app token is not active"
  [[ $reply == *'"client_id":"mailtoken-e2e-app"'* ]] || fail "the token is not the app's"
  # An app-only token has no mail user: Dovecot refuses it for alice.
  imap_login_refused "$token" || fail "Dovecot did not refuse an app-only token for a user"
  # A client registered for client_secret_basic (oidc-provider refuses the form for it).
  token=$(mailtoken token e2e-app-basic)
  reply=$(introspect "$token")
  [[ $reply == *'"client_id":"mailtoken-e2e-app-basic"'* ]] || fail "no token by client_secret_basic: $reply"
  say "client_secret_basic: a token for mailtoken-e2e-app-basic"
  # And a wrong client secret gives no token.
  local rc=0
  E2E_APP_SECRET=wrong mailtoken token e2e-app --force-refresh >/dev/null 2>"$E2E_DIR/tmp/app.err" || rc=$?
  say "wrong client secret: exit $rc: $(cat "$E2E_DIR/tmp/app.err")"
  # invalid_client: the configured secret is wrong, a config error (2) or a new login (3).
  ((rc == 2 || rc == 3)) || fail "expected exit 2 or 3 for a wrong client secret, got $rc"
}

# The subject of the message msmtp sent in check 3; or, if that check failed, any message of
# this run.
test_subject() {
  if [[ -f $E2E_DIR/tmp/msmtp-subject ]]; then cat "$E2E_DIR/tmp/msmtp-subject"; else echo "e2e "; fi
}

check_getmail() {
  # getmail6's default place: $XDG_CONFIG_HOME/getmail/getmailrc.
  local dir="$XDG_CONFIG_HOME/getmail" maildir="$HOME/Mail/getmail" subject
  mkdir -p "$dir" "$maildir"/{cur,new,tmp}
  # Test-only: the suite runs as root and getmail refuses to deliver as root, so it delivers
  # as nobody (a user runs getmail as themselves and needs no `user`).
  contrib_copy getmailrc "$dir/getmailrc" "${CONTRIB_SED[@]}" -e "s/^port = 993$/port = $IMAPS_PORT/" \
    -e 's#^path = ~/Mail/work/$#path = ~/Mail/getmail/\nuser = nobody#'
  grep -q "^port = $IMAPS_PORT$" "$dir/getmailrc" || fail "getmailrc: port not adapted"
  grep -q "^ca_certs = $E2E_DIR/tls/ca.pem$" "$dir/getmailrc" || fail "getmailrc: ca_certs not adapted"
  chown -R nobody:nogroup "$maildir"
  # ca_certs makes getmail check the certificate: with the system CAs it must refuse ours.
  sed "s#^ca_certs = .*#ca_certs = /etc/ssl/certs/ca-certificates.crt#" "$dir/getmailrc" >"$dir/wrong-ca"
  local out rc=0
  out=$(timeout 60 getmail --rcfile wrong-ca 2>&1) || rc=$?
  say "getmail with the system CAs: exit $rc: $out"
  [[ $out == *CERTIFICATE_VERIFY_FAILED* ]] || fail "getmail did not check the server certificate"
  timeout 60 getmail -v || fail "getmail failed"
  subject=$(test_subject)
  grep -rlF "Subject: $subject" "$maildir/new" || fail "no \"$subject\" message in $maildir/new"
  say "getmail retrieved the INBOX into $maildir over IMAPS with XOAUTH2: ok"
}

check_offlineimap() {
  local rc="$HOME/.offlineimaprc" maildir="$HOME/Mail/offlineimap" subject
  # Test-only: trust the test CA (the user's value is OS-DEFAULT, the system CAs); a Maildir
  # of its own, apart from mbsync's.
  contrib_copy offlineimaprc "$rc" "${CONTRIB_SED[@]}" -e "s/^remoteport = 993$/remoteport = $IMAPS_PORT/" \
    -e "s#^sslcacertfile = OS-DEFAULT\$#sslcacertfile = $E2E_DIR/tls/ca.pem#" \
    -e 's#^localfolders = ~/Mail/work$#localfolders = ~/Mail/offlineimap#'
  grep -q "^remoteport = $IMAPS_PORT$" "$rc" || fail "offlineimaprc: port not adapted"
  grep -q "^sslcacertfile = $E2E_DIR/tls/ca.pem$" "$rc" || fail "offlineimaprc: CA not adapted"
  timeout 90 offlineimap -o -u basic || fail "offlineimap failed"
  subject=$(test_subject)
  grep -rlF "Subject: $subject" "$maildir/INBOX" || fail "no \"$subject\" message in $maildir/INBOX"
  say "offlineimap synced the INBOX to $maildir over IMAPS with XOAUTH2: ok"
}

check_fetchmail() {
  local script="$E2E_DIR/bin/fetchmail-oauth" out="$E2E_DIR/tmp/fetchmail.bsmtp" subject version
  # Test-only: trust the test CA (a user's fetchmail uses the system CAs).
  contrib_copy fetchmail-oauth "$script" "${CONTRIB_SED[@]}" -e "s/ port 993 / port $IMAPS_PORT /" \
    -e "s#^  ssl sslcertck\$#  ssl sslcertck sslcertfile \"$E2E_DIR/tls/ca.pem\"#"
  grep -q " port $IMAPS_PORT " "$script" || fail "fetchmail-oauth: port not adapted"
  grep -q "sslcertfile \"$E2E_DIR/tls/ca.pem\"" "$script" || fail "fetchmail-oauth: CA not adapted"
  chmod 755 "$script"
  version=$(fetchmail --version 2>/dev/null | sed -n 's/^This is fetchmail release \([^+ ]*\).*/\1/p')
  # -V: fetchmail parses the run-control file and shows it, and fetches nothing.
  local parsed rc=0
  parsed=$(timeout 60 fetchmail-oauth -V --nosyslog 2>&1) || rc=$?
  if [[ $parsed == *"syntax error at oauthbearer"* ]]; then
    say "fetchmail $version has no OAUTHBEARER/XOAUTH2 (\"syntax error at oauthbearer\"; needs 6.5)"
    exit 77
  fi
  ((rc == 0)) || {
    echo "$parsed"
    fail "fetchmail could not parse the run-control file (exit $rc)"
  }
  # Deliver into a BSMTP file, keep the messages on the server, fetch seen ones too.
  timeout 90 fetchmail-oauth -v --nosyslog --keep --all --bsmtp "$out" || fail "fetchmail failed"
  subject=$(test_subject)
  grep -F "Subject: $subject" "$out" || fail "no \"$subject\" message in $out"
  say "fetchmail $version fetched over IMAPS with OAUTHBEARER: ok"
}

check_aerc() {
  local conf="$XDG_CONFIG_HOME/aerc/accounts.conf" subject
  mkdir -p "$(dirname "$conf")"
  contrib_copy aerc-accounts.conf "$conf" "${CONTRIB_SED[@]}" \
    -e "s/@127\.0\.0\.1:993\$/@127.0.0.1:$IMAPS_PORT/" -e "s/@127\.0\.0\.1:587\$/@127.0.0.1:$SUBMISSION_PORT/"
  grep -q "@127.0.0.1:$IMAPS_PORT$" "$conf" || fail "aerc accounts.conf: IMAP port not adapted"
  chmod 600 "$conf"
  subject=$(test_subject)
  # aerc is a Go program: SSL_CERT_FILE makes it trust the test CA (test-only).
  local tmux_sock="$E2E_DIR/tmux.sock" screen="" i
  tmux -S "$tmux_sock" new-session -d -x 200 -y 50 \
    "SSL_CERT_FILE='$E2E_DIR/tls/ca.pem' TERM=xterm-256color aerc 2>'$E2E_DIR/logs/aerc.err'; sleep 5"
  for i in $(seq 60); do
    screen=$(tmux -S "$tmux_sock" capture-pane -p 2>/dev/null || true)
    [[ $screen == *"$subject"* ]] && break
    sleep 0.5
  done
  tmux -S "$tmux_sock" send-keys ':quit' Enter 2>/dev/null || true
  echo "$screen" | grep -v '^\s*$' | head -n 20
  tmux -S "$tmux_sock" kill-server 2>/dev/null || true
  [[ $screen == *"$subject"* ]] || fail "aerc's INBOX does not show \"$subject\""
  say "aerc opened the INBOX over IMAPS with XOAUTH2 (source-cred-cmd): ok"
}

check_git_send_email() {
  local cfg="$E2E_DIR/tmp/gitconfig" repo="$E2E_DIR/tmp/git-repo" subject="e2e git send-email $RANDOM$RANDOM"
  contrib_copy gitconfig "$cfg" "${CONTRIB_SED[@]}" -e "s/\b587\b/$SUBMISSION_PORT/g"
  grep -q "smtp://127.0.0.1:$SUBMISSION_PORT" "$cfg" || fail "gitconfig: credential URL not adapted"
  # Test-only: trust the test CA (git send-email uses the system CAs by default).
  sed -i "/^\tsmtpAuth = /a \\\tsmtpSSLCertPath = $E2E_DIR/tls/ca.pem" "$cfg"
  export GIT_CONFIG_GLOBAL=$cfg GIT_CONFIG_NOSYSTEM=1
  export GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=$E2E_USER GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=$E2E_USER
  git init -q "$repo"
  git -C "$repo" commit -q --allow-empty -m "$subject"
  local out rc=0
  out=$(cd "$repo" && timeout 60 git send-email --confirm=never --suppress-cc=all --to "$E2E_USER" -1 2>&1) || rc=$?
  echo "$out"
  if ((rc != 0)) && [[ $out == *"No SASL mechanism found"* ]] &&
    ! perl -MAuthen::SASL::Perl::XOAUTH2 -e 1 2>/dev/null; then
    say "Authen::SASL $(perl -MAuthen::SASL -e 'print $Authen::SASL::VERSION') has no XOAUTH2 (\"No SASL mechanism found\" after STARTTLS)"
    exit 77
  fi
  ((rc == 0)) || fail "git send-email failed (exit $rc)"
  imap_read_back "$subject" | grep -F "Subject: [PATCH] $subject"
}

# --- through mailtoken proxy: programs that can only send a password -----------------------

# Start `mailtoken proxy` for the account e2e (IMAP, POP and SMTP on ports of its own) with a copy
# of the config that has a [proxy] section (plus the lines in $1); stopped by proxy_down.
# The name programs log in to the proxy with: the account's name, since e2e and e2e2 are two
# logins to the same mailbox (the same user), and the proxy never guesses between them.
PROXY_LOGIN=e2e

proxy_up() {
  local cfg="$E2E_DIR/tmp/proxy-config.toml"
  read -r PROXY_IMAP PROXY_POP PROXY_SMTP <<<"$(e2e_free_ports 3)"
  { cat "$MAILTOKEN_CONFIG"; printf '\n[proxy]\nimap = "127.0.0.1:%s"\npop = "127.0.0.1:%s"\nsmtp = "127.0.0.1:%s"\n%s\n' "$PROXY_IMAP" "$PROXY_POP" "$PROXY_SMTP" "${1:-}"; } >"$cfg"
  chmod 600 "$cfg"
  MAILTOKEN_CONFIG=$cfg command mailtoken proxy 2>"$E2E_DIR/logs/proxy.err" &
  PROXY_PID=$!
  trap 'kill $PROXY_PID 2>/dev/null || true' EXIT
  wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PROXY_IMAP" || fail "the proxy did not listen"
  say "mailtoken proxy: IMAP on 127.0.0.1:$PROXY_IMAP, POP on 127.0.0.1:$PROXY_POP, SMTP on 127.0.0.1:$PROXY_SMTP"
}

proxy_down() {
  kill -TERM "$PROXY_PID"
  wait "$PROXY_PID" || fail "the proxy did not stop cleanly on SIGTERM"
  cat "$E2E_DIR/logs/proxy.err"
  # -e: a token may start with a dash.
  ! grep -qF -e "$(store_field e2e access_token)" "$E2E_DIR/logs/proxy.err" || fail "the proxy log holds the token"
}

check_proxy_fetchmail() {
  proxy_up
  local rc="$E2E_DIR/tmp/fetchmailrc" out subject protocol port
  subject=$(test_subject)
  for protocol in IMAP POP3; do
    port=$PROXY_IMAP
    [[ $protocol == POP3 ]] && port=$PROXY_POP
    out="$E2E_DIR/tmp/proxy-fetchmail-$protocol.bsmtp"
    # Any password: the proxy serves its own user and logs in upstream with the token.
    printf 'poll 127.0.0.1 service %s protocol %s\n  user "%s" password "not-a-real-password" sslproto '"''"'\n' \
      "$port" "$protocol" "$PROXY_LOGIN" >"$rc"
    chmod 600 "$rc"
    timeout 90 fetchmail -f "$rc" -v --nosyslog --keep --all --bsmtp "$out" || fail "fetchmail ($protocol) failed"
    grep -F "Subject: $subject" "$out" || fail "no \"$subject\" message in $out"
    say "fetchmail $(fetchmail --version 2>/dev/null | sed -n 's/^This is fetchmail release \([^+ ]*\).*/\1/p') fetched over $protocol through the proxy: ok"
  done
  proxy_down
}

check_proxy_git_send_email() {
  proxy_up
  local repo="$E2E_DIR/tmp/proxy-git-repo" subject="e2e proxy git send-email $RANDOM$RANDOM"
  export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
  export GIT_AUTHOR_NAME=e2e GIT_AUTHOR_EMAIL=$E2E_USER GIT_COMMITTER_NAME=e2e GIT_COMMITTER_EMAIL=$E2E_USER
  git init -q "$repo"
  git -C "$repo" commit -q --allow-empty -m "$subject"
  (cd "$repo" && timeout 60 git -c sendemail.smtpServer=127.0.0.1 -c sendemail.smtpServerPort="$PROXY_SMTP" \
    -c sendemail.smtpEncryption=none -c sendemail.smtpUser="$PROXY_LOGIN" -c sendemail.smtpPass=any \
    -c sendemail.smtpAuth=PLAIN send-email --confirm=never --suppress-cc=all --to "$E2E_USER" -1) ||
    fail "git send-email through the proxy failed"
  imap_read_back "$subject" | grep -F "Subject: [PATCH] $subject"
  proxy_down
}

# Postfix as a relay client (relayhost + SASL password, as contrib/proxy/README.md sets it
# up): an instance of its own under $E2E_DIR, no SMTP listener; a message handed to its
# sendmail goes through the proxy to Dovecot's submission port and back through IMAP.
# Postfix's SMTP client runs as the user postfix, not as the proxy's user: it gets in with
# the local password only.
check_proxy_postfix() {
  command -v postfix >/dev/null || fail "postfix is not installed"
  local dir="$E2E_DIR/postfix" subject="e2e postfix via proxy $RANDOM$RANDOM" hash
  hash=$(printf 'the-local-password\n' | mailtoken proxy --hash-password)
  proxy_up "password_hash = \"$hash\""
  mkdir -p "$dir/queue" "$dir/data"
  chown postfix "$dir/data"
  printf '[127.0.0.1]:%s %s:the-local-password\n' "$PROXY_SMTP" "$PROXY_LOGIN" >"$dir/sasl_passwd"
  chmod 600 "$dir/sasl_passwd"
  cat >"$dir/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file_prefixes = $E2E_DIR/logs
maillog_file = $E2E_DIR/logs/postfix.log
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = client.e2e.test
mydestination =
relayhost = [127.0.0.1]:$PROXY_SMTP
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:$dir/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_tls_security_level = none
EOF
  # Debian's services, without the SMTP listener (nothing to receive) and out of chroot
  # (the SASL plugins live outside the queue directory).
  grep -v '^smtp \+inet ' /usr/share/postfix/master.cf.dist >"$dir/master.cf"
  postconf -c "$dir" -F '*/*/chroot = n'
  # Postfix's own commands report only to syslog, or to a terminal: script(1) is one.
  script -qec "postfix -c $dir start" /dev/null || fail "postfix did not start"
  trap "postfix -c '$dir' stop >/dev/null 2>&1 || true; kill $PROXY_PID 2>/dev/null || true" EXIT
  printf 'From: %s\nTo: %s\nSubject: %s\n\nsent by Postfix through mailtoken proxy\n' \
    "$E2E_USER" "$E2E_USER" "$subject" | sendmail -C "$dir" -f "$E2E_USER" "$E2E_USER" ||
    fail "postfix's sendmail refused the message"
  imap_read_back "$subject" | grep -F "Subject: $subject" || {
    cat "$E2E_DIR/logs/postfix.log"
    fail "the message Postfix relayed did not arrive"
  }
  grep -F "status=sent (250" "$E2E_DIR/logs/postfix.log"
  postfix -c "$dir" stop
  proxy_down
  grep -F "smtp 127.0.0.1" "$E2E_DIR/logs/proxy.err" | grep -F "e2e: logged in" ||
    fail "the proxy's log has no SMTP login"
}

check_proxy_concurrent() {
  proxy_up
  local n=100 dir="$E2E_DIR/tmp/proxy-many" i before oks pids=()
  mkdir -p "$dir"
  before=$(grant_count refresh_token)
  for i in $(seq "$n"); do
    { curl -sS --max-time 60 --user "$PROXY_LOGIN:any" "imap://127.0.0.1:$PROXY_IMAP/INBOX" \
      -X 'EXAMINE INBOX' >"$dir/$i.out" 2>"$dir/$i.err" && touch "$dir/$i.ok"; } &
    pids+=($!)
  done
  # Not a bare `wait`: the proxy is a background job of this shell too.
  wait "${pids[@]}"
  oks=$(find "$dir" -name '*.ok' | wc -l)
  say "$n concurrent IMAP sessions through the proxy: $oks ok, $(($(grant_count refresh_token) - before)) refresh grant(s)"
  ((oks == n)) || { cat "$dir"/*.err | sort | uniq -c; fail "not every session got through"; }
  proxy_down
}

# A web page in the user's own browser (headless Chromium, a page on 127.0.0.1) POSTs a login
# and what follows it to the proxy's SMTP, POP and IMAP ports, as fetch() with mode no-cors
# can: no preflight, the browser's own request line and headers, the attack in the body. The
# proxy must shut each session at the request line: no login upstream, no message sent, no
# message deleted.
check_proxy_browser() {
  command -v chromium >/dev/null || fail "chromium is not installed"
  proxy_up
  local dir="$E2E_DIR/tmp/web" port subject before after plain shut web
  subject="e2e sent by a web page $RANDOM$RANDOM"
  mkdir -p "$dir"
  plain=$(printf '\0%s\0anything' "$PROXY_LOGIN" | base64 -w0)
  before=$(imap_messages)
  cat >"$dir/attack.html" <<EOF
<!doctype html><title>attack</title><pre id="out">running</pre><script>
const targets = {
  smtp: [$PROXY_SMTP, "EHLO x\r\nAUTH PLAIN $plain\r\nMAIL FROM:<$E2E_USER>\r\nRCPT TO:<$E2E_USER>\r\nDATA\r\nSubject: $subject\r\n\r\nhi\r\n.\r\nQUIT\r\n"],
  pop: [$PROXY_POP, "USER $PROXY_LOGIN\r\nPASS anything\r\nDELE 1\r\nQUIT\r\n"],
  imap: [$PROXY_IMAP, "a1 LOGIN $PROXY_LOGIN anything\r\na2 SELECT INBOX\r\na3 STORE 1 +FLAGS (\\\\Deleted)\r\na4 EXPUNGE\r\n"],
};
Promise.allSettled(Object.entries(targets).map(([name, [port, body]]) =>
  fetch("http://127.0.0.1:" + port + "/", {method: "POST", mode: "no-cors", body})
    .then(() => name + ": answered", (e) => name + ": " + e)))
  .then((results) => { document.getElementById("out").textContent = results.map((r) => r.value).join("; "); });
</script>
EOF
  read -r port <<<"$(e2e_free_ports 1)"
  python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$E2E_DIR/logs/web.log" 2>&1 &
  web=$!
  trap "kill $PROXY_PID $web 2>/dev/null || true" EXIT
  wait_for 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || fail "the page server did not listen"
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$dir/profile" --virtual-time-budget=15000 --dump-dom \
    "http://127.0.0.1:$port/attack.html" >"$dir/dom.html" 2>"$E2E_DIR/logs/chromium.log" || true
  kill "$web"
  say "the page says: $(grep -o '<pre id="out">[^<]*' "$dir/dom.html" | sed 's/.*>//')"
  grep -q "smtp: " "$dir/dom.html" || fail "the page's fetches did not finish (see logs/chromium.log)"
  proxy_down
  shut=$(grep -c "shut out: an HTTP request" "$E2E_DIR/logs/proxy.err" || true)
  ((shut >= 3)) || fail "the proxy shut $shut browser session(s), not the 3 the page opened"
  ! grep -F "logged in" "$E2E_DIR/logs/proxy.err" || fail "a browser session logged in upstream"
  ! imap_read_back "$subject" || fail "the page's message was delivered"
  after=$(imap_messages)
  ((after == before)) || fail "the INBOX went from $before to $after messages"
  say "the browser reached the proxy $shut times; nothing was logged in, sent or deleted (INBOX: $after messages)"
}

# Drive a program in tmux: answer the prompts it shows (a table of screen text -> keys) until
# `done` shows on the screen, for at most `secs` seconds.
tmux_until() {
  local sock=$1 done=$2 secs=$3 screen i
  shift 3
  for ((i = 0; i < secs * 4; i++)); do
    screen=$(tmux -S "$sock" capture-pane -p 2>/dev/null || true)
    # TMUX_FORBID: a regex for what must never show (a warning), checked on every screen.
    if [[ -n ${TMUX_FORBID:-} && $screen =~ $TMUX_FORBID ]]; then
      echo "$screen"
      say "the screen showed \"${BASH_REMATCH[0]}\""
      return 2
    fi
    [[ $screen == *"$done"* ]] && return 0
    local pair
    for pair in "$@"; do
      if [[ $screen == *"${pair%%=>*}"* ]]; then
        # shellcheck disable=SC2086
        tmux -S "$sock" send-keys ${pair#*=>}
        sleep 0.5
        break
      fi
    done
    sleep 0.25
  done
  echo "$screen"
  return 1
}

check_proxy_alpine() {
  command -v alpine >/dev/null || { say "alpine is not installed"; exit 77; }
  proxy_up
  local home="$E2E_DIR/tmp/alpine-home" sock="$E2E_DIR/tmux-alpine.sock" subject sent
  subject=$(test_subject)
  sent="e2e alpine $RANDOM$RANDOM"
  mkdir -p "$home"
  cat >"$home/.pinerc" <<EOF
personal-name=e2e
user-domain=${E2E_USER#*@}
inbox-path={127.0.0.1:$PROXY_IMAP/user=$PROXY_LOGIN/notls}INBOX
smtp-server=127.0.0.1:$PROXY_SMTP/user=$PROXY_LOGIN/notls
feature-list=quit-without-confirm
EOF
  trap 'kill $PROXY_PID 2>/dev/null || true; tmux -S "'"$sock"'" kill-server 2>/dev/null || true' EXIT
  HOME=$home tmux -S "$sock" new-session -d -x 200 -y 50 "alpine -i"
  # Any password will do: the proxy serves its own user.
  local answers=("Exit this greeting=>E" "ENTER PASSWORD=>any Enter" "Preserve password=>n"
    "Create?=>y" "Send message?=>y")
  # A person who takes 75 s at the first password prompt, with the proxy's default deadline:
  # Alpine connects first and asks afterwards.
  tmux_until "$sock" "ENTER PASSWORD" 60 "Exit this greeting=>E" || fail "Alpine never asked for the password"
  say "Alpine asks for the password; typing it 75 s later"
  sleep 75
  tmux -S "$sock" send-keys any Enter
  tmux_until "$sock" "$subject" 60 "${answers[@]}" || fail "Alpine did not show \"$subject\" in the INBOX"
  say "Alpine opened the INBOX through the proxy and lists \"$subject\""
  tmux -S "$sock" send-keys c
  tmux_until "$sock" "COMPOSE MESSAGE" 20 || fail "Alpine did not open the composer"
  tmux -S "$sock" send-keys "$E2E_USER" Enter Enter Enter "$sent" Enter "sent by Alpine through mailtoken proxy" C-x
  # Back at the message index, the message is sent (the status line about it is brief).
  tmux_until "$sock" "MESSAGE INDEX" 60 "${answers[@]}" || fail "Alpine did not send"
  tmux -S "$sock" kill-server
  imap_read_back "$sent" | grep -F "Subject: $sent"
  say "Alpine sent \"$sent\" through the proxy (SMTP AUTH), read back over IMAP"
  proxy_down
}

# Alpine over the proxy's own TLS, with the certificate `mailtoken proxy --make-certificate`
# makes and its CA trusted for Alpine alone (SSL_CERT_FILE): IMAP over TLS from the first byte,
# SMTP with STARTTLS, to "localhost", with no /novalidate-cert. Alpine must show none of its
# warnings (the insecure-AUTH=PLAIN "SECURITY PROBLEM", "(INSECURE)", a certificate question).
check_proxy_alpine_tls() {
  command -v alpine >/dev/null || { say "alpine is not installed"; exit 77; }
  local home="$E2E_DIR/tmp/alpine-tls-home" sock="$E2E_DIR/tmux-alpine-tls.sock" subject sent
  local made imaps
  made=$(mailtoken proxy --make-certificate 2>&1) || fail "--make-certificate failed: $made"
  say "$made"
  local cert key ca
  cert=$(sed -n 's/^ *tls_certificate = "\(.*\)"$/\1/p' <<<"$made")
  key=$(sed -n 's/^ *tls_key = "\(.*\)"$/\1/p' <<<"$made")
  ca=$(sed -n 's/^ *SSL_CERT_FILE=\([^ ]*\) alpine$/\1/p' <<<"$made")
  [[ -f $cert && -f $key && -f $ca ]] || fail "the printed paths are not files: '$cert' '$key' '$ca'"
  [[ $(stat -c %a "$key") == 600 ]] || fail "the key is not 0600"
  ! grep -q "PRIVATE KEY" "$ca" "$cert" || fail "a certificate file holds a private key"
  read -r imaps <<<"$(e2e_free_ports 1)"
  proxy_up "tls_certificate = \"$cert\"
tls_key = \"$key\"
imaps = \"127.0.0.1:$imaps\""
  subject=$(test_subject)
  sent="e2e alpine tls $RANDOM$RANDOM"
  mkdir -p "$home"
  cat >"$home/.pinerc" <<EOF
personal-name=e2e
user-domain=${E2E_USER#*@}
inbox-path={localhost:$imaps/ssl/user=$PROXY_LOGIN}INBOX
smtp-server=localhost:$PROXY_SMTP/tls/user=$PROXY_LOGIN
feature-list=quit-without-confirm
EOF
  trap "kill $PROXY_PID 2>/dev/null || true; tmux -S '$sock' kill-server 2>/dev/null || true" EXIT
  HOME=$home SSL_CERT_FILE=$ca tmux -S "$sock" new-session -d -x 200 -y 50 "alpine -i"
  local answers=("Exit this greeting=>E" "ENTER PASSWORD=>any Enter" "Preserve password=>n"
    "Create?=>y" "Send message?=>y")
  TMUX_FORBID='SECURITY PROBLEM|INSECURE|[Cc]ertificate|[Vv]alidat'
  tmux_until "$sock" "$subject" 60 "${answers[@]}" || fail "Alpine did not show \"$subject\" over TLS without a warning"
  say "Alpine opened the INBOX over the proxy's TLS (localhost, certificate verified) and lists \"$subject\""
  tmux -S "$sock" send-keys c
  tmux_until "$sock" "COMPOSE MESSAGE" 20 || fail "Alpine did not open the composer"
  tmux -S "$sock" send-keys "$E2E_USER" Enter Enter Enter "$sent" Enter "sent by Alpine over TLS through mailtoken proxy" C-x
  tmux_until "$sock" "MESSAGE INDEX" 60 "${answers[@]}" || fail "Alpine did not send over STARTTLS without a warning"
  TMUX_FORBID=
  tmux -S "$sock" kill-server
  imap_read_back "$sent" | grep -F "Subject: $sent"
  say "Alpine sent \"$sent\" through the proxy with STARTTLS, read back over IMAP"
  proxy_down
}

# --- main --------------------------------------------------------------------------------

T_START=$(now)
e2e_install_packages
e2e_install_node
e2e_build
e2e_start_all
# The example values of the contrib files, and what they become for the test servers.
CONTRIB_SED=(
  -e "s/you@example\.com/$E2E_USER/g"
  -e "s/outlook\.office365\.com/127.0.0.1/g"
  -e "s/smtp\.office365\.com/127.0.0.1/g"
  -e "s/mailtoken token work/mailtoken token e2e/g"
  -e "s#/etc/ssl/certs/ca-certificates\.crt#$E2E_DIR/tls/ca.pem#g"
  # The same, as the other contrib files spell them.
  -e "s/you%40example\.com/${E2E_USER/@/%40}/g"
  -e 's/"token", "work"/"token", "e2e"/g'
  -e 's/^ACCOUNT=work$/ACCOUNT=e2e/'
  -e 's/--account work/--account e2e/g'
)

if [[ $MODE == serve ]]; then
  cat <<EOF

The e2e servers are running (Ctrl-C stops them and removes $E2E_DIR):

  OAuth2/OIDC issuer   $ISSUER   (grant counts: $ISSUER/_e2e/grants)
  IMAP                 127.0.0.1:$IMAP_PORT (plain), 127.0.0.1:$IMAPS_PORT (TLS)
  SMTP submission      127.0.0.1:$SUBMISSION_PORT (STARTTLS optional)
  TLS CA certificate   $E2E_DIR/tls/ca.pem
  test user            $E2E_USER / $E2E_PASSWORD (the login page of the OAuth server)
  access tokens live   ${E2E_AT_TTL}s; refresh_margin = $E2E_MARGIN

mailtoken config: $MAILTOKEN_CONFIG
  accounts: e2e (device flow), e2e2 (browser flow), e2e-app (client credentials)

In another shell:
  source $E2E_DIR/env.sh
  mailtoken login e2e          # open the printed URL, sign in as $E2E_USER
  mailtoken token e2e
  curl -u '$E2E_USER:' --oauth2-bearer "\$(mailtoken token e2e)" imap://127.0.0.1:$IMAP_PORT/
  mailtoken send-test e2e --to $E2E_USER
Or approve a device login without a browser:
  node $E2E_HERE/approve.mjs URL --user-code CODE --login $E2E_USER --password $E2E_PASSWORD
Logs: $E2E_DIR/logs/
EOF
  # Wait for Ctrl-C (or SIGTERM); `wait` returns at once on a signal, and the EXIT trap
  # stops the servers and this sleep.
  sleep infinity &
  E2E_PIDS+=($!)
  wait $!
fi

say "e2e: servers up in $(elapsed "$T_START")s (state in $E2E_DIR)"
check "1. device login; IMAP XOAUTH2/OAUTHBEARER with the token; wrong token refused" check_device_login
check "2. refresh after expiry with rotation; old refresh token refused" check_refresh_rotation
check "3. msmtp with contrib/msmtprc sends; read back over IMAP" check_msmtp
check "4. mailtoken send-test delivers; read back over IMAP" check_send_test
check "5a. mutt with contrib/muttrc sends (SMTP) and opens the INBOX (IMAPS)" check_mutt
check "5b. mbsync with contrib/mbsyncrc syncs the INBOX to a Maildir" check_mbsync
check "6. 16 concurrent clients at expiry: one refresh grant, every login ok" check_storm
check "6b. default-size margin (300 s) with short tokens: one grant per expiry, none while fresh" check_short_lived_tokens
check "7a. browser login (authorization code + PKCE, loopback redirect); IMAP login" check_browser_login
check "7b. client credentials (client_secret_env; in the form and by Basic); token active at introspection" check_client_credentials
check "7c. relogin = device: a revoked login starts a background device login, approved from notify_command's code" check_relogin
check "8a. getmail6 with contrib/getmailrc retrieves the INBOX into a Maildir (IMAPS)" check_getmail
check "8b. offlineimap with contrib/offlineimaprc syncs the INBOX to a Maildir (IMAPS)" check_offlineimap
check "8c. fetchmail with contrib/fetchmail-oauth fetches (IMAPS, auth oauthbearer)" check_fetchmail
check "9a. fetchmail with a plain password, through mailtoken proxy (IMAP and POP3)" check_proxy_fetchmail
check "8d. aerc with contrib/aerc-accounts.conf opens the INBOX (IMAPS, xoauth2) in tmux" check_aerc
check "8e. git send-email with contrib/gitconfig sends (SMTP STARTTLS, XOAUTH2)" check_git_send_email
check "9b. git send-email with a plain password (AUTH PLAIN), through mailtoken proxy" check_proxy_git_send_email
check "9c. 100 concurrent IMAP sessions (curl) through mailtoken proxy" check_proxy_concurrent
check "9d. Alpine reads the INBOX (password typed after 75 s) and sends, through mailtoken proxy (tmux)" check_proxy_alpine
check "9g. Alpine over the proxy's own TLS (--make-certificate, its CA trusted): no warning" check_proxy_alpine_tls
check "9f. a web page's fetch() to the proxy (headless Chromium) logs in nowhere" check_proxy_browser
check "9e. Postfix relays through mailtoken proxy (relayhost, SASL password as user postfix)" check_proxy_postfix

echo
printf '%s\n' "${RESULTS[@]}"
echo "total $(elapsed "$T_START")s"
if ((SKIPPED > 0)); then echo "($SKIPPED skipped)"; fi
echo "e2e: $PASSED passed, $FAILED failed"
((FAILED == 0))
