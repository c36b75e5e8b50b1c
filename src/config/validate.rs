//! The config rules that need no network: a config that breaks one cannot work at all. Each
//! rule is a named function; `Account::validate` runs them in order and reports the first.

use anyhow::{Context, Result, bail};

use super::{Account, Relogin, StoreKind, TlsMode};
use crate::provider::{self, Flow, Provider, Service};

/// Account names become file names in the store, so keep them to a safe alphabet.
pub fn validate_account_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if !ok {
        bail!(
            "`{name}` is not a usable account name: use letters, digits and . _ - @ (not starting with a dot)"
        );
    }
    Ok(())
}

/// A mailbox name goes into SASL strings whose fields are split by ^A, and into protocol
/// lines: a control character in it would add fields or lines of the user's (or anyone's)
/// choosing.
pub fn validate_user(user: &str) -> Result<()> {
    if user.is_empty() || user.chars().any(char::is_control) {
        bail!(
            "the user `{}` is empty or holds a control character: give the mailbox address",
            user.escape_default()
        );
    }
    Ok(())
}

type Rule = fn(&Account) -> Result<()>;

/// In the order they are reported.
const RULES: &[Rule] = &[
    client_id_is_set,
    user_is_plain,
    one_secret_source,
    certificate_and_key_together,
    service_account_is_googles,
    app_only_has_credentials,
    redirect_uri_is_loopback,
    extra_authorize_params_are_extra,
    login_lifetime_is_days,
    relogin_has_a_device_flow,
    store_settings_match,
    resources_have_scopes,
    place_keys_match_the_provider,
    scopes_are_known,
    mail_servers_are_safe,
    api_urls_are_safe,
    generic_has_token_endpoint,
    confidential_presets_have_a_secret,
    oauth_urls_are_safe,
];

impl Account {
    /// Every rule, in order; the first broken one is the error.
    pub fn validate(&self) -> Result<()> {
        RULES.iter().try_for_each(|rule| rule(self))
    }

