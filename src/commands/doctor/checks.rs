//! doctor's checks that need no I/O of their own: each takes what was read and says what is
//! wrong with it. Tested directly.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{Account, Config, OpenAccount, Relogin};
use crate::oauth::discovery;
use crate::provider::{self, Flow, Provider};
use crate::store::Tokens;
use crate::time;

use super::findings::{Finding, Severity};
// Microsoft ends a login unused this long: a provider fact, kept in provider.rs.
use crate::provider::MICROSOFT_UNUSED_LOGIN_ENDS as MICROSOFT_INACTIVITY;

/// Warn this long before that.
pub const INACTIVITY_WARNING: u64 = 14 * 86_400;
/// Clock skew that tokens tolerate (JWT `nbf`/`exp` checks allow about five minutes).
pub const SKEW_ERROR: u64 = 300;
pub const SKEW_WARNING: u64 = 60;

/// A config that does not load, with the line: TOML errors carry one, account checks name
/// the account, whose `[accounts.NAME]` header we find.
pub fn config_error(path: &Path, text: &str, error: &str) -> Finding {
    let mut what = format!("{} does not load: {error}", path.display());
    if !error.contains("line ")
        && let Some(name) = error
            .split("account `")
            .nth(1)
            .and_then(|r| r.split('`').next())
        && let Some(line) = header_line(text, name)
    {
        what = format!("{} line {line}: {error}", path.display());
    }
    Finding::new(Severity::Error, None, what)
        .why("no command can use the accounts until the file loads")
        .fix("correct the file at that line (`mailtoken` reads TOML; unknown keys are refused)")
        .usage()
}

fn header_line(text: &str, name: &str) -> Option<usize> {
    let plain = format!("[accounts.{name}]");
    let quoted = format!("[accounts.\"{name}\"]");
    text.lines()
        .position(|l| {
            let l = l.trim();
            l == plain || l == quoted
        })
        .map(|i| i + 1)
}

/// Token store modes: the directory private (0700), token files private (0600).
pub fn mode_finding(path: &Path, mode: u32, is_dir: bool) -> Option<Finding> {
    if mode & 0o077 == 0 {
        return None;
    }
    let want = if is_dir { 0o700 } else { 0o600 };
    Some(
        Finding::new(
            Severity::Error,
            None,
            format!(
                "{} is accessible to other users (mode {:03o})",
                path.display(),
                mode & 0o777
            ),
        )
        .why("token files hold refresh tokens: anyone who reads one can read your mail")
        .fix(format!(
            "chmod {want:o} {}; if others may have read it, log in again to replace the tokens",
            path.display()
        )),
    )
}

/// A `tls_ca_file` that cannot be read or holds no certificate: every TLS connection of the
/// account would fail on it.
pub fn ca_file_findings(name: &str, account: &Account) -> Vec<Finding> {
    account
        .tls_ca_file()
        .and_then(|path| crate::tls::ca_certificates(&path).err())
        .map(|e| Finding::new(Severity::Error, Some(name), format!("{e:#}")))
        .into_iter()
        .collect()
}

/// `relogin = "device"` with nobody to tell: the background login's address and code would
/// reach the person only through the failing call's error, which a mail program may not show.
pub fn relogin_finding(acct: &OpenAccount) -> Option<Finding> {
    (acct.account.relogin == Some(Relogin::Device) && acct.notify.is_none()).then(|| {
        Finding::new(
            Severity::Warning,
            Some(&acct.name),
            "relogin = \"device\" without notify_command",
        )
        .why("the background login's address and code reach you only in the error of the call that starts it, which a mail program may not show")
        .fix("set notify_command (contrib/notify/mailtoken-notify: a desktop notification, a push to a phone, a mail)")
    })
}

/// A client id still as the README's examples have it: no token server knows it.
pub fn placeholder_finding(name: &str, account: &Account) -> Option<Finding> {
    let id = account.client_id.as_str();
    (id.starts_with("YOUR-") || id.contains("YOUR-ID") || id == "YOUR_CLIENT_ID").then(|| {
        Finding::new(
            Severity::Error,
            Some(name),
            format!("client_id is the example's placeholder `{id}`"),
        )
        .why("the token server knows no such app: every login and refresh is refused")
        .fix("register an app (README: Microsoft, Google) and put its client id in the account")
    })
}

