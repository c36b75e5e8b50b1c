//! Requests to the token endpoint (RFC 6749, 8628) and its replies, checked before use.

use std::fmt;

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::OAuthError;
use super::jwt;
use base64::Engine;

use crate::config::{Account, SecretMethod};
use crate::error::server;
use crate::http::{Http, Reply};
use crate::log::printable;
use crate::provider::Endpoints;
use crate::store::{AccessToken, Granted, MAX_LIFETIME};

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// When a server leaves out `expires_in`, assume a short life rather than a long one.
const DEFAULT_EXPIRES_IN: u64 = 600;

#[derive(Deserialize)]
pub struct TokenReply {
    /// Missing is read as empty, and refused as such: the rest of the reply (a rotated
    /// refresh token) may still have to be kept.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Google's name for the refresh token's remaining life (sent for time-limited grants).
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub refresh_token_expires_in: Option<u64>,
    /// Keycloak's (0: an offline token, without end).
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub refresh_expires_in: Option<u64>,
    /// OIDC: who logged in (read, not trusted, to warn about a login as someone else).
    #[serde(default)]
    pub id_token: Option<String>,
}

impl TokenReply {
    /// The user names the reply gives: the ID token's claims, else the access token's when it
    /// is a JWT (Microsoft's for Outlook are).
    pub fn identities(&self) -> Vec<String> {
        [self.id_token.as_deref(), Some(self.access_token.as_str())]
            .into_iter()
            .flatten()
            .filter_map(jwt::claims)
            .map(|claims| jwt::identities(&claims))
            .find(|names| !names.is_empty())
            .unwrap_or_default()
    }
}

impl fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReply")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("has_id_token", &self.id_token.is_some())
            .field("refresh_token_expires_in", &self.refresh_token_expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenReply {
    /// The access token to store, the refresh token if the server sent one (a rotation) and
    /// its end if the server said, after checking that both tokens can be used as they are:
    /// each becomes a line on stdout, a SASL field, or a git credential. `now` is when the
    /// request was sent: lives are counted from then, an access token's never past
    /// `MAX_LIFETIME`. A reply that fails is the server's fault (exit 4) and nothing of it is
    /// stored.
    pub fn into_access(self, now: u64, requested_scope: &str) -> Result<Granted> {
        usable("access_token", &self.access_token)?;
        if let Some(kind) = &self.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(server(format!(
                "the server sent a token of type `{}`; mail servers take only Bearer tokens",
                printable(kind)
            )));
        }
        let refresh_token_ends_at = self.refresh_token_ends_at(now);
        let refresh_token = self.refresh_token.filter(|t| !t.is_empty());
        if let Some(rt) = &refresh_token {
            usable("refresh_token", rt)?;
        }
        let life = self
            .expires_in
            .unwrap_or(DEFAULT_EXPIRES_IN)
            .min(MAX_LIFETIME);
        let access = AccessToken {
            access_token: self.access_token,
            token_type: "Bearer".into(),
            expires_at: now.saturating_add(life),
            scope: self.scope.or_else(|| Some(requested_scope.to_string())),
            obtained_at: Some(now),
        };
        Ok(Granted {
            access,
            refresh_token,
            refresh_token_ends_at,
        })
    }
}

impl TokenReply {
    /// When the refresh token ends, if the server said (Google's or Keycloak's field).
    fn refresh_token_ends_at(&self, now: u64) -> Option<u64> {
        self.refresh_token_expires_in
            .or(self.refresh_expires_in)
            .filter(|&secs| secs > 0)
            .map(|secs| now.saturating_add(secs))
    }

    /// The reply's new refresh token, if it can be used, whatever the rest of the reply: a
    /// rotating server has revoked the old one when it sent this, so a reply refused for its
    /// access token (empty, control characters, not Bearer) must still leave it stored.
    pub fn salvage(&self, now: u64) -> Option<Salvaged> {
        let token = self.refresh_token.as_deref().filter(|t| !t.is_empty())?;
        usable("refresh_token", token).ok()?;
        Some(Salvaged {
            refresh_token: token.to_string(),
            ends_at: self.refresh_token_ends_at(now),
        })
    }
}