    fn secret_sources(&self) -> usize {
        [
            self.client_secret_env.is_some(),
            self.client_secret_file.is_some(),
            self.client_secret_command.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count()
    }
}

fn client_id_is_set(a: &Account) -> Result<()> {
    if a.client_id.trim().is_empty() {
        bail!("`client_id` is empty");
    }
    Ok(())
}

fn user_is_plain(a: &Account) -> Result<()> {
    a.user.as_deref().map_or(Ok(()), validate_user)
}

fn one_secret_source(a: &Account) -> Result<()> {
    if a.secret_sources() > 1 {
        bail!("set only one of `client_secret_env`, `client_secret_file`, `client_secret_command`");
    }
    Ok(())
}

fn certificate_and_key_together(a: &Account) -> Result<()> {
    if a.client_certificate.is_some() != a.client_key.is_some() {
        bail!("`client_certificate` and `client_key` go together: set both");
    }
    Ok(())
}

fn service_account_is_googles(a: &Account) -> Result<()> {
    if a.service_account_key.is_none() {
        return Ok(());
    }
    if a.provider != Provider::Google {
        bail!(
            "`service_account_key` is a Google service account's: it needs provider = \"google\""
        );
    }
    if a.flow() != Flow::Credentials {
        bail!(
            "a service account logs in with no person: remove `flow` (or set flow = \"credentials\")"
        );
    }
    if a.user.is_none() {
        bail!("`service_account_key` needs `user`: the mailbox the service account acts for");
    }
    if a.secret_sources() > 0 || a.client_certificate.is_some() {
        bail!(
            "a service account signs with its key: remove the client secret and certificate settings"
        );
    }
    Ok(())
}

fn app_only_has_credentials(a: &Account) -> Result<()> {
    if a.flow() != Flow::Credentials || a.service_account_key.is_some() {
        return Ok(());
    }
    if a.client_certificate.is_none() && a.secret_sources() == 0 {
        bail!(
            "flow = \"credentials\" needs a client secret (`client_secret_env`, `_file` or `_command`) or a certificate (`client_certificate` and `client_key`)"
        );
    }
    for scope in a.scopes()? {
        if a.provider == Provider::Microsoft && !scope.ends_with("/.default") {
            bail!(
                "scope `{scope}` cannot be used with client credentials: app-only scopes end in /.default (for IMAP/SMTP: {})",
                provider::microsoft_app_scope(a.site().cloud)
            );
        }
    }
    Ok(())
}

fn redirect_uri_is_loopback(a: &Account) -> Result<()> {
    if let Some(uri) = &a.redirect_uri {
        let parsed = reqwest::Url::parse(uri)
            .with_context(|| format!("redirect_uri `{uri}` is not a valid URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || !provider::is_loopback(&parsed) {
            bail!(
                "redirect_uri `{uri}` must be http://127.0.0.1, http://[::1] or http://localhost (with an optional port and path): mailtoken listens on this machine; https://localhost or https://127.0.0.1 where a registration allows only that (the address is then pasted)"
            );
        }
    }
    Ok(())
}

fn login_lifetime_is_days(a: &Account) -> Result<()> {
    if let Some(days) = a.login_lifetime_days
        && !(1..=3650).contains(&days)
    {
        bail!("`login_lifetime_days` is {days}: give the days a login lasts, 1 to 3650");
    }
    Ok(())
}

fn relogin_has_a_device_flow(a: &Account) -> Result<()> {
    if a.relogin != Some(Relogin::Device) {
        return Ok(());
    }
    if a.flow() == Flow::Credentials {
        bail!("relogin = \"device\" is for logins of a person: an app-only account needs none");
    }
    if !provider::has_device_flow(a.provider) {
        bail!(
            "relogin = \"device\" needs a device-code login, which {} does not offer for mail: \
             remove it, and set notify_command to be told when to run `mailtoken login`",
            a.provider.name()
        );
    }
    Ok(())
}

fn store_settings_match(a: &Account) -> Result<()> {
    let commands = a.store_load_command.is_some()
        || a.store_save_command.is_some()
        || a.store_erase_command.is_some();
    match a.store {
        Some(StoreKind::Command)
            if a.store_load_command.is_none() || a.store_save_command.is_none() =>
        {
            bail!(
                "store = \"command\" needs `store_load_command` (prints the tokens) and `store_save_command` (reads them on stdin)"
            );
        }
        Some(StoreKind::File | StoreKind::Keyring) | None if commands => {
            bail!("`store_*_command` settings need store = \"command\"")
        }
        _ => Ok(()),
    }
}

fn resources_have_scopes(a: &Account) -> Result<()> {
    for (name, scopes) in &a.resources {
        if scopes.is_empty() {
            bail!("resource `{name}` has no scopes");
        }
    }
    Ok(())
}

fn place_keys_match_the_provider(a: &Account) -> Result<()> {
    if a.tenant.is_some() && a.provider != Provider::Microsoft {
        bail!("`tenant` only applies to provider = \"microsoft\"");
    }
    if a.cloud.is_some() && a.provider != Provider::Microsoft {
        bail!("`cloud` only applies to provider = \"microsoft\" (its national clouds); remove it");
    }
    if a.region.is_some() && a.provider != Provider::Zoho {
        bail!("`region` only applies to provider = \"zoho\" (its data centres); remove it");
    }
    Ok(())
}

fn scopes_are_known(a: &Account) -> Result<()> {
    a.scopes().map(drop)
}

/// Plain text only towards this machine, no STARTTLS where we do not speak it.
fn mail_servers_are_safe(a: &Account) -> Result<()> {
    for service in [Service::Imap, Service::Pop, Service::Smtp] {
        let name = service.name();
        let (host, _, tls) = a.mail_overrides(service);
        if let Some(host) = host
            && (host.is_empty() || host.contains(char::is_whitespace))
        {
            bail!("`{name}_host` `{host}` is not a host name");
        }
        let preset = provider::mail_server(a.provider, a.site(), service);
        let host = host.or(preset.as_ref().map(|p| p.0.as_str()));
        if tls == Some(TlsMode::None) && !host.is_some_and(provider::is_loopback_host) {
            bail!(
                "`{name}_tls = \"none\"` would send the token in clear text: it is only allowed for \
                 test servers on this machine (127.0.0.1, ::1, localhost)"
            );
        }
        if tls == Some(TlsMode::Starttls) && service != Service::Smtp {
            bail!(
                "`{name}_tls = \"starttls\"` is not supported for {}: use \"tls\" (port {})",
                name.to_uppercase(),
                service.default_port()
            );
        }
    }
    Ok(())
}

fn api_urls_are_safe(a: &Account) -> Result<()> {
    for (what, url) in [
        ("graph_url", &a.graph_url),
        ("userinfo_endpoint", &a.userinfo_endpoint),
        ("gmail_url", &a.gmail_url),
    ] {
        if let Some(url) = url {
            provider::validate_endpoint_url(what, url)?;
        }
    }
    Ok(())
}

/// Yahoo's (and AOL's) token endpoint refuses a code or refresh token without the app's
/// client secret: said now, not after the person has approved in the browser.
fn confidential_presets_have_a_secret(a: &Account) -> Result<()> {
    if matches!(a.provider, Provider::Yahoo | Provider::Aol | Provider::Zoho)
        && a.secret_sources() == 0
    {
        bail!(
            "{} needs the app's client secret: set one of client_secret_command, \
             client_secret_env or client_secret_file (`add --client-secret-command ...`)",
            a.provider.name()
        );
    }
    Ok(())
}

/// The parameters the browser flow sets itself (RFC 6749, RFC 7636): replaced, they would
/// break the login or its protection against a forged answer.
const AUTHORIZE_PARAMS_OF_THE_PROTOCOL: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

fn extra_authorize_params_are_extra(a: &Account) -> Result<()> {
    for (key, value) in &a.extra_authorize_params {
        if AUTHORIZE_PARAMS_OF_THE_PROTOCOL.contains(&key.as_str()) {
            bail!(
                "extra_authorize_params cannot set `{key}`: mailtoken sets it for the login \
                 (the scopes go in `scopes`, the redirect in `redirect_uri`)"
            );
        }
        if key.is_empty() || value.chars().any(char::is_control) {
            bail!(
                "extra_authorize_params: `{key}` is empty or its value holds a control character"
            );
        }
    }
    Ok(())
}

fn generic_has_token_endpoint(a: &Account) -> Result<()> {
    if a.provider == Provider::Generic && a.issuer.is_none() && a.token_endpoint.is_none() {
        bail!("a generic provider needs `issuer` (for OIDC discovery) or `token_endpoint`");
    }
    Ok(())
}

fn oauth_urls_are_safe(a: &Account) -> Result<()> {
    for (what, url) in [
        ("issuer", &a.issuer),
        (
            "device_authorization_endpoint",
            &a.device_authorization_endpoint,
        ),
        ("token_endpoint", &a.token_endpoint),
        ("authorization_endpoint", &a.authorization_endpoint),
    ] {
        if let Some(url) = url {
            provider::validate_endpoint_url(what, url)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Account, Config};
    use anyhow::Result;

    fn account(extra: &str) -> Result<Account> {
        let text = format!("[accounts.a]\nprovider = \"microsoft\"\nclient_id = \"x\"\n{extra}\n");
        Ok(Config::parse(&text)?.accounts["a"].clone())
    }

    #[test]
    fn a_service_account_is_googles_and_acts_for_a_mailbox() {
        let parse = |text: &str| {
            Config::parse(text)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let google = "[accounts.g]\nprovider = \"google\"\nclient_id = \"1\"\nservice_account_key = \"/k.json\"\n";
        let err = parse(google).unwrap_err();
        assert!(err.contains("needs `user`"), "{err}");
        let with_user = format!("{google}user = \"a@example.com\"\n");
        assert!(parse(&with_user).is_ok());
        let config = Config::parse(&with_user).unwrap();
        let account = &config.accounts["g"];
        assert_eq!(account.flow(), crate::provider::Flow::Credentials);
        assert_eq!(account.scopes().unwrap(), ["https://mail.google.com/"]);
        for (extra, says) in [
            ("flow = \"browser\"", "logs in with no person"),
            ("client_secret_env = \"S\"", "signs with its key"),
        ] {
            let err = parse(&format!("{with_user}{extra}\n")).unwrap_err();
            assert!(err.contains(says), "{extra}: {err}");
        }
        let err = parse(&with_user.replace("google", "microsoft")).unwrap_err();
        assert!(err.contains("needs provider = \"google\""), "{err}");
    }

    #[test]
    fn cloud_and_region_only_for_their_providers() {
        assert!(account("cloud = \"usgov-dod\"").is_ok());
        assert!(account("cloud = \"mars\"").is_err());
        let parse = |text: &str| {
            Config::parse(text)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let err =
            parse("[accounts.a]\nprovider = \"microsoft\"\nclient_id = \"x\"\nregion = \"eu\"\n")
                .unwrap_err();
        assert!(
            err.contains("`region` only applies to provider = \"zoho\""),
            "{err}"
        );
        let zoho = "[accounts.z]\nprovider = \"zoho\"\nclient_id = \"x\"\nregion = \"com.au\"\n";
        let err = parse(zoho).unwrap_err();
        assert!(err.contains("Zoho needs the app's client secret"), "{err}");
        assert!(parse(&format!("{zoho}client_secret_env = \"S\"\n")).is_ok());
        let err = parse(&format!(
            "{zoho}client_secret_env = \"S\"\ncloud = \"china\"\n"
        ))
        .unwrap_err();
        assert!(err.contains("`cloud` only applies"), "{err}");
    }

    #[test]
    fn relogin_only_where_a_device_login_can_happen() {
        assert!(account("relogin = \"device\"").is_ok());
        assert!(account("relogin = \"off\"").is_ok());
        assert!(account("relogin = \"browser\"").is_err());
        let app_only =
            account("relogin = \"device\"\nflow = \"credentials\"\nclient_secret_env = \"S\"");
        let err = format!("{:#}", app_only.unwrap_err());
        assert!(err.contains("app-only account needs none"), "{err}");
        let google = Config::parse(
            "[accounts.g]\nprovider = \"google\"\nclient_id = \"x\"\nrelogin = \"device\"\n",
        );
        let err = format!("{:#}", google.unwrap_err());
        assert!(err.contains("Google does not offer"), "{err}");
    }

    #[test]
    fn plain_text_only_to_loopback() {
        assert!(account("smtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"").is_ok());
        assert!(account("smtp_host = \"localhost\"\nsmtp_tls = \"none\"").is_ok());
        assert!(account("smtp_host = \"[::1]\"\nsmtp_tls = \"none\"").is_ok());
        assert!(account("smtp_tls = \"none\"").is_err());
        assert!(account("smtp_host = \"10.0.0.1\"\nsmtp_tls = \"none\"").is_err());
        assert!(account("imap_tls = \"starttls\"").is_err());
        assert!(account("smtp_tls = \"maybe\"").is_err());
        assert!(account("graph_url = \"http://example.com\"").is_err());
        assert!(account("graph_url = \"http://127.0.0.1:9\"").is_ok());
    }

    #[test]
    fn yahoo_and_aol_accounts_need_the_client_secret() {
        let parse = |text: &str| {
            Config::parse(&format!("[accounts.a]\nclient_id = \"x\"\n{text}\n"))
                .map(|c| c.accounts["a"].clone())
        };
        for provider in ["yahoo", "aol"] {
            let err = parse(&format!("provider = \"{provider}\"")).unwrap_err();
            assert!(
                format!("{err:#}").contains("client_secret_command"),
                "{err:#}"
            );
            assert!(
                parse(&format!(
                    "provider = \"{provider}\"\nclient_secret_command = \"pass y\""
                ))
                .is_ok()
            );
        }
        assert!(parse("provider = \"fastmail\"").is_ok());
    }

    #[test]
    fn extra_authorize_params_cannot_replace_the_protocols() {
        assert!(
            account("extra_authorize_params = { domain_hint = \"contoso.com\", prompt = \"select_account\" }")
                .is_ok()
        );
        for key in ["state", "redirect_uri", "code_challenge", "scope"] {
            let err =
                account(&format!("extra_authorize_params = {{ {key} = \"x\" }}")).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{err:#}");
        }
        assert!(account("extra_authorize_params = { hint = \"a\\nb\" }").is_err());
    }

    #[test]
    fn a_login_lifetime_is_a_number_of_days() {
        assert!(account("login_lifetime_days = 7").is_ok());
        for bad in ["0", "3651"] {
            let err = account(&format!("login_lifetime_days = {bad}")).unwrap_err();
            assert!(format!("{err:#}").contains("1 to 3650"), "{err:#}");
        }
        assert!(account("login_lifetime_days = -1").is_err());
        assert!(account("login_lifetime_days = \"7d\"").is_err());
    }

    #[test]
    fn users_with_control_characters_are_refused() {
        assert!(account("user = \"me@example.com\"").is_ok());
        for bad in ["a\\u0001auth=Bearer x", "a\\r\\nb", "a\\n", ""] {
            let err = account(&format!("user = \"{bad}\"")).unwrap_err();
            assert!(
                format!("{err:#}").contains("control character"),
                "{bad}: {err:#}"
            );
        }
    }
}
