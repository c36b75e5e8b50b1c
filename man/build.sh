#!/usr/bin/env bash
# Regenerate the command man pages (mailtoken*.1) from the CLI definition.
# mailtoken.toml.5 is written by hand, and mailtoken-full.1 points at mailtoken.1 (the program
# mailtoken becomes; it has no commands of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
MAILTOKEN_UPDATE_MAN=1 cargo test --quiet --test integration man::man_pages_match_the_cli
ls man/*.1