/// A new refresh token kept from a reply that was refused (see `TokenReply::salvage`).
pub struct Salvaged {
    pub refresh_token: String,
    pub ends_at: Option<u64>,
}

impl fmt::Debug for Salvaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Salvaged")
            .field(
                "refresh_token",
                &crate::log::fingerprint(&self.refresh_token),
            )
            .field("ends_at", &self.ends_at)
            .finish()
    }
}

/// A token must be visible ASCII without spaces (RFC 6750's b64token and more): anything else
/// would break a SASL string, add lines to a git credential, or reach a terminal.
fn usable(field: &str, token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(server(format!(
            "the server's reply has no `{field}` (or an empty one). Try again later."
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(server(format!(
            "the server's `{field}` holds spaces or control characters. Try again later."
        )));
    }
    Ok(())
}

/// `null` read as an empty string, refused later as empty like a missing one.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Some servers (older Azure AD among them) send `expires_in` as a string.
fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seconds {
        Number(u64),
        Float(f64),
        Text(String),
    }
    Ok(match Option::<Seconds>::deserialize(d)? {
        None => None,
        Some(Seconds::Number(n)) => Some(n),
        Some(Seconds::Float(f)) if f.is_finite() && f >= 0.0 => Some(f as u64),
        Some(Seconds::Text(s)) => s.trim().parse().ok(),
        Some(Seconds::Float(_)) => None,
    })
}

/// POST a form to a token endpoint and parse the answer. A server's error text that quotes a
/// secret we sent (some echo the refresh token back) has it blanked out.
fn post<T: DeserializeOwned>(
    http: &Http,
    url: &str,
    client: &Client,
    form: &[(&str, &str)],
    what: &str,
) -> Result<Result<T, OAuthError>> {
    let reply = http.post_form(url, form, client.basic_header().as_deref())?;
    let reply = parse_reply(&reply, what)?;
    // The server may quote what it was sent: the secret never goes further.
    Ok(reply.map_err(|e| match &client.auth {
        ClientAuth::Basic(secret) => e.redacted(form).redacted(&[("client_secret", secret)]),
        _ => e.redacted(form),
    }))
}

/// The parsed reply: the success body, or the server's OAuth error.
pub fn parse_reply<T: DeserializeOwned>(
    reply: &Reply,
    what: &str,
) -> Result<Result<T, OAuthError>> {
    if let Ok(mut err) = serde_json::from_slice::<OAuthError>(&reply.body)
        && !err.error.is_empty()
    {
        err.status = reply.status;
        return Ok(Err(err));
    }
    if (300..400).contains(&reply.status) {
        // Following it would resend the form, secrets included, wherever it points.
        return Err(server(format!(
            "{what} failed: the server answered with a redirect (HTTP {}), which mailtoken does not follow. Check the endpoint: it must be the final address.",
            reply.status
        )));
    }
    if !reply.is_success() {
        if let Some(err) = page_error(reply) {
            return Ok(Err(err));
        }
        return Err(server(format!(
            "{what} failed: the server answered HTTP {}{}. Try again later; if it persists, check the endpoint.",
            reply.status,
            describe_body(reply)
        )));
    }
    serde_json::from_slice::<T>(&reply.body)
        .map(Ok)
        .or_else(|e| match page_error(reply) {
            Some(err) => Ok(Err(err)),
            None => Err(server(format!(
                "{what} failed: the server's reply is not a valid token reply ({}){}",
                json_problem(&e),
                describe_body(reply)
            ))),
        })
}

/// How far into a body an AADSTS code is looked for: Microsoft's error pages name it early,
/// and a reply can be a megabyte.
const AADSTS_SCAN: usize = 64 * 1024;

/// The first `AADSTS<digits>` in the start of a body that is not an OAuth reply (Microsoft
/// answers some refusals, Conditional Access among them, with an HTML page).
pub fn aadsts_in_body(body: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"AADSTS";
    let body = &body[..body.len().min(AADSTS_SCAN)];
    let mut from = 0;
    while let Some(at) = body[from..].windows(MARK.len()).position(|w| w == MARK) {
        let digits_at = from + at + MARK.len();
        let digits: Vec<u8> = body[digits_at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .take(10)
            .copied()
            .collect();
        // Codes run to seven digits; a longer run is something else.
        if (1..=9).contains(&digits.len())
            && let Ok(code) = String::from_utf8_lossy(&digits).parse()
        {
            return Some(code);
        }
        from = digits_at;
    }
    None
}

/// A page naming an AADSTS code, as the error it stands for. Only the code is taken: the
/// page itself is never quoted, since it may hold what was sent.
fn page_error(reply: &Reply) -> Option<OAuthError> {
    let code = aadsts_in_body(&reply.body)?;
    let kind: String = reply
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/+.-".contains(*c))
        .take(40)
        .collect();
    let page = if kind.is_empty() {
        "a page".to_string()
    } else {
        format!("a {kind} page")
    };
    Some(OAuthError {
        status: reply.status,
        error: format!("HTTP {} with {page}", reply.status),
        error_description: Some(format!("AADSTS{code}")),
        error_codes: vec![code],
    })
}

/// Say what was wrong with a JSON body without quoting it: it may hold a token.
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "it ends early".into(),
        Category::Syntax => format!("not JSON at line {} column {}", e.line(), e.column()),
        Category::Data => {
            let text = e.to_string();
            if text.starts_with("missing field") {
                text.split(" at line").next().unwrap_or(&text).to_string()
            } else {
                "a field has the wrong type".into()
            }
        }
        Category::Io => "unreadable".into(),
    }
}

