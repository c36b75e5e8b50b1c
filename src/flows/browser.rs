//! Authorization code + PKCE (RFC 7636) through the system browser: start the attempt, let
//! the browser come back (flows/callback.rs), trade the code for tokens.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::LoginOptions;
pub use super::callback::{Callback, Catcher, Expected, Redirect, parse_callback};
use crate::config::OpenAccount;
use crate::http::Http;
use crate::oauth;
use crate::provider::{Endpoints, Provider};
use crate::store::Granted;
use crate::time;

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

/// RFC 7636 S256: the verifier is 43 characters of base64url from 32 random bytes.
pub fn pkce(random: [u8; 32]) -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(random);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    Pkce {
        verifier,
        challenge,
    }
}

pub struct AuthRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub challenge: &'a str,
    pub provider: Provider,
    pub login_hint: Option<&'a str>,
    /// The account's `extra_authorize_params` (none of the protocol's own: config validation
    /// refuses those).
    pub extra: &'a std::collections::BTreeMap<String, String>,
}

pub fn authorization_url(req: &AuthRequest) -> Result<String> {
    let mut url = reqwest::Url::parse(req.endpoint)
        .with_context(|| format!("authorization_endpoint `{}` is not a URL", req.endpoint))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", req.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("scope", req.scope)
            .append_pair("state", req.state)
            .append_pair("code_challenge", req.challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = req.login_hint
            && !req.extra.contains_key("login_hint")
        {
            q.append_pair("login_hint", hint);
        }
        let consent = match req.provider {
            // Without these Google and Zoho hand out a refresh token only on the very first
            // consent.
            Provider::Google | Provider::Zoho => {
                q.append_pair("access_type", "offline");
                true
            }
            // OpenID Connect Core 11: a server ignores offline_access unless consent is
            // prompted for. Microsoft issues refresh tokens without it.
            Provider::Generic => req.scope.split(' ').any(|s| s == "offline_access"),
            _ => false,
        };
        // `prompt` takes several values (OIDC Core 3.1.2.1): the account's, and consent where
        // it is needed for a refresh token.
        let prompt = req.extra.get("prompt").map(String::as_str).unwrap_or("");
        let prompt = match (prompt, consent) {
            ("", true) => "consent".to_string(),
            (p, true) if !p.split(' ').any(|v| v == "consent") => format!("{p} consent"),
            (p, _) => p.to_string(),
        };
        if !prompt.is_empty() {
            q.append_pair("prompt", &prompt);
        }
        for (key, value) in req.extra.iter().filter(|(k, _)| *k != "prompt") {
            q.append_pair(key, value);
        }
    }
    Ok(url.into())
}

pub fn login(
    http: &Http,
    acct: &OpenAccount,
    endpoints: &Endpoints,
    options: &LoginOptions,
) -> Result<Granted> {
    let OpenAccount { name, account, .. } = acct;
    let auth_endpoint = endpoints.need_authorization(name)?;
    // Everything local first (the client secret, a certificate): a person who has approved
    // the login in the browser must not then learn that `pass` is locked.
    let (token_endpoint, client) = oauth::Client::for_token_endpoint(name, account, endpoints)?;
    let token_endpoint = token_endpoint.as_str();
    let redirect = Redirect::parse(account.redirect_uri())?;
    if redirect.https && !options.paste {
        eprintln!(
            "The redirect URI is https, which no listener here can answer without a certificate \
             the browser trusts: the login goes on by pasting (as --paste)."
        );
    }
    let catcher = Catcher::open(&redirect, options.paste || redirect.https)?;
    let redirect_uri = catcher.redirect_uri(&redirect)?;
    let attempt = Attempt::start(acct, auth_endpoint, &redirect_uri)?;
    // A server that does not know the redirect URI shows an error page and never sends the
    // browser back: the wait would end only at the timeout. Ask it first, and say which URI
    // it must know.
    preflight(http, &attempt.url, &redirect_uri, &account.client_id)?;
    eprintln!(
        "{}",
        redirect_note(account.provider, &redirect, &redirect_uri)
    );

    let where_ = if catcher.listens() {
        "in a browser on this machine"
    } else {
        "in a browser, on any machine"
    };
    eprintln!(
        "To log in account `{name}`, open this address {where_}:\n\n    {}\n",
        attempt.url
    );
    if options.open_browser && catcher.listens() {
        super::open_browser(&attempt.url);
    }
    let expected = Expected {
        path: redirect.callback_path().to_string(),
        state: attempt.state.clone(),
        issuer: endpoints.issuer.clone(),
        iss_required: endpoints.iss_parameter,
    };
    let reply = catcher.receive(&redirect_uri, &expected, options.timeout)?;
    let code = code_from(reply, account.provider, name)?;
    attempt.exchange(http, acct, token_endpoint, &client, &code, &redirect_uri)
}

