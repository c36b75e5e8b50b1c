//! `remove`, `rename`, and `add` over an account that exists: other bytes stay, tokens follow.

use crate::support::env::*;

/// Two accounts whose names share a prefix, comments, a sub-table and a quoted name.
fn config(base: &str) -> String {
    format!(
        "# my accounts\nrefresh_margin = 600\n\n# the office\n{}\n[accounts.work.resources]\n\
         graph = [\"https://graph.microsoft.com/User.Read\"]\n\n# the second job\n{}\n{}",
        account_toml("work", base, ""),
        account_toml("work2", base, "# keep me"),
        account_toml("\"me@home.org\"", base, "")
    )
}

fn data_file(env: &TestEnv, name: &str) -> std::path::PathBuf {
    env.data.join(name)
}

#[test]
fn remove_takes_the_account_its_tokens_and_its_files_and_nothing_else() {
    let base = nowhere();
    let env = TestEnv::logged_in(&config(&base));
    std::fs::set_permissions(
        &env.config,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let work2 = env.write_token("work2", "AT-2", "RT-2", FAR_FUTURE);
    for derived in [
        "work.config",
        "work.discovery.json",
        "work.failed",
        "work.notified",
    ] {
        std::fs::write(data_file(&env, derived), "x").unwrap();
    }
    let r = env.run(&["remove", "work"]);
    r.expect_code(0)
        .assert_stderr_has("Removed account `work` from")
        .assert_stderr_has("forgot its tokens")
        .assert_no_secrets();
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    let expected = config(&base).replace(
        &format!(
            "# the office\n{}\n[accounts.work.resources]\n\
             graph = [\"https://graph.microsoft.com/User.Read\"]\n\n",
            account_toml("work", &base, "")
        ),
        "",
    );
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), expected);
    assert_eq!(mode_of(&env.config), 0o600);
    assert!(!env.token_path("work").exists());
    for derived in [
        "work.config",
        "work.discovery.json",
        "work.failed",
        "work.notified",
    ] {
        assert!(
            !data_file(&env, derived).exists(),
            "{derived} is still there"
        );
    }
    assert_eq!(env.token_bytes("work2").unwrap(), work2);
    env.run(&["token", "work2"]).expect_code(0);

    let again = env.run(&["remove", "work"]);
    again.expect_code(2).assert_stderr_has("no account `work`");
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), expected);
}

#[test]
fn remove_erases_a_command_stores_tokens_with_its_erase_command() {
    let env = TestEnv::with_store();
    let vault = env.dir.path().join("vault");
    let v = vault.display();
    env.write_config(&account_toml(
        "work",
        &nowhere(),
        &format!(
            "store = \"command\"\nstore_load_command = \"cat {v} 2>/dev/null || true\"\n\
             store_save_command = \"cat > {v}\"\nstore_erase_command = \"rm -f {v}\""
        ),
    ));
    std::fs::write(
        &vault,
        serde_json::json!({"version": 1, "access_token": TOKEN, "token_type": "Bearer",
            "expires_at": FAR_FUTURE, "refresh_token": REFRESH})
        .to_string(),
    )
    .unwrap();
    env.run(&["remove", "work"])
        .expect_code(0)
        .assert_stderr_has("forgot its tokens");
    assert!(!vault.exists());
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), "");
}

#[test]
fn rename_moves_the_section_and_the_tokens_and_the_new_name_works() {
    let base = nowhere();
    let env = TestEnv::logged_in(&config(&base));
    let bytes = std::fs::read(env.token_path("work")).unwrap();
    std::fs::write(data_file(&env, "work.config"), "x").unwrap();
    let r = env.run(&["rename", "work", "office"]);
    r.expect_code(0)
        .assert_stderr_has("Renamed account `work` to `office`")
        .assert_no_secrets();
    let text = std::fs::read_to_string(&env.config).unwrap();
    assert_eq!(
        text,
        config(&base)
            .replace("[accounts.work]\n", "[accounts.office]\n")
            .replace("[accounts.work.resources]", "[accounts.office.resources]")
    );
    assert!(!env.token_path("work").exists());
    assert!(!data_file(&env, "work.config").exists());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(env.token_path("office")).unwrap()
        )
        .unwrap()["refresh_token"],
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["refresh_token"]
    );
    let r = env.run(&["token", "office"]);
    r.expect_code(0);
    assert_eq!(r.stdout.trim(), TOKEN);
    env.run(&["token", "work"])
        .expect_code(2)
        .assert_stderr_has("no account `work`");

    // A quoted name, to a name that must be quoted.
    env.run(&["rename", "me@home.org", "me@home.net"])
        .expect_code(0);
    assert!(
        std::fs::read_to_string(&env.config)
            .unwrap()
            .contains("[accounts.\"me@home.net\"]\n")
    );
}

#[test]
fn rename_refuses_a_taken_or_unusable_name_and_tokens_left_under_it() {
    let env = TestEnv::logged_in(&config(&nowhere()));
    let before = std::fs::read_to_string(&env.config).unwrap();
    env.run(&["rename", "work", "work2"])
        .expect_code(2)
        .assert_stderr_has("account `work2` already exists")
        .assert_stderr_has("mailtoken remove work2");
    env.run(&["rename", "work", "a/b"])
        .expect_code(2)
        .assert_stderr_has("not a usable account name");
    env.run(&["rename", "nobody", "x"])
        .expect_code(2)
        .assert_stderr_has("no account `nobody`");
    // Tokens of an account once called so, removed from the config by hand: never overwritten.
    let old = env.write_token("office", "AT-old", "RT-old", FAR_FUTURE);
    env.run(&["rename", "work", "office"])
        .expect_code(2)
        .assert_stderr_has("tokens are already stored under `office`");
    assert_eq!(std::fs::read_to_string(&env.config).unwrap(), before);
    assert_eq!(env.token_bytes("office").unwrap(), old);
    assert!(env.token_path("work").exists());
}

#[test]
fn add_over_an_existing_account_says_how_to_change_it() {
    let env = TestEnv::logged_in(&config(&nowhere()));
    env.run(&["add", "work", "--provider", "google", "--client-id", "x"])
        .expect_code(2)
        .assert_stderr_has("account `work` already exists in")
        .assert_stderr_has("edit it there, or `mailtoken remove work` first")
        .assert_stderr_has("mailtoken rename work NEW");
}