/// A hint at what a non-OAuth body was (an HTML error page, say), without its contents.
fn describe_body(reply: &Reply) -> String {
    let kind = reply.content_type.split(';').next().unwrap_or("").trim();
    match (kind.is_empty(), reply.body.is_empty()) {
        (_, true) => ", with an empty body".into(),
        (true, false) => format!(", with {} bytes", reply.body.len()),
        (false, false) => format!(", with {} bytes of {kind}", reply.body.len()),
    }
}

pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves who it is to the token endpoint.
pub enum ClientAuth {
    /// A public client (device and browser logins of desktop apps).
    Public,
    /// The secret in the form body (client_secret_post).
    Secret(String),
    /// The client id and secret in an `Authorization: Basic` header (client_secret_basic).
    Basic(String),
    /// A signed JWT (RFC 7523), made for one token endpoint.
    Assertion(String),
}

/// The parameters every request to the token endpoint carries to identify the client.
pub struct Client<'a> {
    pub id: &'a str,
    pub auth: ClientAuth,
}

impl<'a> Client<'a> {
    /// The endpoints' token endpoint (or an error that says how to set one for `name`) and the
    /// account's client for it: what every request there starts from.
    pub fn for_token_endpoint(
        name: &str,
        account: &'a Account,
        endpoints: &Endpoints,
    ) -> Result<(String, Client<'a>)> {
        let url = endpoints.need_token(name)?.to_string();
        let client = Client::for_account(account, &url, endpoints)?;
        Ok((url, client))
    }

    /// The account's client, with the secret (sent the way the account or the server's
    /// discovery document says: `endpoints.auth_methods`) or a fresh certificate assertion
    /// for `token_endpoint`.
    pub fn for_account(
        account: &'a Account,
        token_endpoint: &str,
        endpoints: &Endpoints,
    ) -> Result<Client<'a>> {
        let auth = if let Some(secret) = account.client_secret()? {
            match secret_method(account.token_endpoint_auth_method, &endpoints.auth_methods) {
                SecretMethod::ClientSecretBasic => ClientAuth::Basic(secret),
                SecretMethod::ClientSecretPost => ClientAuth::Secret(secret),
            }
        } else if let (Some(cert), Some(key)) = (&account.client_certificate, &account.client_key) {
            ClientAuth::Assertion(jwt::client_assertion(
                cert,
                key,
                &account.client_id,
                token_endpoint,
                crate::time::now(),
            )?)
        } else {
            ClientAuth::Public
        };
        Ok(Client {
            id: &account.client_id,
            auth,
        })
    }

    fn add_to<'b>(&'b self, form: &mut Vec<(&'b str, &'b str)>) {
        // With Basic, the header names the client: one way to authenticate per request.
        if !matches!(self.auth, ClientAuth::Basic(_)) {
            form.push(("client_id", self.id));
        }
        match &self.auth {
            ClientAuth::Public | ClientAuth::Basic(_) => {}
            ClientAuth::Secret(secret) => form.push(("client_secret", secret)),
            ClientAuth::Assertion(jwt) => {
                form.push(("client_assertion_type", JWT_BEARER_ASSERTION));
                form.push(("client_assertion", jwt));
            }
        }
    }

    /// The `Authorization` header value for client_secret_basic: id and secret each
    /// form-urlencoded, joined by a colon, in base64 (RFC 6749 section 2.3.1).
    pub fn basic_header(&self) -> Option<String> {
        let ClientAuth::Basic(secret) = &self.auth else {
            return None;
        };
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!("{}:{}", encode(self.id), encode(secret));
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    }
}