/// What the login says of its redirect URI: the one sent, and how to register it so that the
/// server takes it (which ports match depends on the host and the provider).
pub fn redirect_note(provider: Provider, registered: &Redirect, sent: &str) -> String {
    let form = registered.registered_form();
    let how = match (registered.port, registered.host.as_str()) {
        (Some(_), _) => "register it exactly so, path and trailing slash included".to_string(),
        (None, "localhost") if provider == Provider::Microsoft => format!(
            "register {form} under \"Mobile and desktop applications\": Microsoft takes any port \
             for it"
        ),
        (None, "localhost") => format!(
            "most servers want localhost registered with its port: register \
             {} and set `redirect_uri` to it, or give `redirect_uri` a fixed port",
            form.replacen("localhost", "127.0.0.1", 1)
        ),
        (None, _) => format!(
            "register {form}, path and trailing slash as here: servers that follow RFC 8252 take \
             any port for 127.0.0.1 and [::1]"
        ),
    };
    format!("Redirect URI: {sent} ({how})")
}

/// Ask the authorization endpoint for the sign-in page before the person does. A server that
/// refuses the redirect URI answers 400 with a page that says so, and never sends the browser
/// back: said at once, instead of after the wait. Anything else (a sign-in page, a redirect, a
/// network error, a refusal about something else) is left to the browser, as before.
fn preflight(http: &Http, url: &str, redirect_uri: &str, client_id: &str) -> Result<()> {
    let Ok(reply) = http.get(url) else {
        return Ok(());
    };
    if let Some(said) = refused_redirect(reply.status, &reply.body) {
        return Err(crate::error::usage(format!(
            "the server refused the login before any sign-in (HTTP {}{said}): register the \
             redirect URI {redirect_uri} for client {client_id} exactly (path and trailing slash \
             included), or set `redirect_uri` to the one registered",
            reply.status
        )));
    }
    Ok(())
}

/// Whether an answer to the authorization address is a refusal of its redirect URI (a 400
/// whose body names it, as Google, Entra, Keycloak and oidc-provider do), and the server's
/// OAuth error, if it gave one, to quote.
pub fn refused_redirect(status: u16, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).to_ascii_lowercase();
    if status != 400 || !text.contains("redirect") {
        return None;
    }
    let quoted = serde_json::from_slice::<oauth::OAuthError>(body)
        .ok()
        .map(|e| {
            let desc = e
                .short_description()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            let said = format!("{}{desc}", e.error);
            format!(
                ", {}",
                crate::log::printable(&said.chars().take(200).collect::<String>())
            )
        })
        .unwrap_or_default();
    Some(quoted)
}

/// One login attempt: the secrets that tie the browser's answer to this process.
struct Attempt {
    url: String,
    state: String,
    pkce: Pkce,
    scope: String,
}

impl Attempt {
    /// Fresh PKCE verifier and `state`, and the authorization URL that carries them.
    fn start(acct: &OpenAccount, auth_endpoint: &str, redirect_uri: &str) -> Result<Attempt> {
        let account = &acct.account;
        let pkce = pkce(oauth::random()?);
        let state = URL_SAFE_NO_PAD.encode(oauth::random::<16>()?);
        let scope = account.scope_param(&account.scopes()?);
        let url = authorization_url(&AuthRequest {
            endpoint: auth_endpoint,
            client_id: &account.client_id,
            redirect_uri,
            scope: &scope,
            state: &state,
            challenge: &pkce.challenge,
            provider: account.provider,
            login_hint: account.user.as_deref(),
            extra: &account.extra_authorize_params,
        })?;
        Ok(Attempt {
            url,
            state,
            pkce,
            scope,
        })
    }

    /// Trade the code for tokens, proving with the verifier that we started this login.
    fn exchange(
        self,
        http: &Http,
        acct: &OpenAccount,
        token_endpoint: &str,
        client: &oauth::Client,
        code: &str,
        redirect_uri: &str,
    ) -> Result<Granted> {
        let OpenAccount { name, account, .. } = acct;
        let sent_at = time::now();
        let reply = oauth::exchange_code(
            http,
            token_endpoint,
            client,
            code,
            redirect_uri,
            &self.pkce.verifier,
        )?
        .map_err(|e| e.into_error("exchanging the authorization code", account.provider, name))?;
        super::warn_if_someone_else(account, &reply);
        reply.into_access(sent_at, &self.scope)
    }
}

