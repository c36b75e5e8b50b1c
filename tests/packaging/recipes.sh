#!/usr/bin/env bash
# Checks the Homebrew formula (packaging/homebrew/mailtoken.rb) and the Nix flake (flake.nix)
# as far as a Linux machine without network can: neither is built here (no macOS, no brew,
# and nixpkgs cannot be fetched), so this is their syntax, and greps that hold each to what
# its header promises. Fails on the first broken promise. Called by tests/all.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

formula=packaging/homebrew/mailtoken.rb
flake=flake.nix

fail() { echo "recipes.sh: FAIL: $*" >&2; exit 1; }
# has FILE TEXT WHY: FILE contains TEXT literally.
has() { grep -qF -- "$2" "$1" || fail "$1 lacks \`$2\` ($3)"; }

# The two checkers. CI runs as root on Debian, so they are installed when missing; anywhere
# else a missing checker is an error, not a silent skip.
need() { # COMMAND PACKAGE
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    fail "$1 is missing: install the $2 package (not root with apt-get, so not done here)"
  fi
  echo "recipes.sh: installing $2" >&2
  apt-get install -y -qq "$2" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null; } \
    || fail "apt-get could not install $2"
  command -v "$1" >/dev/null || fail "$2 installed but $1 is still missing"
}
need ruby ruby
need nix-instantiate nix-bin

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || fail "no version in Cargo.toml"

# ---- Homebrew ----
ruby -c "$formula" >/dev/null || fail "$formula: Ruby syntax"
has "$formula" 'license any_of: ["MIT", "Apache-2.0"]' "both licences, the user's choice"
has "$formula" 'depends_on "rust" => :build' "cargo to build with"
# std_cargo_args is `cargo install --root=PREFIX --path=.`: both programs land in bin/.
has "$formula" 'system "cargo", "install", *std_cargo_args' "the build"
has "$formula" 'man1.install Dir["man/*.1"]' "section 1 man pages"
has "$formula" 'man5.install "man/mailtoken.toml.5"' "the config file's man page"
has "$formula" 'generate_completions_from_executable(bin/"mailtoken", "completions")' "completions"
has "$formula" 'run [opt_bin/"mailtoken", "proxy"]' "brew services runs the proxy"
grep -q '^  test do$' "$formula" || fail "$formula has no test block"
# The test block runs the installed program, and checks an exit status other than 0.
grep -qF 'shell_output("#{bin}/mailtoken --version")' "$formula" || fail "$formula: test skips --version"
grep -qE 'shell_output\("#\{bin\}/mailtoken .*", [1-9]\)' "$formula" \
  || fail "$formula: the test block checks no failing exit status"

# url and sha256: both placeholders (no release yet) or both real, and the tarball named for
# Cargo.toml's version (Homebrew takes the version from the name).
url=$(sed -n 's/^  url "\([^"]*\)".*/\1/p' "$formula")
sha=$(sed -n 's/^  sha256 "\([^"]*\)".*/\1/p' "$formula")
case "$url" in
*/mailtoken-"$version".tar.gz | */mailtoken-"$version".crate) ;;
*) fail "$formula: url $url is not a mailtoken-$version.tar.gz or .crate (Cargo.toml's version)" ;;
esac
[[ "$sha" =~ ^[0-9a-f]{64}$ ]] || fail "$formula: sha256 is not 64 hex digits"
if [[ "$url" == *.invalid/* ]]; then
  [ "$sha" = "$(printf '0%.0s' {1..64})" ] || fail "$formula: sha256 filled in for a placeholder url"
  echo "recipes.sh: note: $formula still has its placeholder url/sha256 (no release yet)" >&2
else
  [ "$sha" != "$(printf '0%.0s' {1..64})" ] || fail "$formula: real url with the placeholder sha256"
fi

# ---- Nix ----
nix-instantiate --parse "$flake" >/dev/null || fail "$flake: Nix syntax"
for system in x86_64-linux aarch64-linux x86_64-darwin aarch64-darwin; do
  has "$flake" "\"$system\"" "a system to build for"
done
has "$flake" 'rustPlatform.buildRustPackage' "the builder"
has "$flake" 'inherit (cargoToml.package) version;' "the version read from Cargo.toml"
# cargoLock.lockFile needs no vendor hash only while every crate comes from a registry.
has "$flake" 'cargoLock.lockFile = ./Cargo.lock;' "dependencies pinned by the lock file"
if grep -q '^source = "git+' Cargo.lock; then
  fail "Cargo.lock has git dependencies: flake.nix needs cargoLock.outputHashes for them"
fi
has "$flake" 'installManPage man/*.1 man/*.5' "man pages"
has "$flake" 'installShellCompletion --cmd mailtoken' "completions"
# shellcheck disable=SC2016 # $out is Nix's, matched literally
has "$flake" 'install -Dm644 -t $out/lib/systemd/user contrib/systemd/*' "the systemd user units"
has "$flake" "--replace-fail '%h/.cargo/bin/mailtoken' \"\$out/bin/mailtoken\"" \
  "the units run the package's program, not ~/.cargo/bin's"
has "$flake" 'mainProgram = "mailtoken";' "nix run"
grep -qE '^ +mit$' "$flake" || fail "$flake: no mit licence in meta"
grep -qE '^ +asl20$' "$flake" || fail "$flake: no asl20 licence in meta"
# Every path of the source fileset exists (lib.fileset stops the build on a missing one).
sed -n '/fileset = lib.fileset.unions \[/,/\];/p' "$flake" | sed -n 's|^ *\(\./[^ ]*\)$|\1|p' \
  | { n=0; while read -r path; do [ -e "$path" ] || fail "$flake: source path $path is missing"; n=$((n + 1)); done
      [ "$n" -gt 0 ] || fail "$flake: no source fileset paths found"; }

# ---- What both recipes rewrite at install time: the text must still be there ----
for unit in contrib/systemd/mailtoken-proxy.service contrib/systemd/mailtoken-refresh.service; do
  has "$unit" 'ExecStart=%h/.cargo/bin/mailtoken ' "the path the recipes replace"
done
for plist in contrib/launchd/*.plist; do
  has "$plist" '<string>@MAILTOKEN@</string>' "the placeholder the recipes fill in"
done
[ -f man/mailtoken.toml.5 ] || fail "man/mailtoken.toml.5 is missing"
compgen -G 'man/mailtoken*.1' >/dev/null || fail "no man/mailtoken*.1"

echo "recipes.sh: Homebrew formula and Nix flake checks passed" >&2
