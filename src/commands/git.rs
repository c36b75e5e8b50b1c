//! `git-credential`: git's credential-helper protocol, so `git send-email` with
//! `sendemail.smtpAuth = XOAUTH2` gets a fresh access token as its password. See
//! gitcredentials(7).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::config::{Account, Config, Paths};
use crate::mail::servers;
use crate::provider::Service;

pub fn run(paths: &Paths, named: Option<&str>, operation: &str) -> Result<()> {
    // git also sends store and erase; a token is not something git should keep or forget.
    if operation != "get" {
        return Ok(());
    }
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut input)
        .context("cannot read git's credential request")?;
    let request = parse_request(&input);
    let config = Config::load(&paths.config)?;
    let Some(name) = pick_account(&config, &request, named) else {
        return Ok(());
    };
    let acct = config.open(paths, name)?;
    if !is_for_mail(&request, &acct.account) {
        return Ok(());
    }
    let access = crate::token::own(&acct, false)?;
    let user = request
        .get("username")
        .map(String::as_str)
        .or(acct.account.user.as_deref());
    super::write_stdout(&answer(user, &access.access_token), "cannot answer git")
}

/// The `key=value` lines git sends, up to the first blank line.
pub fn parse_request(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Which account answers: the one named with --account, else the one whose `user` is the
/// requested username, else the only account there is. None: let git ask the next helper.
pub fn pick_account<'a>(
    config: &'a Config,
    request: &BTreeMap<String, String>,
    named: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(name) = named {
        return config.accounts.contains_key(name).then_some(name);
    }
    if let Some(username) = request.get("username") {
        return config
            .accounts
            .iter()
            .find(|(_, a)| a.user.as_deref() == Some(username.as_str()))
            .map(|(name, _)| name.as_str());
    }
    match config.accounts.len() {
        1 => config.accounts.keys().next().map(String::as_str),
        _ => None,
    }
}

/// Only mail: git asks every helper for every host it talks to (an https remote too), and a
/// mail token must not become the password sent to another service. The protocol must be
/// SMTP, and the host the account's SMTP server when it has one (configured or preset).
pub fn is_for_mail(request: &BTreeMap<String, String>, account: &Account) -> bool {
    if !matches!(
        request.get("protocol").map(String::as_str),
        Some("smtp" | "smtps")
    ) {
        return false;
    }
    let Ok(srv) = servers::server(account, Service::Smtp) else {
        return true;
    };
    request.get("host").is_some_and(|host| {
        let bare = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        bare.trim_start_matches('[')
            .trim_end_matches(']')
            .eq_ignore_ascii_case(srv.host.trim_start_matches('[').trim_end_matches(']'))
    })
}

/// The answer to `get`: the username (when the account has one) and the token as password.
pub fn answer(user: Option<&str>, token: &str) -> String {
    let mut text = String::new();
    if let Some(user) = user {
        text.push_str(&format!("username={user}\n"));
    }
    text.push_str(&format!("password={token}\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[accounts.work]\nprovider = \"microsoft\"\nclient_id = \"a\"\nuser = \"me@work.example\"\n\
             [accounts.home]\nprovider = \"google\"\nclient_id = \"b\"\nuser = \"me@gmail.com\"\n",
        )
        .unwrap()
    }

    #[test]
    fn request_lines_stop_at_the_blank_line() {
        let r = parse_request(
            "protocol=smtp\nhost=smtp.office365.com:587\nusername=me@work.example\n\nignored=1\n",
        );
        assert_eq!(r.len(), 3);
        assert_eq!(r["host"], "smtp.office365.com:587");
    }

    #[test]
    fn accounts_are_picked_by_name_then_user() {
        let c = config();
        let by_user = parse_request("protocol=smtp\nusername=me@gmail.com\n");
        assert_eq!(pick_account(&c, &by_user, None), Some("home"));
        assert_eq!(pick_account(&c, &by_user, Some("work")), Some("work"));
        assert_eq!(pick_account(&c, &by_user, Some("nope")), None);
        let stranger = parse_request("username=someone@else.example\n");
        assert_eq!(pick_account(&c, &stranger, None), None);
        // Two accounts and no username: ambiguous, so answer nothing.
        assert_eq!(
            pick_account(&c, &parse_request("protocol=smtp\n"), None),
            None
        );
    }

    #[test]
    fn only_smtp_to_the_accounts_server_is_answered() {
        let c = config();
        let work = &c.accounts["work"];
        let ask = |text: &str| is_for_mail(&parse_request(text), work);
        assert!(ask("protocol=smtp\nhost=smtp.office365.com:587\n"));
        assert!(ask("protocol=smtps\nhost=SMTP.office365.com\n"));
        assert!(!ask("protocol=https\nhost=github.com\n"));
        assert!(!ask("protocol=smtp\nhost=smtp.evil.example:587\n"));
        assert!(!ask("protocol=smtp\n"));
        assert!(!ask("host=smtp.office365.com\n"));
    }

    #[test]
    fn answer_has_username_and_password_lines() {
        assert_eq!(answer(Some("u"), "t"), "username=u\npassword=t\n");
        assert_eq!(answer(None, "t"), "password=t\n");
    }
}