fn code_from(reply: Callback, provider: Provider, name: &str) -> Result<String> {
    match reply {
        Callback::Code(code) => Ok(code),
        Callback::Denied { error, description } => Err(oauth::OAuthError {
            status: 0,
            error,
            error_description: description,
            error_codes: vec![],
        }
        .into_error("the browser login", provider, name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_note_says_which_ports_match_where() {
        let note = |provider, uri: &str, sent: &str| {
            redirect_note(provider, &Redirect::parse(uri).unwrap(), sent)
        };
        let ms = note(
            Provider::Microsoft,
            "http://localhost",
            "http://localhost:4711",
        );
        assert!(
            ms.starts_with("Redirect URI: http://localhost:4711 (register http://localhost under"),
            "{ms}"
        );
        assert!(ms.contains("Microsoft takes any port"), "{ms}");
        let generic = note(
            Provider::Generic,
            "http://127.0.0.1/",
            "http://127.0.0.1:4711/",
        );
        assert!(
            generic.contains("register http://127.0.0.1/, path and trailing slash"),
            "{generic}"
        );
        let localhost = note(
            Provider::Generic,
            "http://localhost/cb",
            "http://localhost:4711/cb",
        );
        assert!(
            localhost.contains("register http://127.0.0.1/cb"),
            "{localhost}"
        );
        let fixed = note(
            Provider::Zoho,
            "http://localhost:8400/",
            "http://localhost:8400/",
        );
        assert!(fixed.contains("register it exactly so"), "{fixed}");
    }

    #[test]
    fn only_a_refused_redirect_uri_ends_the_login_at_once() {
        let oidc = br#"{"error":"invalid_redirect_uri","error_description":"redirect_uri did not match any of the client's registered redirect_uris"}"#;
        let said = refused_redirect(400, oidc).unwrap();
        assert!(
            said.contains("invalid_redirect_uri: redirect_uri did not match"),
            "{said}"
        );
        let google = b"<html><title>Error 400: redirect_uri_mismatch</title></html>";
        assert_eq!(refused_redirect(400, google).as_deref(), Some(""));
        // A sign-in page, a refusal about something else, a bot wall: left to the browser.
        assert!(refused_redirect(200, google).is_none());
        assert!(refused_redirect(400, b"<html>unknown client</html>").is_none());
        assert!(refused_redirect(403, google).is_none());
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        let random = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let p = pkce(random);
        assert_eq!(p.verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        assert_eq!(p.challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn authorization_url_carries_pkce_and_google_extras() {
        let req = AuthRequest {
            endpoint: "https://accounts.google.com/o/oauth2/v2/auth",
            client_id: "id",
            redirect_uri: "http://127.0.0.1:5000",
            scope: "https://mail.google.com/",
            state: "st",
            challenge: "ch",
            provider: Provider::Google,
            login_hint: Some("me@gmail.com"),
            extra: &Default::default(),
        };
        let url = reqwest::Url::parse(&authorization_url(&req).unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], "ch");
        assert_eq!(q["redirect_uri"], "http://127.0.0.1:5000");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["login_hint"], "me@gmail.com");
        let url = authorization_url(&AuthRequest {
            provider: Provider::Microsoft,
            ..req
        })
        .unwrap();
        assert!(!url.contains("access_type"));
        assert!(!url.contains("prompt="));
        let generic = |scope| {
            authorization_url(&AuthRequest {
                provider: Provider::Generic,
                scope,
                ..req
            })
            .unwrap()
        };
        assert!(generic("mail offline_access").contains("prompt=consent"));
        assert!(!generic("mail").contains("prompt="));
    }

    #[test]
    fn extra_parameters_join_the_address_and_prompt_keeps_consent() {
        let extra = std::collections::BTreeMap::from([
            ("domain_hint".to_string(), "contoso.com".to_string()),
            ("prompt".to_string(), "select_account".to_string()),
            ("login_hint".to_string(), "other@contoso.com".to_string()),
        ]);
        let query = |provider| {
            let url = authorization_url(&AuthRequest {
                endpoint: "https://login.example/authorize",
                client_id: "id",
                redirect_uri: "http://127.0.0.1:5000",
                scope: "mail offline_access",
                state: "st",
                challenge: "ch",
                provider,
                login_hint: Some("me@contoso.com"),
                extra: &extra,
            })
            .unwrap();
            let url = reqwest::Url::parse(&url).unwrap();
            url.query_pairs()
                .into_owned()
                .collect::<Vec<(String, String)>>()
        };
        let google = query(Provider::Google);
        let get = |q: &[(String, String)], k: &str| {
            let all: Vec<&str> = q
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(all.len(), 1, "{k} once: {q:?}");
            all[0].to_string()
        };
        assert_eq!(get(&google, "prompt"), "select_account consent");
        assert_eq!(get(&google, "domain_hint"), "contoso.com");
        assert_eq!(get(&google, "login_hint"), "other@contoso.com");
        assert_eq!(get(&query(Provider::Microsoft), "prompt"), "select_account");
    }
}
