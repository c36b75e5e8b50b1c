//! The man pages under man/ are generated from the CLI definition; this test fails when they
//! are stale. `bash man/build.sh` regenerates them.

use std::path::Path;

use clap::CommandFactory;

use mailtoken::cli::Cli;

/// What clap_mangen writes, finished: value names in the SYNOPSIS, code in bold rather than
/// in backticks (roff has none), and the sections a man page is expected to have.
fn finish(page: &str, cmd: &clap::Command, top: bool) -> String {
    let mut page = page.to_string();
    // `[--config]` says nothing of what follows the flag: `[--config PATH]`.
    for arg in cmd.get_arguments() {
        let (Some(long), Some(names)) = (arg.get_long(), arg.get_value_names()) else {
            continue;
        };
        if !arg.get_action().takes_values() {
            continue;
        }
        let flag = format!("\\fB\\-\\-{}\\fR]", long.replace('-', "\\-"));
        let with = format!(
            "\\fB\\-\\-{}\\fR \\fI{}\\fR]",
            long.replace('-', "\\-"),
            names
                .iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        page = page.replacen(&flag, &with, 1);
    }
    let mut out = String::new();
    for (i, part) in page.split('`').enumerate() {
        out.push_str(part);
        if i + 1 < page.split('`').count() {
            out.push_str(if i % 2 == 0 { "\\fB" } else { "\\fR" });
        }
    }
    let extra = if top {
        TOP_SECTIONS.to_string()
    } else {
        format!(
            ".SH EXIT STATUS\n0 on success; otherwise as listed in\n.BR mailtoken (1).\n{SEE_ALSO}"
        )
    };
    match out.find(".SH VERSION") {
        Some(at) => format!("{}{extra}{}", &out[..at], &out[at..]),
        None => format!("{out}{extra}"),
    }
}

const SEE_ALSO: &str = ".SH SEE ALSO\n.BR mailtoken (1),\n.BR mailtoken.toml (5)\n";

const TOP_SECTIONS: &str = r#".SH EXIT STATUS
.TP
.B 0
Success.
.TP
.B 1
Another failure: a local I/O error, damaged stored tokens.
.TP
.B 2
A usage or configuration error, including a server certificate that is not trusted here.
.TP
.B 3
A new login is needed: run
.BR "mailtoken login" " NAME."
.TP
.B 4
Network or server trouble; trying again later may work.
.SH ENVIRONMENT
.TP
.B MAILTOKEN_CONFIG
The config file, as
.BR \-\-config .
.TP
.B MAILTOKEN_DATA_DIR
The token store, as
.BR \-\-data\-dir .
.TP
.B MAILTOKEN_HTTP_TIMEOUT
Seconds a request to a token endpoint may take, 1 to 60 (default 30).
.TP
.B MAILTOKEN_QUICK
.B 0
makes every
.B token
call take the full path.
.TP
.BR https_proxy ", " http_proxy ", " all_proxy ", " no_proxy
Proxies for the token endpoints (never for loopback addresses).
.SH FILES
.TP
.I $XDG_CONFIG_HOME/mailtoken/config.toml
The accounts; see
.BR mailtoken.toml (5).
.TP
.I $XDG_DATA_HOME/mailtoken/NAME.json
An account's tokens (0600); beside them
.IR NAME.lock ,
.IR NAME.config " (the account's settings for the quick " token " call),"
.I NAME.discovery.json
and
.IR NAME.notified
(when
.B notify_command
last ran).
.TP
.I mailtoken\-full
Beside
.BR mailtoken ,
from the same build: the program with every command.
.B mailtoken
answers the cached
.B token
call itself and becomes
.B mailtoken\-full
(same process, arguments and exit status) for everything else.
.SH EXAMPLES
.nf
mailtoken add work \-\-provider microsoft \-\-user me@example.com \-\-client\-id ID
mailtoken login work
mailtoken token work \-\-format xoauth2
passwordeval "mailtoken token work"        # msmtp
mailtoken status
.fi
.SH SEE ALSO
.BR mailtoken.toml (5),
.BR msmtp (1),
.BR mutt (1),
.BR mbsync (1)
"#;

/// The pages for the command and each (visible) subcommand, as clap_mangen names them.
fn pages(out: &Path) {
    // The pages say the version, not the build: they would otherwise change with every source.
    let mut cmd = Cli::command()
        .long_version(None)
        .disable_help_subcommand(true);
    cmd.build();
    let write = |cmd: &clap::Command, top: bool| {
        let man = clap_mangen::Man::new(cmd.clone());
        let path = man.generate_to(out).unwrap();
        let page = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, finish(&page, cmd, top)).unwrap();
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write(sub, false);
    }
    write(&cmd, true);
}

#[test]
fn man_pages_match_the_cli() {
    let out = tempfile::tempdir().unwrap();
    pages(out.path());
    let man_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("MAILTOKEN_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(out.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let fresh = std::fs::read_to_string(&path).unwrap();
        let checked_in = man_dir.join(&name);
        if std::fs::read_to_string(&checked_in).ok().as_deref() != Some(fresh.as_str()) {
            if update {
                std::fs::write(&checked_in, &fresh).unwrap();
            } else {
                stale.push(name.to_string_lossy().into_owned());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "man pages out of date with the CLI: {stale:?}; run `bash man/build.sh` and commit the result"
    );
}

#[test]
fn config_man_page_example_parses() {
    let page =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man/mailtoken.toml.5"))
            .unwrap();
    let example = page
        .split(".SH EXAMPLE\n.nf\n")
        .nth(1)
        .and_then(|rest| rest.split("\n.fi").next())
        .expect("an EXAMPLE section");
    let toml = example.replace("\\-", "-");
    let config = mailtoken::config::Config::parse(&toml).unwrap();
    assert_eq!(config.accounts.len(), 2);
    assert!(config.accounts["work"].resources.contains_key("graph"));
}
