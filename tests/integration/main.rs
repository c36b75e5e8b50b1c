//! The integration tests, one binary: each module is a theme, each test runs the built
//! `mailtoken` as a separate process against fake servers on 127.0.0.1 (support/), in its own
//! temporary directory, so they run in parallel.

mod support;

mod cli;
mod crash;
mod device_blocked;
mod device_login;
mod doctor;
mod fake_server_selftest;
mod faults;
mod flows;
mod graph_whoami;
mod habits;
mod hygiene;
mod local_input;
mod mailcheck;
mod man;
mod manage;
mod newcomer;
mod parsers;
mod proxy;
mod proxy_guard;
mod proxy_logins;
mod proxy_users;
mod quick;
mod refresh;
mod relogin;
mod stores;
mod survival;
mod token_failures;

/// Every file of this directory is a module of this binary, and every module a file: a test
/// file nobody declared would never run, and nothing would say so (jj's guard of the same
/// name).
#[test]
fn no_forgotten_test_files() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration");
    let declared: std::collections::BTreeSet<String> = include_str!("main.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    let files: std::collections::BTreeSet<String> = std::fs::read_dir(&here)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if e.path().is_dir() {
                return Some(name);
            }
            let stem = name.strip_suffix(".rs")?;
            (stem != "main").then(|| stem.to_string())
        })
        .collect();
    assert_eq!(
        declared, files,
        "tests/integration and the mod lines of main.rs differ"
    );
}