/// Flow and scopes that contradict each other, and scopes a provider needs or refuses.
pub fn scope_findings(name: &str, account: &Account) -> Vec<Finding> {
    let mut out = Vec::new();
    let Ok(scopes) = account.scopes() else {
        return out;
    };
    let flow = account.flow();
    let app_only_scope = scopes.iter().find(|s| s.ends_with("/.default"));
    let n = Some(name);
    if !account.services.is_empty() && !account.scopes.is_empty() {
        out.push(
            Finding::new(Severity::Error, n, "both `services` and `scopes` are set")
                .why("the scopes are asked for and the services ignored, so the login may not cover the mail servers meant")
                .fix("keep one: `services` for the provider's scopes, or `scopes` with every scope the login needs"),
        );
    }
    match (flow, app_only_scope) {
        (Flow::Device | Flow::Browser, Some(scope)) => out.push(
            Finding::new(
                Severity::Warning,
                n,
                format!("scope `{scope}` is an app-only (/.default) scope, but the login is a user login ({flow:?})"),
            )
            .why("with a user login, /.default grants whatever delegated permissions the app registration lists, which is rarely what was meant")
            .fix("for a user mailbox use delegated scopes (services = [\"imap\", \"smtp\"]); for app-only access set flow = \"credentials\""),
        ),
        // The /.default rule is Microsoft's; other servers name app-only scopes as they like.
        (Flow::Credentials, None) if account.provider == Provider::Microsoft => out.push(
            Finding::new(
                Severity::Error,
                n,
                "flow = \"credentials\" (app-only) with delegated scopes",
            )
            .why("client credentials can only ask for RESOURCE/.default scopes; delegated ones are refused")
            .fix(format!(
                "use scopes = [\"{}\"] (or the Graph one), or a user flow (device/browser)",
                provider::microsoft_app_scope(account.site().cloud)
            )),
        ),
        _ => {}
    }
    let has_offline = scopes.iter().any(|s| s == "offline_access");
    if flow == Flow::Credentials && has_offline {
        out.push(
            Finding::new(Severity::Error, n, "offline_access with client credentials")
                .why("app-only logins get no refresh token; the server refuses the scope")
                .fix("remove offline_access from `scopes`"),
        );
    }
    if account.provider == Provider::Microsoft && flow != Flow::Credentials && !has_offline {
        out.push(
            Finding::new(
                Severity::Error,
                n,
                "offline_access is missing from the scopes",
            )
            .why("without it Microsoft sends no refresh token, so the login lasts about an hour")
            .fix("add \"offline_access\" to `scopes` (or use `services`), then log in again"),
        );
    }
    if account.provider == Provider::Google && has_offline {
        out.push(
            Finding::new(
                Severity::Error,
                n,
                "offline_access in the scopes of a Google account",
            )
            .why("Google does not know this scope and refuses the login")
            .fix("remove it: Google sends refresh tokens without it"),
        );
    }
    if account.provider == Provider::Google && flow == Flow::Device {
        out.push(
            Finding::new(Severity::Error, n, "Google account with the device flow")
                .why("Google does not allow the Gmail scope on its device flow")
                .fix("set flow = \"browser\" (or remove `flow`)"),
        );
    }
    if account.user.is_none() {
        out.push(
            Finding::new(Severity::Warning, n, "no `user` in the account")
                .why("IMAP/SMTP XOAUTH2 and OAUTHBEARER need the mailbox address")
                .fix("add user = \"you@example.com\" to the account"),
        );
    }
    out
}

/// The way in when the tenant blocks the device-code login, and how to make it the default.
pub fn browser_default(name: &str) -> String {
    format!(
        "`mailtoken login {name} --browser`; to make the browser login the default, set \
         flow = \"browser\" in [accounts.{name}] (a Microsoft app registration then needs the \
         \"Mobile and desktop applications\" platform with the redirect URI http://localhost)"
    )
}

