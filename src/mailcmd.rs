//! Thin handlers for the commands that prove a setup works: `send-test`, `check`, `whoami`,
//! `doctor`. Each loads what it needs, gets a token, and calls the protocol module.

use anyhow::{Result, anyhow};

use crate::cli::{CheckArgs, SendTestArgs, Via};
use crate::config::{Account, Config, Paths};
use crate::doctor::{self, Severity};
use crate::error::{self, usage};
use crate::http::Http;
use crate::mech::Mech;
use crate::provider::{self, Flow, Provider, Service};
use crate::servers::{self, service_name};
use crate::store::{AccessToken, fingerprint};
use crate::token::{self, AccountRef, Want};
use crate::{graph, imap, pop, smtp, time, whoami};

fn with_account<T>(
    paths: &Paths,
    name: &str,
    f: impl FnOnce(&AccountRef) -> Result<T>,
) -> Result<T> {
    let config = Config::load(&paths.config)?;
    let account = config.account(name)?;
    let store = paths.store_for(account);
    f(&AccountRef {
        name,
        account,
        config: &config,
        store: &store,
    })
}

fn own_token(acct: &AccountRef) -> Result<AccessToken> {
    token::get(acct, &Want::own(acct.account)?, false)
}

fn user<'a>(name: &str, account: &'a Account) -> Result<&'a str> {
    account.user.as_deref().ok_or_else(|| {
        usage(format!(
            "account `{name}` has no `user`: mail servers need the mailbox address; add user = \"...\""
        ))
    })
}

fn test_body(name: &str, how: &str) -> String {
    format!(
        "This is a test message sent by `mailtoken send-test {name}` {how} at {}.\n\
         If you can read it, the account's OAuth2 setup works.\n",
        time::format_utc(time::now())
    )
}

pub fn send_test(paths: &Paths, args: &SendTestArgs) -> Result<()> {
    with_account(paths, &args.account, |acct| match args.via {
        Via::Smtp => {
            let from = user(acct.name, acct.account)?;
            let srv = servers::server(acct.account, Service::Smtp)?;
            let token = own_token(acct)?;
            let mail = smtp::TestMail {
                from,
                to: &args.to,
                subject: &args.subject,
                body: test_body(
                    acct.name,
                    &format!("via SMTP {srv} with {}", args.mech.name()),
                ),
            };
            smtp::send(&srv, &token.access_token, args.mech, &mail)?;
            eprintln!(
                "Sent: the SMTP server accepted the message for {}.",
                args.to
            );
            Ok(())
        }
        Via::Graph => {
            if args.mech != Mech::Xoauth2 {
                return Err(usage("--mech applies to SMTP only, not to --via graph"));
            }
            let want = graph::want(acct.name, acct.account)?;
            let app_only = app_only_user(acct)?;
            let url = graph::user_path(graph::base(acct.account), app_only, &["sendMail"])?;
            let token = token::get(acct, &want, false)?;
            let body = graph::send_mail_body(
                &args.to,
                &args.subject,
                &test_body(acct.name, "via Microsoft Graph"),
            );
            eprintln!(
                "graph sendMail   POST {url} with token {}",
                fingerprint(&token.access_token)
            );
            let status = graph::send_mail(&Http::new()?, &url, &token.access_token, &body)?;
            eprintln!("graph accepted   HTTP {status}");
            eprintln!(
                "Sent: Microsoft Graph accepted the message for {}.",
                args.to
            );
            Ok(())
        }
    })
}

/// App-only tokens have no `/me`: the mailbox is named by `user`.
fn app_only_user<'a>(acct: &'a AccountRef) -> Result<Option<&'a str>> {
    if acct.account.flow() == Flow::Credentials {
        user(acct.name, acct.account).map(Some)
    } else {
        Ok(None)
    }
}