/// The account's choice, else what the server offers: post when it offers post or says
/// nothing (what Microsoft and Google take), basic when that is all it offers.
pub fn secret_method(configured: Option<SecretMethod>, offered: &[String]) -> SecretMethod {
    configured.unwrap_or_else(|| {
        let offers = |m: &str| offered.iter().any(|o| o == m);
        if offers("client_secret_basic") && !offers("client_secret_post") {
            SecretMethod::ClientSecretBasic
        } else {
            SecretMethod::ClientSecretPost
        }
    })
}

pub fn refresh(
    http: &Http,
    token_endpoint: &str,
    client: &Client,
    refresh_token: &str,
    scope: &str,
) -> Result<Result<TokenReply, OAuthError>> {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    client.add_to(&mut form);
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    post(
        http,
        token_endpoint,
        client,
        &form,
        "refreshing the access token",
    )
}

/// RFC 6749 section 4.1.3, with the PKCE verifier of RFC 7636.
pub fn exchange_code(
    http: &Http,
    token_endpoint: &str,
    client: &Client,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Result<TokenReply, OAuthError>> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    client.add_to(&mut form);
    post(
        http,
        token_endpoint,
        client,
        &form,
        "exchanging the authorization code",
    )
}

/// RFC 7523 section 2.1: the JWT-bearer grant (Google's service accounts).
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An access token for a signed grant assertion; the assertion itself proves the client.
pub fn jwt_bearer(
    http: &Http,
    token_endpoint: &str,
    client: &Client,
    assertion: &str,
) -> Result<Result<TokenReply, OAuthError>> {
    let form = [("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)];
    post(
        http,
        token_endpoint,
        client,
        &form,
        "fetching a service account token",
    )
}

/// RFC 6749 section 4.4: an app-only token, no user involved.
pub fn client_credentials(
    http: &Http,
    token_endpoint: &str,
    client: &Client,
    scope: &str,
) -> Result<Result<TokenReply, OAuthError>> {
    let mut form = vec![("grant_type", "client_credentials"), ("scope", scope)];
    client.add_to(&mut form);
    post(
        http,
        token_endpoint,
        client,
        &form,
        "fetching an app-only token",
    )
}

/// RFC 8628 section 3.2. Google says `verification_url`; the RFC says `verification_uri`.
#[derive(Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    #[serde(alias = "verification_url")]
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub interval: Option<u64>,
}

pub fn device_authorize(
    http: &Http,
    endpoint: &str,
    client: &Client,
    scope: &str,
) -> Result<Result<DeviceAuthorization, OAuthError>> {
    let mut form = vec![("scope", scope)];
    client.add_to(&mut form);
    post(http, endpoint, client, &form, "starting the device login")
}

pub fn device_poll(
    http: &Http,
    token_endpoint: &str,
    client: &Client,
    device_code: &str,
) -> Result<Result<TokenReply, OAuthError>> {
    let mut form = vec![
        ("grant_type", DEVICE_CODE_GRANT),
        ("device_code", device_code),
    ];
    client.add_to(&mut form);
    post(
        http,
        token_endpoint,
        client,
        &form,
        "completing the device login",
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_secret_goes_where_the_account_or_the_server_says() {
        use super::secret_method;
        use crate::config::SecretMethod::{ClientSecretBasic as Basic, ClientSecretPost as Post};
        let offered = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(secret_method(None, &[]), Post);
        assert_eq!(
            secret_method(None, &offered(&["client_secret_basic"])),
            Basic
        );
        assert_eq!(
            secret_method(
                None,
                &offered(&["client_secret_basic", "client_secret_post"])
            ),
            Post
        );
        assert_eq!(
            secret_method(Some(Basic), &offered(&["client_secret_post"])),
            Basic
        );
        assert_eq!(
            secret_method(Some(Post), &offered(&["client_secret_basic"])),
            Post
        );
    }

    #[test]
    fn basic_credentials_are_form_encoded_then_base64() {
        use base64::Engine;
        let client = super::Client {
            id: "app id",
            auth: super::ClientAuth::Basic("p@ss:w rd".into()),
        };
        let header = client.basic_header().unwrap();
        let pair = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(pair, b"app+id:p%40ss%3Aw+rd");
        let mut form = Vec::new();
        client.add_to(&mut form);
        assert!(form.is_empty(), "{form:?}");
    }

    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn token_reply_reports_a_rotated_refresh_token_and_its_end() {
        let parse = |json: &str| serde_json::from_str::<TokenReply>(json).unwrap();
        let g = parse(r#"{"access_token":"a","expires_in":"3599","token_type":"Bearer"}"#)
            .into_access(100, "mail")
            .unwrap();
        assert_eq!(g.access.expires_at, 3699);
        assert_eq!(g.access.obtained_at, Some(100));
        assert_eq!((g.refresh_token, g.refresh_token_ends_at), (None, None));
        assert_eq!(g.access.scope.as_deref(), Some("mail"));
        let g = parse(r#"{"access_token":"a","expires_in":60,"refresh_token":"new","scope":"x"}"#)
            .into_access(0, "mail")
            .unwrap();
        assert_eq!(g.refresh_token.as_deref(), Some("new"));
        assert_eq!(g.access.scope.as_deref(), Some("x"));
        let g = parse(r#"{"access_token":"a","refresh_token":""}"#)
            .into_access(0, "mail")
            .unwrap();
        assert_eq!(
            (g.access.expires_at, g.refresh_token),
            (DEFAULT_EXPIRES_IN, None)
        );
        // The refresh token's end, in Google's words or Keycloak's; 0 is Keycloak's "none".
        for (json, ends) in [
            (
                r#"{"access_token":"a","refresh_token_expires_in":604799}"#,
                Some(605_799),
            ),
            (
                r#"{"access_token":"a","refresh_expires_in":"1800"}"#,
                Some(2_800),
            ),
            (r#"{"access_token":"a","refresh_expires_in":0}"#, None),
            (
                r#"{"access_token":"a","refresh_token_expires_in":"soon"}"#,
                None,
            ),
        ] {
            let g = parse(json).into_access(1_000, "mail").unwrap();
            assert_eq!(g.refresh_token_ends_at, ends, "{json}");
        }
    }

    #[test]
    fn replies_with_unusable_tokens_are_server_errors() {
        let into = |json: &str| {
            serde_json::from_str::<TokenReply>(json)
                .unwrap()
                .into_access(1_000, "mail")
        };
        for bad in [
            r#"{"access_token":""}"#,
            r#"{"access_token":"a b"}"#,
            "{\"access_token\":\"a\\r\\nX-Injected: 1\"}",
            "{\"access_token\":\"a\\u001b[31m\"}",
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"access_token":"a","refresh_token":"r\nx"}"#,
        ] {
            let err = into(bad).expect_err(bad);
            assert_eq!(
                crate::error::exit_code(&err),
                crate::error::EXIT_SERVER,
                "{bad}"
            );
        }
        let ok = into(r#"{"access_token":"a.b-c_d~e+f/g=","token_type":"bearer"}"#).unwrap();
        assert_eq!(ok.access.token_type, "Bearer");
        let forever = into(r#"{"access_token":"a","expires_in":1e300}"#).unwrap();
        assert_eq!(forever.access.expires_at, 1_000 + MAX_LIFETIME);
    }

    #[test]
    fn error_replies_are_recognised_whatever_the_status() {
        for status in [400, 401, 428, 200] {
            let r = reply(status, r#"{"error":"authorization_pending"}"#);
            let e = parse_reply::<TokenReply>(&r, "x").unwrap().unwrap_err();
            assert_eq!(e.error, "authorization_pending");
            assert_eq!(e.status, status);
        }
    }

    #[test]
    fn broken_replies_are_server_errors_that_quote_no_secret() {
        let cases = [
            reply(500, "oops"),
            reply(503, ""),
            reply(200, r#"{"access_token":"#),
            reply(200, r#"{"access_token":42}"#),
            reply(200, "<html><title>Sign in</title></html>"),
        ];
        for r in cases {
            let err = parse_reply::<TokenReply>(&r, "refreshing").unwrap_err();
            assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_SERVER);
        }
        let r = reply(200, r#"{"access_token":"SECRET-AT","expires_in":{"x":1}}"#);
        let err = parse_reply::<TokenReply>(&r, "refreshing").unwrap_err();
        assert!(!err.to_string().contains("SECRET-AT"), "{err}");
        // No access token: read as empty and refused as such (exit 4), but a new refresh
        // token in the same reply can still be kept.
        let r = reply(200, r#"{"token_type":"Bearer","refresh_token":"rt-new"}"#);
        let parsed = parse_reply::<TokenReply>(&r, "refreshing")
            .unwrap()
            .unwrap();
        assert_eq!(parsed.salvage(0).unwrap().refresh_token, "rt-new");
        let err = parsed.into_access(0, "mail").unwrap_err();
        assert!(err.to_string().contains("no `access_token`"), "{err}");
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_SERVER);
        let err = parse_reply::<TokenReply>(&reply(307, ""), "refreshing").unwrap_err();
        assert!(err.to_string().contains("does not follow"), "{err}");
        assert_eq!(crate::error::exit_code(&err), crate::error::EXIT_SERVER);
    }

    #[test]
    fn an_aadsts_code_is_read_from_a_page_but_nothing_else_of_it() {
        assert_eq!(
            aadsts_in_body(b"<p>AADSTS53003: Access has been blocked"),
            Some(53_003)
        );
        assert_eq!(
            aadsts_in_body(b"AADSTS: none; then AADSTS50097."),
            Some(50_097)
        );
        assert_eq!(aadsts_in_body(b"AADSTS12345678901 is no code"), None);
        assert_eq!(aadsts_in_body(b"<html>Sign in</html>"), None);
        // Only the start of a body is searched.
        let late = format!("{}AADSTS53003", " ".repeat(AADSTS_SCAN));
        assert_eq!(aadsts_in_body(late.as_bytes()), None);

        let page = "<html><body>AADSTS53003: Access has been blocked by Conditional Access \
                    policies. device_code=SECRET-DC</body></html>";
        for status in [400, 200] {
            let r = Reply {
                status,
                content_type: "text/html; charset=utf-8".into(),
                body: page.as_bytes().to_vec(),
            };
            let e = parse_reply::<DeviceAuthorization>(&r, "starting the device login")
                .unwrap()
                .err()
                .unwrap();
            assert_eq!((e.aadsts(), e.status), (Some(53_003), status));
            let msg = e
                .into_error(
                    "starting the device login",
                    crate::provider::Provider::Microsoft,
                    "w",
                )
                .to_string();
            assert!(
                msg.starts_with(&format!(
                    "starting the device login was refused: HTTP {status} with a text/html page (AADSTS53003)"
                )),
                "{msg}"
            );
            assert!(
                !msg.contains("SECRET") && !msg.contains("Access has"),
                "{msg}"
            );
        }
    }

    #[test]
    fn device_authorization_accepts_google_spelling() {
        let d: DeviceAuthorization = serde_json::from_str(
            r#"{"device_code":"d","user_code":"U","verification_url":"https://www.google.com/device","expires_in":1800,"interval":5}"#,
        )
        .unwrap();
        assert_eq!(d.verification_uri, "https://www.google.com/device");
        assert_eq!(d.interval, Some(5));
    }
}
