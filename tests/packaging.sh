#!/usr/bin/env bash
# Every way mailtoken is installed, built and installed for real here (as root, on Debian):
#   1. the release tarball (packaging/release.sh): unpacked, install.sh into a prefix, the
#      programs, man pages, completions and units used from there, then --uninstall;
#   2. the source crate: `cargo install` from what `cargo package` made puts both programs in;
#   3. the .deb (packaging/deb.sh, cargo-deb): lintian without errors, `dpkg -i`, the installed
#      program logged in, fetching a token and sending mail against the e2e servers
#      (tests/e2e/demo.sh), `man mailtoken`, bash completion, the units, then `dpkg -r`;
#   4. Arch: both PKGBUILDs built by makepkg as an unprivileged user, their packages' files;
#   5. the Homebrew formula and the Nix flake: what can be checked without brew or nixpkgs
#      (tests/packaging/recipes.sh);
#   6. the oldest Rust that Cargo.toml's rust-version promises builds it.
#
#   bash tests/packaging.sh          PACKAGING_ONLY='deb|arch' for some of them
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
work=$(mktemp -d /tmp/mailtoken-packaging.XXXXXX)
trap 'rm -rf "$work"' EXIT

say() { printf '\n==> packaging: %s\n' "$*" >&2; }
fail() { echo "packaging: FAILED: $*" >&2; exit 1; }
wanted() { [[ -z ${PACKAGING_ONLY:-} || $1 =~ $PACKAGING_ONLY ]]; }
need_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return
  local install=(timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}")
  DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null 2>&1 ||
    { timeout 600 apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null; } ||
    fail "cannot install ${missing[*]}"
}
# What a user sees of an installed mailtoken: its version and build, a man page, completion.
check_installed() { # BIN MANPATH BASH_COMPLETION_FILE
  local out
  out=$("$1" --version) || fail "$1 --version"
  [[ $out =~ ^mailtoken\ $version\ \(build\ [0-9a-f]{16}, ]] || fail "$1 --version said: $out"
  "$1" completions bash >/dev/null || fail "$1 cannot run mailtoken-full beside it"
  MANPATH=$2 man -w mailtoken >/dev/null || fail "man does not find mailtoken in $2"
  MANPATH=$2 man -w 5 mailtoken.toml >/dev/null || fail "man does not find mailtoken.toml(5)"
  MANPATH=$2 MANWIDTH=80 man mailtoken 2>/dev/null | grep -q "EXIT STATUS" ||
    fail "man mailtoken does not render"
  bash -c "source '$3' && complete -p mailtoken" | grep -q mailtoken ||
    fail "$3 does not define the completion"
}

need_packages man-db file

if wanted release || wanted crate; then
  say "release tarball (packaging/release.sh)"
  bash packaging/release.sh
  tarball=dist/mailtoken-$version-x86_64-linux.tar.gz
  (cd dist && sha256sum -c --quiet SHA256SUMS) || fail "SHA256SUMS does not match"
fi

if wanted release; then
  tar -xzf "$tarball" -C "$work"
  unpacked=$work/mailtoken-$version-x86_64-linux
  for f in bin/mailtoken bin/mailtoken-full share/man/man5/mailtoken.toml.5 \
    share/doc/mailtoken/LICENSE-MIT share/doc/mailtoken/LICENSE-APACHE install.sh; do
    [[ -e $unpacked/$f ]] || fail "the tarball has no $f"
  done
  file "$unpacked/bin/mailtoken" | grep -qE "statically linked|static-pie linked" || fail "not a static build"
  prefix=$work/prefix
  "$unpacked/install.sh" "$prefix" >/dev/null
  check_installed "$prefix/bin/mailtoken" "$prefix/share/man" \
    "$prefix/share/bash-completion/completions/mailtoken"
  grep -qx "ExecStart=$prefix/bin/mailtoken proxy" "$prefix/lib/systemd/user/mailtoken-proxy.service" ||
    fail "the installed proxy unit does not run $prefix/bin/mailtoken"
  ! grep -rq "@PREFIX@" "$prefix" || fail "a placeholder was left in $prefix"
  "$unpacked/install.sh" --uninstall "$prefix" >/dev/null
  left=$(find "$prefix" -type f)
  [[ -z $left ]] || fail "--uninstall left: $left"
fi

if wanted crate; then
  say "cargo install from the packaged crate"
  mkdir -p "$work/crate"
  tar -xzf "dist/mailtoken-$version.crate" -C "$work/crate"
  CARGO_TARGET_DIR=$work/crate-target timeout 1800 cargo install --quiet --locked --debug \
    --path "$work/crate/mailtoken-$version" --root "$work/crate-root"
  for p in mailtoken mailtoken-full; do
    [[ -x $work/crate-root/bin/$p ]] || fail "cargo install did not install $p"
  done
  "$work/crate-root/bin/mailtoken" --version | grep -q "^mailtoken $version" ||
    fail "the crate's mailtoken does not say its version"
fi

if wanted deb; then
  say "the .deb (packaging/deb.sh: cargo-deb)"
  # Pinned: the release this was checked against; it builds with this machine's Rust.
  case "$(cargo deb --version 2>/dev/null)" in
  *3.6.*) ;;
  *) timeout 1200 cargo install --quiet --locked cargo-deb --version 3.6.4 ;;
  esac
  need_packages lintian dpkg-dev bash-completion
  rm -f target/debian/mailtoken_*.deb
  bash packaging/deb.sh >/dev/null
  deb=$(ls target/debian/mailtoken_*.deb)
  dpkg-deb -f "$deb" Depends | grep -q "libc6" || fail "the .deb does not depend on libc6"
  lintian --tag-display-limit 0 "$deb" >"$work/lintian.txt" 2>&1 || true
  if grep -q "^E:" "$work/lintian.txt"; then
    cat "$work/lintian.txt" >&2
    fail "lintian reports errors"
  fi
  dpkg -i "$deb" >/dev/null
  check_installed /usr/bin/mailtoken /usr/share/man \
    /usr/share/bash-completion/completions/mailtoken
  bash -c 'source /usr/share/bash-completion/bash_completion; _comp_load mailtoken 2>/dev/null ||
    __load_completion mailtoken; complete -p mailtoken' | grep -q mailtoken ||
    fail "bash-completion does not load mailtoken's completion"
  grep -qx "ExecStart=/usr/bin/mailtoken proxy" /usr/lib/systemd/user/mailtoken-proxy.service ||
    fail "the packaged proxy unit does not run /usr/bin/mailtoken"
  [[ -e /usr/share/zsh/vendor-completions/_mailtoken ]] || fail "no zsh completion"
  [[ -e /usr/share/fish/vendor_completions.d/mailtoken.fish ]] || fail "no fish completion"
  [[ -e /usr/share/doc/mailtoken/copyright ]] || fail "no copyright file"
  say "the installed /usr/bin/mailtoken end to end (tests/e2e/demo.sh)"
  MAILTOKEN_BIN=/usr/bin/mailtoken bash tests/e2e/demo.sh >"$work/demo.txt" 2>&1 ||
    { tail -40 "$work/demo.txt" >&2; fail "the installed program's demo failed"; }
  dpkg -r mailtoken >/dev/null
  [[ ! -e /usr/bin/mailtoken && ! -e /usr/bin/mailtoken-full ]] || fail "dpkg -r left the programs"
