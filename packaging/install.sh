#!/bin/sh
# Install (or remove) this mailtoken release under a prefix: programs in PREFIX/bin, man pages
# where `man` finds them from there, completions where bash, zsh and fish look, and the systemd
# user units with this prefix's path in them.
#
#   ./install.sh [PREFIX]              default ~/.local (as root: /usr/local)
#   ./install.sh --uninstall [PREFIX]  removes exactly what install put there
set -eu
here=$(cd "$(dirname "$0")" && pwd)
remove=false
if [ "${1:-}" = "--uninstall" ]; then remove=true; shift; fi
if [ $# -gt 0 ]; then prefix=$1
elif [ "$(id -u)" = 0 ]; then prefix=/usr/local
else prefix=$HOME/.local
fi
case $prefix in /*) ;; *) echo "install.sh: give the prefix as an absolute path" >&2; exit 2 ;; esac
# systemd looks for user units in /usr/local/lib/systemd/user, and under a home in
# ~/.local/share/systemd/user (not ~/.local/lib).
case $prefix in
  "$HOME"/*|"$HOME") units=$prefix/share/systemd/user ;;
  *) units=$prefix/lib/systemd/user ;;
esac

# Each file of the release and where it goes.
list() {
  (cd "$here" && find bin share -type f) | while read -r f; do echo "$f $prefix/$f"; done
  (cd "$here" && find lib/systemd/user -type f) | while read -r f; do
    echo "$f $units/$(basename "$f")"
  done
}

if $remove; then
  list | while read -r _ to; do rm -f "$to"; done
  rmdir "$prefix/share/doc/mailtoken/contrib"/* "$prefix/share/doc/mailtoken/contrib" \
    "$prefix/share/doc/mailtoken" 2>/dev/null || true
  echo "mailtoken removed from $prefix"
  exit 0
fi

list | while read -r from to; do
  mode=644
  case $from in bin/*) mode=755 ;; esac
  mkdir -p "$(dirname "$to")"
  case $from in
    bin/*) cp "$here/$from" "$to.new" ;;
    # The units and contrib files name the program by this prefix's path.
    *) sed "s|@PREFIX@|$prefix|g" "$here/$from" >"$to.new" ;;
  esac
  # Replaced whole, so a running proxy keeps the program it started with.
  chmod "$mode" "$to.new" && mv -f "$to.new" "$to"
done
echo "mailtoken installed in $prefix/bin (man pages, completions, systemd user units with it)"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) echo "Add $prefix/bin to your PATH." ;; esac
if [ "$prefix" = "$HOME/.local" ]; then
  echo "zsh: add $prefix/share/zsh/site-functions to your fpath for completions."
fi
