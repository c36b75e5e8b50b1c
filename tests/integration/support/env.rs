//! The test environment every theme runs the binary in: a temporary directory with its own
//! config, token store and home, the constants of the test login, and the helpers that write
//! them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::oauth_server::FakeServer;
pub use super::run::*;

pub const CLIENT_ID: &str = "mailtoken-test";
pub const USER: &str = "alice@example.com";
pub const SCOPE: &str = "mail offline_access";
pub const ACCOUNT: &str = "work";
pub const TOKEN: &str = "AT-secret-0123456789";
pub const GRAPH_TOKEN: &str = "GRAPH-secret-9876";
pub const REFRESH: &str = "RT-secret-abcdef";
/// 2100-01-01: the stored tokens never need a refresh, so no OAuth server is needed.
pub const FAR_FUTURE: i64 = 4_102_444_800;

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A base URL nobody answers: for accounts whose stored token must suffice.
pub fn nowhere() -> String {
    format!("http://127.0.0.1:{}", closed_port())
}

/// The `[accounts.NAME]` table for a generic account pointing at `base_url`.
pub fn account_toml(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "[accounts.{name}]\n\
         provider = \"generic\"\n\
         user = \"{USER}\"\n\
         client_id = \"{CLIENT_ID}\"\n\
         device_authorization_endpoint = \"{base_url}/device\"\n\
         token_endpoint = \"{base_url}/token\"\n\
         scopes = [\"mail\", \"offline_access\"]\n\
         {extra}\n"
    )
}

/// An isolated directory with a config file and a data dir.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub data: PathBuf,
    pub home: PathBuf,
}

impl TestEnv {
    /// No config file written yet; data dir not created.
    pub fn empty() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("mailtoken-it-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("config.toml");
        let data = dir.path().join("data");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("create home");
        TestEnv {
            dir,
            config,
            data,
            home,
        }
    }

    /// No config file yet, and a store directory (0700) that tests fill by hand.
    pub fn with_store() -> TestEnv {
        let env = Self::empty();
        env.ensure_data_dir();
        env
    }

    /// `config`, and a store holding the usual login of "work": `TOKEN`, valid until 2100.
    pub fn logged_in(config: &str) -> TestEnv {
        let env = Self::with_store();
        env.write_config(config);
        env.write_token(ACCOUNT, TOKEN, REFRESH, FAR_FUTURE);
        env
    }

    /// Config with account "work" pointing at `server`.
    pub fn new(server: &FakeServer) -> TestEnv {
        Self::with_extra(server, "", "")
    }

    /// Config with account "work"; `top` goes before the account table,
    /// `account_extra` inside it.
    pub fn with_extra(server: &FakeServer, top: &str, account_extra: &str) -> TestEnv {
        Self::with_config_text(&format!(
            "{top}\n{}",
            account_toml(ACCOUNT, &server.base_url(), account_extra)
        ))
    }

    pub fn with_config_text(text: &str) -> TestEnv {
        let env = Self::empty();
        env.write_config(text);
        env
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    pub fn token_path(&self, name: &str) -> PathBuf {
        self.data.join(format!("{name}.json"))
    }

    pub fn ensure_data_dir(&self) {
        std::fs::create_dir_all(&self.data).expect("create data dir");
        std::fs::set_permissions(&self.data, std::fs::Permissions::from_mode(0o700))
            .expect("chmod data dir");
    }

    /// Write raw bytes as the token file of `name` (mode 0600).
    pub fn write_token_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        self.ensure_data_dir();
        let p = self.token_path(name);
        std::fs::write(&p, bytes).expect("write token file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
            .expect("chmod token file");
        p
    }

    /// Write a well-formed token file; returns its exact bytes.
    pub fn write_token(&self, name: &str, at: &str, rt: &str, expires_at: i64) -> Vec<u8> {
        let v = serde_json::json!({
            "version": 1,
            "access_token": at,
            "token_type": "Bearer",
            "expires_at": expires_at,
            "refresh_token": rt,
            "scope": SCOPE,
        });
        let bytes = serde_json::to_vec(&v).expect("serialize token");
        self.write_token_bytes(name, &bytes);
        bytes
    }

    pub fn read_token_json(&self, name: &str) -> serde_json::Value {
        let p = self.token_path(name);
        let bytes =
            std::fs::read(&p).unwrap_or_else(|e| panic!("read token file {}: {e}", p.display()));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("token file {} is not JSON: {e}", p.display()))
    }

    /// Entries of the data dir other than the token files and lock files.
    pub fn stray_files(&self) -> Vec<String> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.data).expect("read data dir") {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".json") || name.ends_with(".lock")) {
                v.push(name);
            }
        }
        v
    }

    pub fn token_bytes(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.token_path(name)).ok()
    }

    /// Base command: isolated HOME/XDG dirs, no proxies, no inherited
    /// MAILTOKEN_* variables. Does not add --config/--data-dir.
    pub fn bare_command(&self) -> Command {
        let mut cmd = Command::new(bin());
        for v in [
            "MAILTOKEN_CONFIG",
            "MAILTOKEN_DATA_DIR",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "RUST_LOG",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("NO_PROXY", "127.0.0.1,localhost,::1")
            .env("no_proxy", "127.0.0.1,localhost,::1")
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env("XDG_STATE_HOME", self.home.join(".local/state"))
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .current_dir(self.dir.path());
        cmd
    }

    /// Command with `--config` and `--data-dir` before `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare_command();
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args);
        cmd
    }

    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args), format!("mailtoken {}", args.join(" ")))
    }

    pub fn run(&self, args: &[&str]) -> RunResult {
        self.spawn(args).wait(RUN_TIMEOUT)
    }

    /// Run with MAILTOKEN_CONFIG / MAILTOKEN_DATA_DIR instead of flags.
    pub fn run_with_env_vars(&self, args: &[&str]) -> RunResult {
        let mut cmd = self.bare_command();
        cmd.env("MAILTOKEN_CONFIG", &self.config)
            .env("MAILTOKEN_DATA_DIR", &self.data)
            .args(args);
        Running::spawn(cmd, format!("mailtoken {} (env vars)", args.join(" "))).wait(RUN_TIMEOUT)
    }
}

impl RunResult {
    /// No secret of the test store may appear anywhere in the output.
    #[track_caller]
    pub fn assert_no_secrets(&self) {
        self.assert_no_leak(&[TOKEN, GRAPH_TOKEN, REFRESH]);
    }
}

pub fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}
