//! Command-line arguments. Secrets are never taken from here: argv is visible to every user.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{SecretMethod, TlsMode};
use crate::mail::sasl::Mech;
use crate::output::Format;
use crate::provider::{Flow, Provider, Service};

/// What `--version` says: the version, the build (the hash of the sources both programs carry,
/// `shell::check_front`'s) and the platform it was built for, so that a report names exactly
/// what ran. (`-V` says the version alone.)
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (build ",
    env!("MAILTOKEN_BUILD"),
    ", ",
    env!("MAILTOKEN_TARGET"),
    ")"
);

/// OAuth2 access tokens for mail clients.
///
/// Log in once (`mailtoken login NAME`); afterwards `mailtoken token NAME` prints a valid
/// access token on stdout, refreshing it when needed, for msmtp, mutt, mbsync and friends.
/// Programs that can only send a password (Alpine, fetchmail, Postfix) log in through
/// `mailtoken proxy`.
///
/// Exit status: 0 ok, 1 other failure, 2 usage or config error, 3 a new login is needed,
/// 4 network or server trouble (try again later).
#[derive(Debug, Parser)]
#[command(name = "mailtoken", version, long_version = LONG_VERSION, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: $XDG_CONFIG_HOME/mailtoken/config.toml]
    #[arg(
        long,
        global = true,
        env = "MAILTOKEN_CONFIG",
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,

    /// Token store directory [default: $XDG_DATA_HOME/mailtoken]
    #[arg(
        long,
        global = true,
        env = "MAILTOKEN_DATA_DIR",
        value_name = "DIR",
        help_heading = "Global options"
    )]
    pub data_dir: Option<PathBuf>,

    /// Explain what happens on stderr (tokens appear only as #fingerprints)
    #[arg(short, long, global = true, help_heading = "Global options")]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add an account to the config file
    Add(Box<AddArgs>),
    /// Log in once, interactively (device flow by default; --browser for the browser flow)
    Login(LoginArgs),
    /// Print a valid access token (or SASL string) on stdout, refreshing it if needed
    Token(TokenArgs),
    /// Run local IMAP/POP/SMTP listeners ([proxy] in the config) for mail programs that can
    /// only send a password: they log in with the account's user, the proxy logs in with OAuth2
    ///
    /// For Alpine, fetchmail, git send-email, Postfix, scanners: any program that can send a
    /// user and a password but no OAuth2 token. The listeners are set in the config's [proxy]
    /// table, e.g. imap = "127.0.0.1:1143" and smtp = "127.0.0.1:1587". The mail program
    /// connects there and logs in with the account's `user` as its user name; the proxy logs
    /// in to the account's server with the account's token (refreshed as needed) and relays
    /// the session. Only the user who runs the proxy is served (where the system names each
    /// connection's owner; FreeBSD does not, and needs the password), unless [proxy]
    /// password_hash is set (from
    /// `--hash-password`): then programs of other users (Postfix) give that password. Web pages
    /// in a browser are shut out. TLS listeners (imaps, pops, smtps, or STARTTLS) need a
    /// certificate: `--make-certificate`. Every key: mailtoken.toml(5), PROXY KEYS; a set-up per
    /// mail program: the README's proxy section and contrib/proxy. Runs until stopped
    /// (Ctrl-C, SIGTERM); contrib/systemd has a user unit for it.
    Proxy {
        /// Read a password on stdin and print the hash to put in [proxy] password_hash
        #[arg(long, conflicts_with = "make_certificate")]
        hash_password: bool,
        /// Make a certificate for the proxy's TLS listeners, signed by a local CA that can
        /// vouch only for this machine (its key is not kept), and say how to trust it
        #[arg(long)]
        make_certificate: bool,
    },
    /// Show accounts, login state and token expiry (never a secret)
    Status {
        /// Only this account
        account: Option<String>,
    },
    /// Forget an account's stored tokens
    Logout {
        /// Account name from the config
        account: String,
    },
    /// Remove an account: forget its stored tokens and delete its section from the config
    Remove {
        /// Account name from the config
        account: String,
    },
    /// Rename an account: its config section and its stored tokens
    Rename {
        /// Account name from the config
        account: String,
        /// The new name (letters, digits, . _ - @)
        new: String,
    },
    /// Refresh now, so refresh tokens never reach their inactivity limit (for a timer or cron)
    Refresh {
        /// Accounts to refresh
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        accounts: Vec<String>,

        /// Every account in the config (app-only accounts are skipped: they have no refresh token)
        #[arg(long)]
        all: bool,
    },
    /// git credential helper: answers `get` with the access token as the password
    #[command(name = "git-credential")]
    GitCredential {
        /// The account to answer for [default: the one whose user is git's username]
        #[arg(long)]
        account: Option<String>,

        /// What git asks: get, store or erase (store and erase do nothing)
        operation: String,
    },
    /// Print a shell completion script (README: where each shell looks for it)
    Completions {
        /// The shell to write the script for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Send a short real test message through the account's SMTP server (or Microsoft Graph)
    SendTest(SendTestArgs),
    /// Log in to the mail servers with the current token, report each step, log out
    Check(CheckArgs),
    /// Show who the access token belongs to (claims, Graph /me or userinfo; never the token)
    Whoami {
        /// Account name from the config
        account: String,
    },
    /// Look for setup problems without changing anything (exit 1 if one is an error)
    Doctor {
        /// Only this account
        account: Option<String>,
    },
    /// The account names of the config, one per line (for shell completion)
    #[command(hide = true)]
    Accounts,
    /// The device login a call that found the login dead starts (relogin = "device"): run by
    /// mailtoken itself, in the background
    #[command(name = "background-login", hide = true)]
    BackgroundLogin {
        /// Account name from the config
        account: String,
    },
}