/// The fix for an account that is not logged in. Microsoft tenants may block the device-code
/// login (Conditional Access): the way around is said before it is needed.
pub fn login_fix(name: &str, account: &Account) -> String {
    if account.provider == Provider::Microsoft && account.flow() == Flow::Device {
        format!(
            "`mailtoken login {name}` (if the tenant blocks the device-code login: {})",
            browser_default(name)
        )
    } else {
        format!("`mailtoken login {name}`")
    }
}

/// The fix for a login the provider refused, by what it said: a device-code login that the
/// tenant's Conditional Access refuses is replaced by a browser login.
pub fn refused_fix(name: &str, account: &Account, refusal: &str) -> String {
    let blocked = crate::oauth::aadsts_in_body(refusal.as_bytes())
        .and_then(crate::flows::device::Blocked::code);
    match blocked {
        Some(_) if account.flow() == Flow::Device => browser_default(name),
        _ => format!("`mailtoken login {name}`"),
    }
}

/// What the stored login says: logged in, renewable, the scopes granted.
pub fn token_findings(name: &str, account: &Account, tokens: &Tokens, now: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let n = Some(name);
    if account.flow() == Flow::Credentials {
        return out;
    }
    if tokens.refresh_token.is_none() {
        let expired = tokens.access.as_ref().is_none_or(|a| a.expires_at <= now);
        let f = Finding::new(
            if expired { Severity::Error } else { Severity::Warning },
            n,
            if expired {
                "the access token expired and there is no refresh token".to_string()
            } else {
                "there is no refresh token".to_string()
            },
        )
        .why("without one, a new login is needed every time the access token expires")
        .fix(format!(
            "make sure the scopes allow refresh (offline_access for Microsoft), then `mailtoken login {name}`"
        ));
        out.push(f);
    }
    if let (Some(granted), Ok(wanted)) = (
        tokens.access.as_ref().and_then(|a| a.scope.as_deref()),
        account.scopes(),
    ) {
        let granted: BTreeSet<String> = granted
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        // Servers answer with the permissions behind /.default, and Microsoft names Graph
        // permissions without their resource URL: compare the full scope or its last part.
        let was_granted = |s: &str| {
            let s = s.to_ascii_lowercase();
            let short = s.rsplit('/').next().unwrap_or(&s).to_string();
            granted.contains(&s) || granted.contains(&short)
        };
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|s| {
                !matches!(
                    s.as_str(),
                    "offline_access" | "openid" | "profile" | "email"
                )
            })
            .filter(|s| !s.ends_with("/.default") && !was_granted(s))
            .collect();
        if !missing.is_empty() {
            out.push(
                Finding::new(
                    Severity::Warning,
                    n,
                    format!(
                        "the stored token was not granted {}",
                        missing.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                    ),
                )
                .why("the config asks for scopes the last login did not get (changed config, or consent not given)")
                .fix(format!("`mailtoken login {name}` again (an admin may have to grant consent)")),
            );
        }
    }
    out
}

/// Microsoft drops a refresh token that has not been used for 90 days. The token file is
/// rewritten each time the refresh token is used, so its age is the time since last use.
pub fn inactivity_finding(name: &str, last_used: Option<u64>, now: u64) -> Option<Finding> {
    let n = Some(name);
    let Some(last) = last_used else {
        return Some(
            Finding::new(Severity::Warning, n, "when the refresh token was last used is unknown")
                .why("Microsoft revokes refresh tokens unused for 90 days; the store keeps no refreshed_at time and the file's time is unreadable")
                .fix(format!("run `mailtoken token {name} --force-refresh` now and then (e.g. from cron)")),
        );
    };
    let age = now.saturating_sub(last);
    let days = age / 86_400;
    if age >= MICROSOFT_INACTIVITY {
        Some(
            Finding::new(
                Severity::Error,
                n,
                format!("the refresh token was last used {days} days ago"),
            )
            .why("Microsoft revokes refresh tokens unused for 90 days: it has most likely expired")
            .fix(format!(
                "`mailtoken login {name}`; afterwards use the account at least monthly"
            )),
        )
    } else if age + INACTIVITY_WARNING >= MICROSOFT_INACTIVITY {
        Some(
            Finding::new(
                Severity::Warning,
                n,
                format!("the refresh token was last used {days} days ago"),
            )
            .why(format!(
                "Microsoft revokes refresh tokens unused for 90 days: {} days left",
                (MICROSOFT_INACTIVITY - age) / 86_400
            ))
            .fix(format!(
                "`mailtoken token {name} --force-refresh` renews it now"
            )),
        )
    } else {
        None
    }
}

