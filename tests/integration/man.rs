//! The man pages under man/ are generated from the CLI definition; this test fails when they
//! are stale. `bash man/build.sh` regenerates them.

use std::path::Path;

use clap::CommandFactory;

use mailtoken::cli::Cli;

#[test]
fn man_pages_match_the_cli() {
    let out = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(Cli::command(), out.path()).unwrap();
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
