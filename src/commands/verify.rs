//! The commands that prove a setup works by using it: `send-test` and `check`. Each opens the
//! account, gets a token, and hands it to the mail protocol clients.

use anyhow::{Result, anyhow};

use crate::cli::{CheckArgs, SendTestArgs, Via};
use crate::config::{self, Account, OpenAccount, Paths};
use crate::error::{self, usage};
use crate::http::Http;
use crate::log::fingerprint;
use crate::mail::sasl::Mech;
use crate::mail::{graph, imap, pop, servers, smtp};
use crate::provider::{Flow, Service};
use crate::time;

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
    let acct = config::open(paths, &args.account)?;
    match args.via {
        Via::Smtp => send_by_smtp(&acct, args),
        Via::Graph => send_by_graph(&acct, args),
    }
}

fn send_by_smtp(acct: &OpenAccount, args: &SendTestArgs) -> Result<()> {
    let from = user(&acct.name, &acct.account)?;
    let srv = servers::server(&acct.account, Service::Smtp)?;
    let token = crate::token::own(acct, false)?;
    let mail = smtp::TestMail {
        from,
        to: &args.to,
        subject: &args.subject,
        body: test_body(
            &acct.name,
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

fn send_by_graph(acct: &OpenAccount, args: &SendTestArgs) -> Result<()> {
    if args.mech != Mech::Xoauth2 {
        return Err(usage("--mech applies to SMTP only, not to --via graph"));
    }
    let want = graph::want(&acct.name, &acct.account)?;
    let app_only = app_only_user(acct)?;
    let url = graph::user_path(graph::base(&acct.account), app_only, &["sendMail"])?;
    let token = crate::token::get(acct, &want, false)?;
    let body = graph::send_mail_body(
        &args.to,
        &args.subject,
        &test_body(&acct.name, "via Microsoft Graph"),
    );
    eprintln!(
        "graph sendMail   POST {url} with token {}",
        fingerprint(&token.access_token)
    );
    let status = graph::send_mail(
        &Http::new(acct.account.tls_ca_file().as_deref())?,
        &url,
        &token.access_token,
        &body,
    )?;
    eprintln!("graph accepted   HTTP {status}");
    eprintln!(
        "Sent: Microsoft Graph accepted the message for {}.",
        args.to
    );
    Ok(())
}

/// App-only tokens have no `/me`: the mailbox is named by `user`.
pub(super) fn app_only_user(acct: &OpenAccount) -> Result<Option<&str>> {
    if acct.account.flow() == Flow::Credentials {
        user(&acct.name, &acct.account).map(Some)
    } else {
        Ok(None)
    }
}

pub fn check(paths: &Paths, args: &CheckArgs) -> Result<()> {
    let acct = config::open(paths, &args.account)?;
    let services = services_to_check(args, &acct.account);
    let user = user(&acct.name, &acct.account)?;
    let token = crate::token::own(&acct, false)?;
    let mut failures = Vec::new();
    for &service in &services {
        let result = servers::server(&acct.account, service).and_then(|srv| match service {
            Service::Imap => imap::check(&srv, user, &token.access_token, args.mech),
            Service::Pop => pop::check(&srv, user, &token.access_token, args.mech),
            Service::Smtp => smtp::check(&srv, user, &token.access_token, args.mech),
        });
        let name = service.name();
        match result {
            Ok(()) => eprintln!("{name:<5} ok"),
            Err(e) => {
                if services.len() > 1 {
                    eprintln!("{name:<5} FAILED: {e:#}");
                }
                failures.push((name, e));
            }
        }
    }
    outcome(services.len(), failures)
}

/// The services named by flags, else the account's, else IMAP and SMTP.
fn services_to_check(args: &CheckArgs, account: &Account) -> Vec<Service> {
    let flagged: Vec<Service> = [
        (args.imap, Service::Imap),
        (args.pop, Service::Pop),
        (args.smtp, Service::Smtp),
    ]
    .into_iter()
    .filter_map(|(on, service)| on.then_some(service))
    .collect();
    match (flagged.is_empty(), account.services.is_empty()) {
        (false, _) => flagged,
        (true, false) => account.services.clone(),
        (true, true) => vec![Service::Imap, Service::Smtp],
    }
}

/// One check: its own error. Several: a summary, with the exit code of the failure that asks
/// most of the person (a login, then a setting, then waiting: `Kind`'s order), as a single
/// check would say; 1 when a failure has no kind.
fn outcome(checked: usize, mut failures: Vec<(&str, anyhow::Error)>) -> Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    if checked == 1 {
        return Err(failures.remove(0).1);
    }
    let names: Vec<&str> = failures.iter().map(|(name, _)| *name).collect();
    let summary = format!(
        "{} of {checked} checks failed ({})",
        failures.len(),
        names.join(", ")
    );
    let kinds: Option<Vec<error::Kind>> = failures.iter().map(|(_, e)| error::kind(e)).collect();
    Err(match kinds.and_then(|kinds| kinds.into_iter().max()) {
        Some(kind) => error::failure(kind, summary),
        None => anyhow!(summary),
    })
}
