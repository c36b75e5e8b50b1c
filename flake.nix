# Nix flake for mailtoken: builds and installs both programs (mailtoken, mailtoken-full) with
# their man pages, shell completions and systemd user units, for Linux and macOS; plus
# `nix run`, an overlay and a development shell.
#   nix build                 # ./result/bin/mailtoken
#   nix run . -- status
#   nix develop               # cargo, rustc, clippy, rustfmt
# Nix sees only files git knows about: `git add` new files before building.
{
  description = "mailtoken: OAuth2 credential helper for mail clients";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);

      # The package, as a function for callPackage: `.override { withKeyring = false; }` builds
      # without the OS keyring (cargo --no-default-features), for systems without D-Bus.
      mailtoken =
        {
          lib,
          stdenv,
          rustPlatform,
          installShellFiles,
          withKeyring ? true,
        }:
        rustPlatform.buildRustPackage {
          pname = "mailtoken";
          inherit (cargoToml.package) version;

          # Only what the build reads (build.rs hashes Cargo.toml, Cargo.lock, build.rs and src/
          # into the build identity both programs must share) and what postInstall installs, so
          # that editing tests or docs does not rebuild the package.
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./Cargo.toml
              ./Cargo.lock
              ./build.rs
              ./src
              ./man
              ./contrib/systemd
              ./contrib/launchd
            ];
          };

          # Every dependency comes from crates.io (no git sources in Cargo.lock), so the lock
          # file alone pins them: no vendor hash to keep up to date.
          cargoLock.lockFile = ./Cargo.lock;

          buildNoDefaultFeatures = !withKeyring;

          nativeBuildInputs = [ installShellFiles ];

          # Not the crate's test suite. It runs the built program against fake OAuth2, IMAP, POP
          # and SMTP servers on 127.0.0.1 (allowed in the Linux sandbox, not in the macOS one
          # without __darwinAllowLocalNetworking); a dozen of its tests need root (a small
          # tmpfs, chattr +i, clients run as `nobody`) and skip themselves without it; many
          # are timing-sensitive (signals in the middle of a refresh, lock deadlines, storms of
          # parallel calls) and would fail at random on a loaded builder; and it would compile
          # everything a second time under the fat-LTO release profile. The project's CI
          # (tests/all.sh) runs all of it. Instead, installCheckPhase below runs the installed
          # programs.
          doCheck = false;

          postInstall = ''
            installManPage man/*.1 man/*.5
          ''
          # The completions come from the program itself, so only when the build machine can
          # run what it built (not when cross-compiling).
          + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
            installShellCompletion --cmd mailtoken \
              --bash <($out/bin/mailtoken completions bash) \
              --fish <($out/bin/mailtoken completions fish) \
              --zsh <($out/bin/mailtoken completions zsh)
          ''
          # systemd user units, with this package's mailtoken in ExecStart instead of
          # ~/.cargo/bin's: found by NixOS's `systemd.packages = [ pkgs.mailtoken ];`, which
          # keeps this store path alive (a unit copied by hand pins a path a garbage collection
          # may remove). --replace-fail stops the build if the text is no longer there.
          + lib.optionalString stdenv.hostPlatform.isLinux ''
            install -Dm644 -t $out/lib/systemd/user contrib/systemd/*
            substituteInPlace \
              $out/lib/systemd/user/mailtoken-proxy.service \
              $out/lib/systemd/user/mailtoken-refresh.service \
              --replace-fail '%h/.cargo/bin/mailtoken' "$out/bin/mailtoken"
          ''
          # launchd agents, with the program path written in. launchd expands neither ~ nor
          # $HOME, so @HOME@ stays for the user to fill in (the plists' header comments say how).
          + lib.optionalString stdenv.hostPlatform.isDarwin ''
            install -Dm644 -t $out/share/mailtoken/launchd contrib/launchd/*.plist
            substituteInPlace $out/share/mailtoken/launchd/*.plist \
              --replace-fail '<string>@MAILTOKEN@</string>' "<string>$out/bin/mailtoken</string>"
          '';

          # The installed pair: mailtoken runs mailtoken-full from its own directory for every
          # command but the cached `token` call, so these fail if the two are not side by side or
          # not from the same build. No network: an account that never logged in.
          doInstallCheck = true;
          installCheckPhase = ''
            runHook preInstallCheck
            fail() { echo "install check: $*" >&2; exit 1; }
            res=$($out/bin/mailtoken --version) || fail "--version failed"
            case "$res" in
            "mailtoken ${cargoToml.package.version}" | "mailtoken ${cargoToml.package.version} "*) ;;
            *) fail "--version printed: $res" ;;
            esac
            printf '%s\n' '[accounts.test]' 'provider = "microsoft"' 'user = "me@example.com"' \
              'client_id = "00000000-0000-0000-0000-000000000000"' > "$TMPDIR/config.toml"
            args=(--config "$TMPDIR/config.toml" --data-dir "$TMPDIR/data")
            res=$($out/bin/mailtoken "''${args[@]}" status) || fail "status failed"
            grep -qE 'logged in: +no' <<< "$res" || fail "status printed: $res"
            # No stored login: exit status 3 ("a new login is needed") and an empty stdout.
            rc=0
            res=$($out/bin/mailtoken "''${args[@]}" token test) || rc=$?
            [ "$rc" -eq 3 ] || fail "token: exit status $rc, expected 3"
            [ -z "$res" ] || fail "token printed on stdout: $res"
            runHook postInstallCheck
          '';

          meta = {
            description = "OAuth2 credential helper for mail clients: access tokens and SASL XOAUTH2 strings";
            longDescription = cargoToml.package.description;
            # No public homepage yet.
            license = with lib.licenses; [
              mit
              asl20
            ];
            mainProgram = "mailtoken";
            platforms = lib.platforms.unix;
          };
        };
    in
    {
      packages = forAllSystems (pkgs: {
        mailtoken = pkgs.callPackage mailtoken { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.mailtoken;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.mailtoken;
          meta.description = "Run mailtoken";
        };
      });

      # `nix flake check` builds the package, with its install check.
      checks = forAllSystems (pkgs: {
        mailtoken = self.packages.${pkgs.stdenv.hostPlatform.system}.mailtoken;
      });

      # For NixOS and home-manager configurations: pkgs.mailtoken.
      overlays.default = final: _prev: { mailtoken = final.callPackage mailtoken { }; };

      # Cargo.toml's rust-version (1.89) is checked by cargo itself; nixos-unstable's Rust is
      # newer. The C compiler is there for ring's build script.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
          ];
        };
      });
    };
}