pub fn skew_finding(url: &str, local: u64, server_date: &str) -> Option<Finding> {
    let Some(remote) = time::parse_http_date(server_date) else {
        return Some(
            Finding::new(
                Severity::Warning,
                None,
                format!("cannot read the clock of {url} (Date: {server_date})"),
            )
            .why("the clock check needs the server's Date header")
            .fix("none needed if `mailtoken token` works"),
        );
    };
    let skew = local.abs_diff(remote);
    if skew < SKEW_WARNING {
        return None;
    }
    let ahead = if local > remote { "ahead of" } else { "behind" };
    Some(
        Finding::new(
            if skew >= SKEW_ERROR { Severity::Error } else { Severity::Warning },
            None,
            format!("this machine's clock is {} {ahead} {url}", time::format_span(skew)),
        )
        .why("tokens carry issue and expiry times: a wrong clock makes them look expired or not yet valid, and refreshes happen at the wrong moment")
        .fix("turn on time synchronisation (e.g. `timedatectl set-ntp true`)"),
    )
}

/// The URL whose server clock matters: the token endpoint, or the issuer's discovery document.
pub fn token_server(account: &Account) -> Option<String> {
    account
        .configured_endpoints()
        .token
        .or_else(|| account.issuer.as_deref().map(discovery::url))
}