#[derive(Debug, Args)]
pub struct SendTestArgs {
    /// Account name from the config
    pub account: String,

    /// Recipient address
    #[arg(long)]
    pub to: String,

    /// Subject line of the test message
    #[arg(long, default_value = "mailtoken test message")]
    pub subject: String,

    /// SASL mechanism for SMTP
    #[arg(long, value_enum, default_value_t = Mech::Xoauth2)]
    pub mech: Mech,

    /// Send through SMTP or the Microsoft Graph sendMail API
    #[arg(long, value_enum, default_value_t = Via::Smtp)]
    pub via: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    Smtp,
    Graph,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Account name from the config
    pub account: String,

    /// Check IMAP
    #[arg(long)]
    pub imap: bool,

    /// Check SMTP
    #[arg(long)]
    pub smtp: bool,

    /// Check POP3
    #[arg(long)]
    pub pop: bool,

    /// SASL mechanism
    #[arg(long, value_enum, default_value_t = Mech::Xoauth2)]
    pub mech: Mech,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Account name from the config
    pub account: String,

    /// Use the device flow: a URL and a code to enter in any browser, on any device (and no
    /// other: no going on in the browser when the tenant blocks it)
    #[arg(long, conflicts_with = "browser")]
    pub device: bool,

    /// Use the browser flow (authorization code + PKCE, redirect caught on 127.0.0.1)
    #[arg(long)]
    pub browser: bool,

    /// Browser flow: print the address but do not start a browser
    #[arg(long)]
    pub no_open: bool,

    /// Device flow: also open the verification page in the system browser
    #[arg(long)]
    pub open: bool,

    /// Device flow: do not draw the verification address as a QR code
    #[arg(long)]
    pub no_qr: bool,

    /// Device flow: do not put the user code on the clipboard
    #[arg(long)]
    pub no_copy: bool,

    /// Browser flow: paste the address the browser was sent to, instead of listening for it
    #[arg(long)]
    pub paste: bool,

    /// Browser flow: seconds to wait for the browser to come back
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Account name from the config
    pub account: String,

    /// What to print
    #[arg(long, short, value_enum, default_value_t)]
    pub format: Format,

    /// User for the SASL formats [default: the account's `user`]
    #[arg(long)]
    pub user: Option<String>,

    /// Server host for OAUTHBEARER
    #[arg(long)]
    pub host: Option<String>,

    /// Server port for OAUTHBEARER
    #[arg(long)]
    pub port: Option<u16>,

    /// Refresh even if the cached token is still valid
    #[arg(long)]
    pub force_refresh: bool,

    /// A token for this named resource of the account ([accounts.NAME.resources])
    #[arg(long, conflicts_with = "scopes")]
    pub resource: Option<String>,

    /// A token for these scopes instead of the account's own (repeatable)
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name for the account (letters, digits, . _ - @)
    pub account: String,

    /// Who runs the login: microsoft (Microsoft 365, Outlook.com), google (Gmail, Workspace),
    /// yahoo, aol, fastmail, zoho, or generic (any OAuth2/OIDC server; give --scope and the
    /// endpoints or --issuer)
    #[arg(long, value_parser = crate::provider::ProviderArg)]
    pub provider: Provider,

    /// Mail address or login name (the SASL user)
    #[arg(long)]
    pub user: Option<String>,

