# Homebrew formula for mailtoken, in homebrew-core style: builds both programs from a source
# tarball with cargo, installs the man pages, the shell completions, a `brew services` entry
# for the proxy and the other contrib service files, and tests the installed pair.
#
# NOT PUBLISHABLE AS IS: there is no public release yet, so `homepage`, `url` and `sha256`
# below are PLACEHOLDERS, marked "PLACEHOLDER". The .invalid domain never resolves (RFC 6761)
# and the sha256 is all zeros, so a fetch fails loudly instead of building something else.
# When a release is published, set:
#   homepage - the project's page;
#   url      - the release's source tarball, named mailtoken-VERSION.tar.gz (Homebrew takes
#              the version from that name; it must match Cargo.toml's). The source crate
#              packaging/release.sh makes, dist/mailtoken-VERSION.crate, will do: it is a
#              .tar.gz of src, Cargo.lock, man and contrib (Cargo.toml's `include`);
#   sha256   - `shasum -a 256 mailtoken-VERSION.tar.gz` (or `brew fetch --build-from-source`).
# tests/packaging/recipes.sh fails if only one of url and sha256 is filled in.
# To try the formula before then, make a tarball of a commit and point url at it:
#   git archive --prefix=mailtoken-0.1.0/ -o /tmp/mailtoken-0.1.0.tar.gz HEAD
#   url "file:///tmp/mailtoken-0.1.0.tar.gz" and sha256 of that file, then
#   brew install --build-from-source ./packaging/homebrew/mailtoken.rb && brew test mailtoken
class Mailtoken < Formula
  desc "OAuth2 credential helper for mail clients (IMAP/POP/SMTP XOAUTH2 tokens)"
  homepage "https://mailtoken.invalid/" # PLACEHOLDER: the project's page
  url "https://mailtoken.invalid/PLACEHOLDER/mailtoken-0.1.0.tar.gz" # PLACEHOLDER: release tarball
  sha256 "0000000000000000000000000000000000000000000000000000000000000000" # PLACEHOLDER
  license any_of: ["MIT", "Apache-2.0"]

  # The `ring` crate compiles C and assembly: the compiler of Xcode's Command Line Tools on
  # macOS, the host's on Linux. The OS keyring (default feature `keyring`) is the Keychain on
  # macOS and Secret Service over a pure-Rust D-Bus client on Linux: no library to depend on.
  depends_on "rust" => :build

  def install
    # std_cargo_args is `--locked --root=#{prefix} --path=.`: `cargo install` puts both of the
    # crate's programs, mailtoken and mailtoken-full, in bin/. They must stay side by side:
    # mailtoken runs mailtoken-full from its own directory for every command but the cached
    # `token` call.
    system "cargo", "install", *std_cargo_args

    man1.install Dir["man/*.1"]
    man5.install "man/mailtoken.toml.5"

    # Runs `mailtoken completions bash|zsh|fish` (the shell name is appended as the last
    # argument, which is what the `completions` subcommand takes).
    generate_completions_from_executable(bin/"mailtoken", "completions")

    # The other service files, for the refresh agent and for systemd users on Linux, with this
    # installation's path to mailtoken written in. launchd expands neither ~ nor $HOME, so the
    # plists keep their @HOME@ placeholder (see caveats). Only the ProgramArguments entry is
    # replaced, not the sed line of the plists' header comment; inreplace fails if the text is
    # not there.
    (pkgshare/"launchd").install Dir["contrib/launchd/*.plist"]
    inreplace Dir[pkgshare/"launchd/*.plist"],
              "<string>@MAILTOKEN@</string>", "<string>#{opt_bin}/mailtoken</string>"
    (pkgshare/"systemd").install Dir["contrib/systemd/*"]
    inreplace [pkgshare/"systemd/mailtoken-proxy.service", pkgshare/"systemd/mailtoken-refresh.service"],
              "%h/.cargo/bin/mailtoken", "#{opt_bin}/mailtoken"
  end

  def caveats
    <<~EOS
      `brew services start mailtoken` runs `mailtoken proxy` (the [proxy] section of
      ~/.config/mailtoken/config.toml). Your own programs get in with any password; other
      users need the local password (`mailtoken proxy --hash-password`, then [proxy]
      password_hash).

      To refresh every account daily, so refresh tokens never expire from disuse:
        macOS:
          sed "s|@HOME@|$HOME|" #{opt_pkgshare}/launchd/org.mailtoken.refresh.plist \\
            > ~/Library/LaunchAgents/org.mailtoken.refresh.plist
          launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/org.mailtoken.refresh.plist
        Linux (systemd):
          cp #{opt_pkgshare}/systemd/mailtoken-refresh.* ~/.config/systemd/user/
          systemctl --user daemon-reload && systemctl --user enable --now mailtoken-refresh.timer
    EOS
  end

  service do
    run [opt_bin/"mailtoken", "proxy"]
    # Started again if it fails, not after a clean stop (the proxy exits 0 on SIGTERM), as in
    # contrib/launchd/org.mailtoken.proxy.plist.
    keep_alive successful_exit: false
    log_path var/"log/mailtoken-proxy.log"
    error_log_path var/"log/mailtoken-proxy.log"
  end

  test do
    # Every command below except `token` is run by mailtoken-full: these also check that
    # mailtoken finds it beside itself, from the same build.
    assert_match "mailtoken #{version}", shell_output("#{bin}/mailtoken --version")

    (testpath/"config.toml").write <<~TOML
      [accounts.test]
      provider = "microsoft"
      user = "me@example.com"
      client_id = "00000000-0000-0000-0000-000000000000"
    TOML
    args = "--config #{testpath}/config.toml --data-dir #{testpath}/data"

    # An account that never logged in: listed, exit status 0, and no network needed.
    output = shell_output("#{bin}/mailtoken #{args} status")
    assert_match "test (microsoft, me@example.com, device login)", output
    assert_match(/logged in:\s+no/, output)

    # The cached-token path (the front program alone): no stored login is exit status 3,
    # "a new login is needed", with nothing on stdout (stdout holds only a token).
    assert_empty shell_output("#{bin}/mailtoken #{args} token test 2>/dev/null", 3)

    # A config that does not parse is a config error: exit status 2.
    (testpath/"bad.toml").write "accounts = [\n"
    output = shell_output("#{bin}/mailtoken --config #{testpath}/bad.toml status 2>&1", 2)
    assert_match "bad.toml", output

    assert_match "_mailtoken", (bash_completion/"mailtoken").read
  end
end