/// What would make `mailtoken proxy` refuse a login, or refuse to start.
pub fn proxy_findings(config: &Config) -> Vec<Finding> {
    let Some(proxy) = &config.proxy else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (user, names) in config.shared_users() {
        out.push(
            Finding::new(
                Severity::Warning,
                None,
                format!("accounts {} share the user {user}", names.join(", ")),
            )
            .why("a program that logs in to the proxy with that user is refused: the proxy never guesses which account")
            .fix(format!("log in to the proxy with the account's name (`{}`) instead of the user", names[0])),
        );
    }
    let guarded = proxy.tls_certificate.is_some() && proxy.password_hash.is_some();
    for (key, addr) in [
        ("imap", &proxy.imap),
        ("pop", &proxy.pop),
        ("smtp", &proxy.smtp),
        ("imaps", &proxy.imaps),
        ("pops", &proxy.pops),
        ("smtps", &proxy.smtps),
    ] {
        let Some(addr) = addr else { continue };
        match addr.parse::<std::net::SocketAddr>() {
            Err(_) => out.push(
                Finding::new(
                    Severity::Error,
                    None,
                    format!("[proxy] {key} = \"{addr}\" is not an address and port"),
                )
                .why("the proxy refuses to start")
                .fix(format!("write it like \"127.0.0.1:1143\" ({key})"))
                .usage(),
            ),
            Ok(parsed) if !parsed.ip().is_loopback() && !guarded => out.push(
                Finding::new(
                    Severity::Error,
                    None,
                    format!("[proxy] {key} = \"{addr}\" listens off this machine without local TLS and a password"),
                )
                .why("the proxy refuses to start: the mailbox would be open to anyone who can connect")
                .fix("set tls_certificate, tls_key and password_hash in [proxy], or listen on 127.0.0.1")
                .usage(),
            ),
            Ok(_) => {}
        }
    }
    if let Some(hash) = &proxy.password_hash
        && let Err(why) = crate::proxy::check_password_hash(hash)
    {
        out.push(
            Finding::new(
                Severity::Error,
                None,
                format!("[proxy] password_hash is not a usable hash ({why})"),
            )
            .why("the proxy refuses to start with it")
            .fix("make one with `mailtoken proxy --hash-password` and paste its whole output")
            .usage(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unusable_ca_file_is_an_error_a_good_one_is_not() {
        let account = |extra: &str| {
            crate::config::Config::parse(&format!(
                "[accounts.a]\nprovider = \"generic\"\nclient_id = \"c\"\n\
                 token_endpoint = \"https://id.example.com/t\"\nscopes = [\"mail\"]\n{extra}"
            ))
            .unwrap()
            .accounts
            .remove("a")
            .unwrap()
        };
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let good = account(&format!("tls_ca_file = \"{fixtures}/private-ca.pem\""));
        assert!(super::ca_file_findings("a", &good).is_empty());
        let bad = account(&format!("tls_ca_file = \"{fixtures}/README.md\""));
        let found = super::ca_file_findings("a", &bad);
        assert_eq!(found.len(), 1);
        assert!(
            format!("{:?}", found[0]).contains("holds no certificate"),
            "{found:?}"
        );
        assert!(super::ca_file_findings("a", &account("")).is_empty());
    }

    use super::*;

    fn account(toml: &str) -> Account {
        let text = format!("[accounts.a]\nclient_id = \"x\"\nuser = \"u@x.com\"\n{toml}\n");
        Config::parse(&text).unwrap().accounts["a"].clone()
    }

    fn whats(f: &[Finding]) -> Vec<String> {
        f.iter().map(|f| f.what.clone()).collect()
    }

    #[test]
    fn a_blocked_device_login_is_answered_with_the_browser_default() {
        let device = account("provider = \"microsoft\"");
        let browser = account("provider = \"microsoft\"\nflow = \"browser\"");
        let refusal = "refreshing the access token was refused: invalid_grant (AADSTS53003: \
                       Access has been blocked by Conditional Access policies.)";
        let fix = refused_fix("a", &device, refusal);
        assert!(fix.contains("mailtoken login a --browser"), "{fix}");
        assert!(fix.contains("flow = \"browser\" in [accounts.a]"), "{fix}");
        assert!(fix.contains("Mobile and desktop applications"), "{fix}");
        assert_eq!(refused_fix("a", &browser, refusal), "`mailtoken login a`");
        let expired = "refreshing the access token was refused: invalid_grant (AADSTS70000)";
        assert_eq!(refused_fix("a", &device, expired), "`mailtoken login a`");
        // Before any login, a Microsoft device-flow account is told the way around a block.
        assert!(login_fix("a", &device).contains("flow = \"browser\""));
        assert_eq!(login_fix("a", &browser), "`mailtoken login a`");
    }

    #[test]
    fn clock_skew_levels() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let t = 784_111_777;
        assert_eq!(skew_finding("u", t + 10, date), None);
        assert_eq!(
            skew_finding("u", t + 120, date).unwrap().severity,
            Severity::Warning
        );
        let f = skew_finding("u", t - 3600, date).unwrap();
        assert_eq!(f.severity, Severity::Error);
        assert!(f.what.contains("1 h 0 min behind"), "{}", f.what);
        assert_eq!(
            skew_finding("u", t, "junk").unwrap().severity,
            Severity::Warning
        );
    }

    #[test]
    fn microsoft_needs_offline_access_and_flows_match_scopes() {
        let ok = account("provider = \"microsoft\"");
        assert!(
            scope_findings("a", &ok).is_empty(),
            "{:?}",
            scope_findings("a", &ok)
        );
        let no_offline = account(
            "provider = \"microsoft\"\nscopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\"]",
        );
        assert_eq!(
            whats(&scope_findings("a", &no_offline)),
            ["offline_access is missing from the scopes"]
        );
        let default_with_user_flow = account(
            "provider = \"microsoft\"\nscopes = [\"https://outlook.office365.com/.default\", \"offline_access\"]",
        );
        let f = scope_findings("a", &default_with_user_flow);
        assert_eq!(f.len(), 1);
        assert!(f[0].what.contains("app-only"), "{:?}", f);
        let generic_app_delegated = account(
            "provider = \"generic\"\nflow = \"credentials\"\ntoken_endpoint = \"https://t\"\nclient_secret_env = \"S\"\nscopes = [\"mail\", \"offline_access\"]",
        );
        // Only Microsoft's app-only scopes end in /.default; a generic server's may not.
        let f = whats(&scope_findings("a", &generic_app_delegated));
        assert!(!f.iter().any(|w| w.contains("delegated")), "{f:?}");
        assert!(
            f.iter().any(|w| w.contains("offline_access with client")),
            "{f:?}"
        );
        let microsoft_app_delegated = account(
            "provider = \"microsoft\"\nflow = \"credentials\"\nclient_secret_env = \"S\"\nscopes = [\"https://outlook.office365.com/.default\"]",
        );
        assert!(scope_findings("a", &microsoft_app_delegated).is_empty());
        let google = account(
            "provider = \"google\"\nflow = \"device\"\nscopes = [\"https://mail.google.com/\", \"offline_access\"]",
        );
        assert_eq!(scope_findings("a", &google).len(), 2);
        let both = account(
            "provider = \"google\"\nservices = [\"imap\"]\nscopes = [\"https://mail.google.com/\"]",
        );
        assert_eq!(
            whats(&scope_findings("a", &both)),
            ["both `services` and `scopes` are set"]
        );
    }

    #[test]
    fn stored_tokens() {
        let a = account("provider = \"microsoft\"");
        let t = |json: &str| crate::store::parse(json.as_bytes()).unwrap();
        let good = t(
            r#"{"version":1,"access_token":"x","token_type":"Bearer","expires_at":100,"refresh_token":"r","scope":"https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send"}"#,
        );
        assert!(token_findings("a", &a, &good, 200).is_empty());
        let expired_no_rt =
            t(r#"{"version":1,"access_token":"x","token_type":"Bearer","expires_at":100}"#);
        let f = token_findings("a", &a, &expired_no_rt, 200);
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(
            token_findings("a", &a, &expired_no_rt, 50)[0].severity,
            Severity::Warning
        );
        let narrow = t(
            r#"{"version":1,"access_token":"x","token_type":"Bearer","expires_at":100,"refresh_token":"r","scope":"https://outlook.office.com/IMAP.AccessAsUser.All"}"#,
        );
        let f = token_findings("a", &a, &narrow, 0);
        assert!(f[0].what.contains("SMTP.Send"), "{f:?}");
        let graph = account(
            "provider = \"microsoft\"\nscopes = [\"https://graph.microsoft.com/Mail.Send\", \"offline_access\"]",
        );
        let short = t(
            r#"{"version":1,"access_token":"x","token_type":"Bearer","expires_at":100,"refresh_token":"r","scope":"Mail.Send openid"}"#,
        );
        assert!(token_findings("a", &graph, &short, 0).is_empty());
    }

    #[test]
    fn inactivity() {
        let day = 86_400;
        let now = 1000 * day;
        assert_eq!(inactivity_finding("a", Some(now - 10 * day), now), None);
        assert_eq!(
            inactivity_finding("a", Some(now - 80 * day), now)
                .unwrap()
                .severity,
            Severity::Warning
        );
        assert_eq!(
            inactivity_finding("a", Some(now - 95 * day), now)
                .unwrap()
                .severity,
            Severity::Error
        );
        assert!(
            inactivity_finding("a", None, now)
                .unwrap()
                .what
                .contains("unknown")
        );
    }

    #[test]
    fn config_errors_name_the_line() {
        let text = "[accounts.good]\nprovider = \"google\"\nclient_id = \"x\"\n\n[accounts.bad]\nprovider = \"google\"\nclient_id = \"\"\n";
        let err = format!("{:#}", Config::parse(text).unwrap_err());
        let f = config_error(Path::new("c.toml"), text, &err);
        assert!(f.what.contains("c.toml line 5"), "{}", f.what);
        let text = "[accounts.a]\nprovider = \"google\"\nclinet_id = \"x\"\n";
        let err = format!("{:#}", Config::parse(text).unwrap_err());
        let f = config_error(Path::new("c.toml"), text, &err);
        assert!(f.what.contains("line 3"), "{}", f.what);
    }

    #[test]
    fn modes() {
        assert!(mode_finding(Path::new("/d"), 0o700, true).is_none());
        let f = mode_finding(Path::new("/d/a.json"), 0o100644, false).unwrap();
        assert!(
            f.what.contains("mode 644") && f.fix.contains("chmod 600"),
            "{f:?}"
        );
    }
}
