//! Crash safety and concurrency of refresh-and-store, against a fake server that rotates
//! refresh tokens (each refresh revokes the token it was given and hands out a new one).
//!
//! The window no client can close: a rotating server revokes the old refresh token when it
//! answers. If the process dies after the server has rotated and before the new token is
//! renamed into place, the new refresh token existed only in the dead process and the file
//! still holds the revoked one. Any client loses that login; the next call says so (exit 3,
//! "run `mailtoken login`"). mailtoken keeps the window as small as it can (nothing but
//! parsing and one write between the reply and the rename) and makes sure the store can be
//! written *before* it sends the refresh. The kill test below asserts exactly that: after
//! every kill the file parses and holds the old or the new refresh token, and the next call
//! succeeds, or exits 3 only when the killed process's refresh reached the server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::env::*;
use crate::support::oauth_server::*;
use mailtoken::store;

/// xorshift64*: random kill moments, reproducible with MAILTOKEN_TEST_SEED.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("MAILTOKEN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos() as u64
            });
        eprintln!("crash test seed: MAILTOKEN_TEST_SEED={seed}");
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The stored tokens, as mailtoken itself would read them; panics if the file does not parse.
fn stored(env: &TestEnv) -> store::Tokens {
    let bytes = env
        .token_bytes(ACCOUNT)
        .expect("the token file must never disappear");
    store::parse(&bytes).unwrap_or_else(|e| {
        panic!(
            "the token file does not parse ({e:#}):\n{}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

fn stored_rt(env: &TestEnv) -> String {
    stored(env)
        .refresh_token
        .expect("the token file lost its refresh token")
}

/// Temp files the store leaves while writing (`.NAME.XXXXXX.tmp`).
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Wall time of one whole refresh run here (median of three), to spread the kills over it.
fn refresh_run_time(env: &TestEnv) -> Duration {
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let r = env.run(&["token", ACCOUNT]);
            r.expect_code(0);
            r.elapsed
        })
        .collect();
    times.sort();
    times[1]
}

#[derive(Default, Debug)]
struct Phases {
    /// Killed before its refresh request reached the server.
    before: usize,
    /// The server saw the request (and rotated), the file still holds the old token.
    during: usize,
    /// The new tokens were stored before the kill.
    after: usize,
    /// Of `during`: the next call had to ask for a login (the documented window).
    lost: usize,
    /// Kills that left a temp file behind (removed by the next refresh).
    stale_temp: usize,
    /// Kills against a server that answers at once, and of those, how many lost the login:
    /// their ratio to the kills' spread estimates the window's length (see the README).
    prompt: usize,
    prompt_lost: usize,
}

const KILLS: usize = 200;

#[test]
fn kill_9_at_random_moments_leaves_old_or_new_tokens_and_a_working_store() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    // Tokens are born due (no life at all), so every run refreshes and stores.
    server.set_lifetime(0);
    let env = TestEnv::with_extra(&server, "refresh_margin = 3600", "");
    server.add_refresh_token("rt-crash-seed");
    env.write_token(ACCOUNT, "at-crash-seed", "rt-crash-seed", now_unix() - 60);
    let span = refresh_run_time(&env);
    let mut rng = Rng::new();
    let mut seen = Phases::default();

    for i in 0..KILLS {
        let old_rt = stored_rt(&env);
        assert!(server.is_valid_refresh_token(&old_rt), "kill {i}: {old_rt}");
        let requests_before = server.count(Kind::Refresh);
        // Half the kills race a server that holds its (already rotated) reply back a little,
        // which widens the window between rotation and storing.
        let stall = if rng.below(2) == 0 { 0 } else { rng.below(40) };
        seen.prompt += usize::from(stall == 0);
        server.set_refresh_delay_ms(stall);
        // Anywhere from the start to a finished run (1.3 span): the start before the request
        // is short (no trust store is read for an http:// endpoint), so it is not skipped.
        let span_us = span.as_micros() as u64;
        let delay = Duration::from_micros(rng.below(span_us * 13 / 10 + stall * 1000));
        let mut child = Command::new(bin())
            .args(["--config"])
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&env.data)
            .args(["token", ACCOUNT])
            .env("HOME", &env.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mailtoken");
        thread::sleep(delay);
        let _ = child.kill(); // SIGKILL; it may have finished already
        child.wait().expect("reap the killed process");
        // What the dead process wrote to the socket still reaches the server.
        server.wait_idle(Duration::from_secs(10));
        server.set_refresh_delay_ms(0);

        let reached = server.count(Kind::Refresh) > requests_before;
        let rt = stored_rt(&env);
        if rt == old_rt {
            if reached {
                seen.during += 1;
            } else {
                seen.before += 1;
            }
        } else {
            // Only the token this very refresh was handed may replace the old one.
            assert!(
                reached,
                "kill {i}: the refresh token changed without a refresh"
            );
            assert!(
                server.is_valid_refresh_token(&rt),
                "kill {i}: stored {rt}, which the server does not know"
            );
            seen.after += 1;
        }
        let temps = temp_files(&env.data);
        assert!(temps.len() <= 1, "kill {i}: temp files pile up: {temps:?}");
        seen.stale_temp += temps.len();

        // The next call, left alone, must work, or ask for a login only in the window.
        let next = env.run(&["token", ACCOUNT]);
        match next.code {
            Some(0) => {
                let latest = server.issued_access_tokens().last().cloned();
                assert_eq!(Some(next.stdout.trim().to_string()), latest, "kill {i}");
                assert!(server.is_valid_refresh_token(&stored_rt(&env)), "kill {i}");
            }
            Some(3) => {
                assert!(
                    reached && rt == old_rt && server.was_revoked(&old_rt),
                    "kill {i}: a login was asked for outside the rotation window\n{}",
                    next.stderr
                );
                next.assert_stderr_has("mailtoken login work");
                seen.lost += 1;
                seen.prompt_lost += usize::from(stall == 0);
                // The person logs in again.
                let fresh = format!("rt-relogin-{i}");
                server.add_refresh_token(&fresh);
                env.write_token(ACCOUNT, "at-relogin", &fresh, now_unix() - 60);
            }
            other => panic!("kill {i}: next call exited {other:?}\n{}", next.stderr),
        }
        assert_eq!(
            temp_files(&env.data),
            Vec::<String>::new(),
            "kill {i}: a refresh under the lock must remove stale temp files"
        );
    }
    // Kills are spread evenly over 1.3 times a refresh: the share that lost the login,
    // against a server that answers at once, times that spread is the window's length.
    let window = span.mul_f64(1.3 * seen.prompt_lost as f64 / seen.prompt.max(1) as f64);
    eprintln!(
        "{KILLS} kills, one refresh takes {span:?}: {seen:?}; the window in which SIGKILL \
         loses the login is about {window:?} (server answering at once)"
    );
    // The schedule must actually have hit every phase, or this test proves little.
    let floor = KILLS / 20;
    assert!(
        seen.before >= floor && seen.during >= floor && seen.after >= floor,
        "kills did not cover before/during/after the request: {seen:?}"
    );
    assert!(seen.lost <= seen.during, "{seen:?}");
}

/// Make the stored access token expired, replacing the file atomically so that a reader
/// never sees it half-written.
fn expire_now(env: &TestEnv) {
    let mut json = env.read_token_json(ACCOUNT);
    json["expires_at"] = serde_json::json!(now_unix() - 60);
    let tmp = env.data.join("expire.partial");
    std::fs::write(&tmp, serde_json::to_vec(&json).unwrap()).unwrap();
    std::fs::rename(&tmp, env.token_path(ACCOUNT)).unwrap();
}

/// The generation of a refresh token: the seed is 0, `fake-rt-N` is N.
fn generation(rt: &str) -> u64 {
    rt.strip_prefix("fake-rt-")
        .map_or(0, |n| n.parse().expect("fake-rt-N"))
}

const CALLERS: usize = 64;
const ROUNDS: usize = 4;

#[test]
fn storm_of_64_callers_at_each_expiry_refreshes_once_and_never_goes_back() {
    let server = FakeServer::start();
    server.set_refresh(Refresh::Rotate);
    // A slow refresh, so the callers pile up on the lock while it is in flight.
    server.set_refresh_delay_ms(200);
    let env = TestEnv::new(&server);
    server.add_refresh_token("rt-storm-seed");
    env.write_token(ACCOUNT, "at-storm-seed", "rt-storm-seed", now_unix() - 60);

    // Watch the file the whole time: every version must parse, and the refresh token's
    // generation must never go down (no older token written over a newer one).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, path) = (Arc::clone(&stop), env.token_path(ACCOUNT));
        thread::spawn(move || {
            let mut generations = vec![0];
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                if let Ok(bytes) = std::fs::read(&path) {
                    let tokens = store::parse(&bytes).expect("a reader saw a broken token file");
                    let g = generation(tokens.refresh_token.as_deref().unwrap());
                    if Some(&g) != generations.last() {
                        generations.push(g);
                    }
                }
                thread::sleep(Duration::from_millis(1));
            }
            generations
        })
    };

    // A config 2 s old is snapshotted by round 0's first full-path call: from then on the
    // callers start in the small program, and those that find a refresh under way wait there.
    thread::sleep(Duration::from_millis(2100));
    let started = Instant::now();
    for round in 0..ROUNDS {
        if round > 0 {
            assert!(
                env.data.join(format!("{ACCOUNT}.config")).exists(),
                "no snapshot"
            );
            expire_now(&env);
        }
        let refreshes = server.count(Kind::Refresh);
        let callers: Vec<Running> = (0..CALLERS)
            .map(|_| env.spawn(&["token", ACCOUNT, "--format", "json"]))
            .collect();
        let results: Vec<RunResult> = callers.into_iter().map(|c| c.wait(RUN_TIMEOUT)).collect();
        let done = now_unix();
        assert_eq!(
            server.count(Kind::Refresh),
            refreshes + 1,
            "round {round}: exactly one refresh per expiry"
        );
        let newest = server.issued_access_tokens().last().cloned().unwrap();
        for (i, r) in results.iter().enumerate() {
            r.expect_code(0);
            let printed: serde_json::Value = serde_json::from_str(&r.stdout)
                .unwrap_or_else(|e| panic!("round {round} caller {i}: {e}: {}", r.stdout));
            assert_eq!(printed["access_token"], newest, "round {round} caller {i}");
            assert!(
                printed["expires_at"].as_i64().unwrap() > done,
                "round {round} caller {i} printed an expired token"
            );
        }
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let generations = watcher.join().expect("watcher");
    eprintln!(
        "{ROUNDS} rounds of {CALLERS} callers in {wall:?}; refresh tokens seen: {generations:?}"
    );
    assert!(
        generations.windows(2).all(|w| w[0] < w[1]),
        "a refresh token was overwritten by an older one: {generations:?}"
    );
    assert_eq!(generations.last(), Some(&(ROUNDS as u64)));
    assert!(server.is_valid_refresh_token(&stored_rt(&env)));
    assert_eq!(temp_files(&env.data), Vec::<String>::new());
}