    /// The app's client (application) ID
    #[arg(long)]
    pub client_id: String,

    /// Microsoft tenant: common, consumers, organizations, a tenant ID or domain
    #[arg(long)]
    pub tenant: Option<String>,

    /// Microsoft: the cloud the tenant is in [default: global]
    #[arg(long, value_enum)]
    pub cloud: Option<crate::provider::Cloud>,

    /// Zoho: the data centre the account is in (accounts.zoho.REGION) [default: com]
    #[arg(long, value_enum)]
    pub region: Option<crate::provider::Region>,

    /// Mail services to request scopes for [default: imap,smtp]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub services: Vec<Service>,

    /// A scope to request, instead of --services (repeatable); required for --provider generic
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,

    /// How the first login happens [default: device; browser for Google]
    #[arg(long, value_enum)]
    pub flow: Option<Flow>,

    /// Certificate (PEM) for app-only login with a certificate credential
    #[arg(long, value_name = "PATH", requires = "client_key")]
    pub client_certificate: Option<PathBuf>,

    /// RSA private key (PEM) of --client-certificate
    #[arg(long, value_name = "PATH", requires = "client_certificate")]
    pub client_key: Option<PathBuf>,

    /// Google Workspace service account key (JSON): app-only tokens for --user's mailbox
    #[arg(long, value_name = "PATH", conflicts_with_all = ["client_certificate", "secret"])]
    pub service_account_key: Option<PathBuf>,

    /// Loopback redirect URI registered for the browser flow [default: http://localhost for
    /// Microsoft, http://127.0.0.1/ for generic servers, http://127.0.0.1 otherwise]
    #[arg(long, value_name = "URL")]
    pub redirect_uri: Option<String>,

    /// Read the client secret from this environment variable
    #[arg(long, value_name = "VAR", group = "secret")]
    pub client_secret_env: Option<String>,

    /// Read the client secret from this file
    #[arg(long, value_name = "PATH", group = "secret")]
    pub client_secret_file: Option<PathBuf>,

    /// Read the client secret from this command's output (e.g. "pass show mail/app")
    #[arg(long, value_name = "CMD", group = "secret")]
    pub client_secret_command: Option<String>,

    /// OIDC issuer, for endpoint discovery (generic provider)
    #[arg(long)]
    pub issuer: Option<String>,

    /// Device authorization endpoint (generic provider, without --issuer)
    #[arg(long, value_name = "URL")]
    pub device_authorization_endpoint: Option<String>,

    /// Token endpoint (generic provider, without --issuer)
    #[arg(long, value_name = "URL")]
    pub token_endpoint: Option<String>,

    /// Authorization endpoint of the browser flow (generic provider, without --issuer)
    #[arg(long, value_name = "URL")]
    pub authorization_endpoint: Option<String>,

    /// How the client secret reaches the token endpoint [default: from discovery, else post]
    #[arg(long, value_enum, value_name = "METHOD")]
    pub token_endpoint_auth_method: Option<SecretMethod>,

    /// A private CA's certificate(s), PEM, trusted besides the system's
    #[arg(long, value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,

    /// IMAP server [default: the provider's]
    #[arg(long, value_name = "HOST")]
    pub imap_host: Option<String>,

    /// IMAP port [default: 993]
    #[arg(long, value_name = "PORT")]
    pub imap_port: Option<u16>,

    /// IMAP connection security [default: tls]
    #[arg(long, value_enum, value_name = "TLS")]
    pub imap_tls: Option<TlsMode>,

    /// SMTP server [default: the provider's]
    #[arg(long, value_name = "HOST")]
    pub smtp_host: Option<String>,

    /// SMTP port [default: 587]
    #[arg(long, value_name = "PORT")]
    pub smtp_port: Option<u16>,

    /// SMTP connection security [default: starttls; tls on port 465]
    #[arg(long, value_enum, value_name = "TLS")]
    pub smtp_tls: Option<TlsMode>,

    /// POP server [default: the provider's]
    #[arg(long, value_name = "HOST")]
    pub pop_host: Option<String>,

    /// POP port [default: 995]
    #[arg(long, value_name = "PORT")]
    pub pop_port: Option<u16>,

    /// POP connection security [default: tls]
    #[arg(long, value_enum, value_name = "TLS")]
    pub pop_tls: Option<TlsMode>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_background_login_runs_by_the_name_that_starts_it() {
        let cli = Cli::try_parse_from([
            "mailtoken-full",
            "--config",
            "/c",
            crate::flows::relogin::SUBCOMMAND,
            "work",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::BackgroundLogin { account } if account == "work"));
    }
}
