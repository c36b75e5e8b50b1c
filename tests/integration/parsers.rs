//! The fuzz targets' invariants (tests/fuzz/invariants.rs) over generated inputs, bounded, in every
//! `cargo test`: the seeds of tests/fuzz/seeds/TARGET (where crashes found by tests/fuzz.sh are
//! kept as regressions) and a few thousand mutants of them each. Reproducible: the mutants
//! come from a fixed seed (MAILTOKEN_TEST_SEED picks another).

#[path = "../fuzz/invariants.rs"]
mod invariants;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

const MUTANTS_PER_TARGET: usize = 4000;

/// Fragments that tend to matter to JSON, TOML and URL parsers.
const DICTIONARY: &[&str] = &[
    "\"",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\\u0000",
    "\\ud800",
    "1e999",
    "-1",
    "null",
    "true",
    "18446744073709551616",
    "0.5",
    "\"expires_in\":",
    "\"access_token\":",
    "\"error\":",
    "\"version\":1",
    "\"resources\":{",
    "%",
    "%zz",
    "?",
    "&",
    "=",
    "#",
    "://",
    "\n",
    "\r\n",
    "[accounts.",
    "]]",
    "= \"",
    "\u{feff}",
    "\u{10ffff}",
    "é",
    "\x7f",
    "state=st4te",
    "code=",
    "error=",
    "/cb",
    "http://[::1]:",
    "http://localhost:99999",
    invariants::MARKER,
];

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.below(256) as u8),
            2 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            3 => {
                let word = DICTIONARY[rng.below(DICTIONARY.len())];
                v.splice(at..at, word.bytes());
            }
            4 => {
                let end = (at + rng.below(32)).min(v.len());
                let copy = v[at..end].to_vec();
                v.splice(at..at, copy);
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/seeds")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn check(target: &str, invariant: fn(&[u8])) {
    let seed = std::env::var("MAILTOKEN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_u64);
    let mut rng = Rng(seed | 1);
    let seeds = seeds(target);
    let mut inputs = seeds.clone();
    inputs.push(Vec::new());
    inputs.extend((0..MUTANTS_PER_TARGET).map(|_| {
        let base = &seeds[rng.below(seeds.len())];
        mutate(&mut rng, base)
    }));
    for input in &inputs {
        if catch_unwind(AssertUnwindSafe(|| invariant(input))).is_err() {
            panic!(
                "{target} invariant broken (seed {seed}) by this input; add it to tests/fuzz/seeds/{target}/:\n{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn config_parser_holds_on_generated_inputs() {
    check("config", invariants::config);
}

#[test]
fn token_file_parser_holds_on_generated_inputs() {
    check("token_file", invariants::token_file);
}

#[test]
fn server_reply_parser_holds_on_generated_inputs() {
    check("oauth_reply", invariants::oauth_reply);
}

#[test]
fn discovery_parser_holds_on_generated_inputs() {
    check("discovery", invariants::discovery);
}

#[test]
fn callback_parser_holds_on_generated_inputs() {
    check("callback", invariants::callback);
}

#[test]
fn mail_reply_parsers_hold_on_generated_inputs() {
    check("mail_reply", invariants::mail_reply);
}

#[test]
fn proxy_input_parsers_hold_on_generated_inputs() {
    check("proxy_input", invariants::proxy_input);
}