fi

if wanted arch; then
  say "Arch: makepkg, as an unprivileged user, both PKGBUILDs"
  need_packages makepkg libarchive-tools zstd
  [[ -e $tarball ]] || fail "the Arch check needs the release (PACKAGING_ONLY=release|arch)"
  builder=nobody
  for pkg in mailtoken mailtoken-bin; do
    dir=$work/arch/$pkg
    mkdir -p "$dir"
    cp "dist/arch/$pkg/PKGBUILD" "$dir/"
    # The sources the PKGBUILDs name, already here (makepkg uses a file beside the PKGBUILD).
    case $pkg in
      mailtoken) cp "dist/mailtoken-$version.crate" "$dir/mailtoken-$version.tar.gz" ;;
      *) cp "$tarball" "$dir/" ;;
    esac
  done
  chown -R "$builder" "$work/arch"
  chmod 755 "$work"
  # The toolchain lives under /root, which nobody else may enter: it is lent to the builder
  # at /opt/rustup in a mount namespace of this step alone. --nocheck: the library's tests
  # run in this command already (check() is the same `cargo test --lib`). No pacman here:
  # --nodeps, and PACMAN=true for makepkg's look for it.
  sysroot=$(rustc --print sysroot)
  toolchain=${sysroot##*/}
  [[ $sysroot == "${RUSTUP_HOME:-/root/.rustup}/toolchains/$toolchain" ]] ||
    fail "the Arch check lends rustup's toolchain, and rustc is not one of it: $sysroot"
  mkdir -p /opt/rustup
  unshare --mount bash -s "$work" "$toolchain" "$builder" <<'NS' || fail "makepkg failed"
set -euo pipefail
work=$1 toolchain=$2 builder=$3
mount --bind "${RUSTUP_HOME:-/root/.rustup}" /opt/rustup
for pkg in mailtoken mailtoken-bin; do
  cd "$work/arch/$pkg"
  setpriv --reuid "$builder" --regid nogroup --clear-groups \
    env -i HOME="$work/arch" PATH="/opt/rustup/toolchains/$toolchain/bin:/usr/bin:/bin" \
    CARGO_HOME="$work/arch/cargo" PKGEXT=.pkg.tar.zst PACMAN=true \
    makepkg --nodeps --nocheck --noconfirm >"$work/arch/$pkg.log" 2>&1 ||
    { tail -30 "$work/arch/$pkg.log" >&2; exit 1; }
done
NS
  for pkg in mailtoken mailtoken-bin; do
    built=$(ls "$work/arch/$pkg"/$pkg-$version-1-*.pkg.tar.zst)
    bsdtar -tf "$built" >"$work/arch/$pkg.files"
    for f in usr/bin/mailtoken usr/bin/mailtoken-full usr/share/man/man1/mailtoken.1.gz \
      usr/share/man/man5/mailtoken.toml.5.gz usr/share/bash-completion/completions/mailtoken \
      usr/share/zsh/site-functions/_mailtoken usr/share/fish/vendor_completions.d/mailtoken.fish \
      usr/lib/systemd/user/mailtoken-proxy.service "usr/share/licenses/$pkg/LICENSE-APACHE"; do
      grep -qx "$f" "$work/arch/$pkg.files" || fail "$pkg's package has no $f"
    done
    bsdtar -xOf "$built" usr/lib/systemd/user/mailtoken-proxy.service |
      grep -qx "ExecStart=/usr/bin/mailtoken proxy" || fail "$pkg's proxy unit"
  done
fi

if wanted recipes; then
  say "the Homebrew formula and the Nix flake"
  bash tests/packaging/recipes.sh
fi

if wanted msrv; then
  say "Rust $msrv, Cargo.toml's rust-version, builds it"
  timeout 900 rustup toolchain install "$msrv" --profile minimal >/dev/null ||
    fail "cannot install Rust $msrv"
  CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check --locked --all-targets --quiet
fi
say "all built, installed and checked"