pub fn check(paths: &Paths, args: &CheckArgs) -> Result<()> {
    with_account(paths, &args.account, |acct| {
        let mut services = Vec::new();
        for (on, service) in [
            (args.imap, Service::Imap),
            (args.pop, Service::Pop),
            (args.smtp, Service::Smtp),
        ] {
            if on {
                services.push(service);
            }
        }
        if services.is_empty() {
            services = if acct.account.services.is_empty() {
                vec![Service::Imap, Service::Smtp]
            } else {
                acct.account.services.clone()
            };
        }
        let user = user(acct.name, acct.account)?;
        let token = own_token(acct)?;
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut codes = Vec::new();
        for &service in &services {
            let result = servers::server(acct.account, service).and_then(|srv| match service {
                Service::Imap => imap::check(&srv, user, &token.access_token, args.mech),
                Service::Pop => pop::check(&srv, user, &token.access_token, args.mech),
                Service::Smtp => smtp::check(&srv, user, &token.access_token, args.mech),
            });
            let name = service_name(service);
            match result {
                Ok(()) => eprintln!("{name:<5} ok"),
                Err(e) => {
                    if services.len() > 1 {
                        eprintln!("{name:<5} FAILED: {e:#}");
                    }
                    failed.push(name);
                    codes.push(error::exit_code(&e));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) if services.len() == 1 => Err(e),
            Some(_) => {
                let summary = format!(
                    "{} of {} checks failed ({})",
                    failed.len(),
                    services.len(),
                    failed.join(", ")
                );
                // Only network trouble: say so in the exit code (4), as a single check would.
                Err(if codes.iter().all(|&c| c == error::EXIT_SERVER) {
                    error::server(summary)
                } else {
                    anyhow!(summary)
                })
            }
        }
    })
}

pub fn whoami(paths: &Paths, name: &str) -> Result<()> {
    with_account(paths, name, |acct| {
        let account = acct.account;
        let token = own_token(acct)?;
        let now = time::now();
        let mut out = format!(
            "account  {name}\ntoken    {} valid until {} (for {})\n",
            fingerprint(&token.access_token),
            time::format_utc(token.expires_at),
            time::format_span(token.expires_at.saturating_sub(now))
        );
        let mut names = Vec::new();
        if let Some(claims) = whoami::jwt_claims(&token.access_token) {
            let lines = whoami::describe_claims(&claims);
            names.extend(whoami::identities(&lines));
            out.push_str(&whoami::render(
                "claims in the token (read locally, not verified):",
                &lines,
            ));
        }
        let lookup = online_lookup(acct, &token)?;
        let found_online = lookup.is_some();
        if let Some((title, lines)) = lookup {
            names.extend(whoami::identities(&lines));
            out.push_str(&whoami::render(&title, &lines));
        }
        if let Some(note) = whoami::user_mismatch(account.user.as_deref(), &names) {
            out.push_str(&format!("note: {note}\n"));
        }
        print!("{out}");
        if names.is_empty() && !found_online {
            return Err(anyhow!(
                "cannot tell who the token belongs to: it is not a readable JWT and the account \
                 has no Graph scope or userinfo endpoint. Fix: add a Graph resource \
                 ([accounts.{name}.resources] graph = [\"https://graph.microsoft.com/User.Read\"]) \
                 or set `userinfo_endpoint` with openid/email scopes"
            ));
        }
        Ok(())
    })
}

/// A titled list of `(field, value)` lines about the token's owner.
type Profile = (String, Vec<(String, String)>);

/// Graph `/me` when the account can get a Graph token, else OIDC userinfo when there is one.
fn online_lookup(acct: &AccountRef, own: &AccessToken) -> Result<Option<Profile>> {
    let account = acct.account;
    if let Ok(want) = graph::want(acct.name, account) {
        let url = graph::user_path(graph::base(account), app_only_user(acct)?, &[])?;
        let token = token::get(acct, &want, false)?;
        let doc = graph::get_json(&Http::new()?, &url, &token.access_token)?;
        return Ok(Some((
            format!("Microsoft Graph ({url}):"),
            whoami::describe_profile(&doc),
        )));
    }
    let wants_oidc = account
        .scopes()?
        .iter()
        .any(|s| matches!(s.as_str(), "openid" | "email" | "profile"));
    let url = match (&account.userinfo_endpoint, account.provider) {
        (Some(url), _) => url.clone(),
        (None, Provider::Google) if wants_oidc => provider::GOOGLE_USERINFO.to_string(),
        _ => return Ok(None),
    };
    let doc = graph::get_json(&Http::new()?, &url, &own.access_token)?;
    Ok(Some((
        format!("userinfo ({url}):"),
        whoami::describe_profile(&doc),
    )))
}

pub fn doctor(paths: &Paths, only: Option<&str>) -> Result<()> {
    let findings = doctor::run(paths, only);
    let mut out = format!(
        "config {}\nstore  {}\n",
        paths.config.display(),
        paths.data_dir.display()
    );
    for f in &findings {
        out.push_str(&format!("\n{f}"));
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    if findings.is_empty() {
        out.push_str("\nNo problems found.\n");
    } else {
        out.push_str(&format!("\n{errors} error(s), {warnings} warning(s).\n"));
    }
    print!("{out}");
    if errors > 0 {
        return Err(anyhow!(
            "doctor found {errors} error(s): fix them as described above"
        ));
    }
    Ok(())
}
