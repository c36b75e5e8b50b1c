#!/usr/bin/env bash
# The release: dist/mailtoken-VERSION-x86_64-linux.tar.gz (both programs linked statically,
# so they run on any x86_64 Linux with glibc's resolver; man pages; completions for bash, zsh
# and fish; systemd user units; contrib files; README and both licences; install.sh), the
# source crate dist/mailtoken-VERSION.crate (what `cargo package` makes, for recipes that
# build from source), dist/SHA256SUMS, and the Arch recipes with those checksums in
# (dist/arch/). The version is Cargo.toml's.
#
#   bash packaging/release.sh
#
# Unpacked, `./install.sh` puts it in ~/.local (as root: /usr/local); see the README.
# aarch64 is not built here (yet): it needs a cross linker and a static glibc for it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n $version ]] || { echo "release.sh: no version in Cargo.toml" >&2; exit 1; }
name="mailtoken-$version-x86_64-linux"
stage="target/dist/$name"

echo "==> cargo build-static (both programs, release profile, glibc linked in)" >&2
cargo build-static --locked --quiet
built=target/x86_64-unknown-linux-gnu/release
file "$built/mailtoken" | grep -qE "statically linked|static-pie linked" ||
  { echo "release.sh: $built/mailtoken is not statically linked" >&2; exit 1; }

rm -rf "$stage" target/dist/extras && mkdir -p "$stage"
bash packaging/extras.sh "$built/mailtoken" "@PREFIX@/bin/mailtoken" target/dist/extras
install -D -m 755 -t "$stage/bin" "$built/mailtoken" "$built/mailtoken-full"
install -D -m 644 -t "$stage/share/man/man1" man/*.1
install -D -m 644 -t "$stage/share/man/man5" man/*.5
install -D -m 644 target/dist/extras/completions/mailtoken \
  "$stage/share/bash-completion/completions/mailtoken"
install -D -m 644 target/dist/extras/completions/_mailtoken \
  "$stage/share/zsh/site-functions/_mailtoken"
install -D -m 644 target/dist/extras/completions/mailtoken.fish \
  "$stage/share/fish/vendor_completions.d/mailtoken.fish"
install -D -m 644 -t "$stage/lib/systemd/user" target/dist/extras/systemd/*
install -D -m 644 -t "$stage/share/doc/mailtoken" README.md LICENSE-MIT LICENSE-APACHE
cp -R target/dist/extras/contrib "$stage/share/doc/mailtoken/contrib"
install -m 755 packaging/install.sh "$stage/install.sh"

mkdir -p dist
# Reproducible: owner, order and times fixed (the times are the last commit's, else now).
when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$when" \
  -C target/dist -czf "dist/$name.tar.gz" "$name"

echo "==> cargo package (the source crate, built once to check it)" >&2
cargo package --locked --quiet --allow-dirty
cp "target/package/mailtoken-$version.crate" dist/

(cd dist && sha256sum "$name.tar.gz" "mailtoken-$version.crate" >SHA256SUMS)

# The Arch recipes with this release's checksums in.
for pkg in mailtoken mailtoken-bin; do
  case $pkg in
    mailtoken) sum=$(sha256sum "dist/mailtoken-$version.crate") ;;
    *) sum=$(sha256sum "dist/$name.tar.gz") ;;
  esac
  mkdir -p "dist/arch/$pkg"
  sed -e "s/^pkgver=.*/pkgver=$version/" -e "s/^sha256sums=('SKIP')/sha256sums=('${sum%% *}')/" \
    "packaging/arch/$pkg/PKGBUILD" >"dist/arch/$pkg/PKGBUILD"
done
echo "release.sh: dist/$name.tar.gz, dist/mailtoken-$version.crate, dist/SHA256SUMS" >&2
