//! The one runner for the binary under test: spawn it, collect stdout and stderr on threads so
//! a chatty child cannot block, and kill it at a deadline.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Default deadline for one run of the binary.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailtoken")
}

/// Result of one run of the binary.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The command as the runner names it in messages.
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Said first when an `assert_std*` check fails: the case a loop was at, say.
    pub note: Option<String>,
}

impl RunResult {
    /// A run made some other way (with its stdin fed, say), for the same checks.
    pub fn from_output(what: &str, out: std::process::Output) -> RunResult {
        RunResult {
            what: what.to_string(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: Duration::ZERO,
            note: None,
        }
    }

    /// Both streams, labelled, for assertion messages.
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }

    /// The whole run, for a failed check: what ran, how it ended and both streams. Control
    /// characters are escaped, since a test about escape sequences would otherwise have the
    /// terminal obey the very bytes it is reporting.
    pub fn report(&self) -> String {
        let shown = |text: &str| -> String {
            text.chars()
                .map(|c| match c {
                    '\n' | '\t' => c.to_string(),
                    c if c.is_control() => c.escape_default().to_string(),
                    c => c.to_string(),
                })
                .collect()
        };
        format!(
            "`{}` exited with {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.code,
            self.elapsed,
            shown(&self.stdout),
            shown(&self.stderr)
        )
    }

    /// The same run, with `note` said first by any failed check on it.
    pub fn noting(&self, note: impl std::fmt::Display) -> RunResult {
        RunResult {
            note: Some(note.to_string()),
            ..self.clone()
        }
    }

    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        self.check("stderr", &self.stderr, needle, true)
    }

    #[track_caller]
    pub fn assert_stderr_lacks(&self, needle: &str) -> &Self {
        self.check("stderr", &self.stderr, needle, false)
    }

    #[track_caller]
    pub fn assert_stdout_has(&self, needle: &str) -> &Self {
        self.check("stdout", &self.stdout, needle, true)
    }

    #[track_caller]
    pub fn assert_stdout_lacks(&self, needle: &str) -> &Self {
        self.check("stdout", &self.stdout, needle, false)
    }

    /// Neither stream holds any of `secrets`.
    #[track_caller]
    pub fn assert_no_leak(&self, secrets: &[&str]) -> &Self {
        for s in secrets {
            self.assert_stderr_lacks(s).assert_stdout_lacks(s);
        }
        self
    }

    /// stderr holds none of `secrets`; stdout may, as it is where a new token goes.
    #[track_caller]
    pub fn assert_no_leak_on_stderr(&self, secrets: &[&str]) -> &Self {
        for s in secrets {
            self.assert_stderr_lacks(s);
        }
        self
    }

    #[track_caller]
    fn check(&self, stream: &str, text: &str, needle: &str, wanted: bool) -> &Self {
        if text.contains(needle) != wanted {
            let has = if wanted { "lacks" } else { "has" };
            let note = self
                .note
                .as_deref()
                .map(|n| format!("{n}: "))
                .unwrap_or_default();
            panic!("{note}{stream} {has} {needle:?}\n{}", self.report());
        }
        self
    }

    /// Panic with full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\n{}",
            self.report()
        );
        self
    }
}

/// A running child with its output being collected.
pub struct Running {
    child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
    what: String,
}

fn collect<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    })
}

impl Running {
    pub fn spawn(mut cmd: Command, what: String) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = collect(child.stdout.take());
        let err = collect(child.stderr.take());
        Running {
            child,
            out,
            err,
            started,
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` to the child (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Wait at most `timeout` (counted from spawn); kill and panic on timeout.
    pub fn wait(mut self, timeout: Duration) -> RunResult {
        let deadline = self.started + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {
                    if Instant::now() >= deadline {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        let stdout = self.take_out(true);
                        let stderr = self.take_out(false);
                        panic!(
                            "`{}` did not finish within {:?}; killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                            self.what, timeout, stdout, stderr
                        );
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("wait for {}: {e}", self.what),
            }
        };
        let elapsed = self.started.elapsed();
        RunResult {
            what: self.what.clone(),
            code: status.code(),
            stdout: self.take_out(true),
            stderr: self.take_out(false),
            elapsed,
            note: None,
        }
    }

    fn take_out(&mut self, stdout: bool) -> String {
        let h = if stdout {
            self.out.take()
        } else {
            self.err.take()
        };
        // The child has exited, so its pipe ends are closed unless it left a
        // grandchild holding them; give the reader a bounded time to finish.
        match h {
            Some(h) => {
                let until = Instant::now() + Duration::from_secs(5);
                while !h.is_finished() && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
                if h.is_finished() {
                    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
                } else {
                    "<output reader still blocked>".to_string()
                }
            }
            None => String::new(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a child behind (e.g. when a test panics before wait()).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port on 127.0.0.1 that (very likely) nobody listens on.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child whose stderr is followed line by line while it runs and whose stdin stays open:
/// for logins where the test reads the prompt and then answers (pastes an address).
pub struct Interactive {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    err: Option<JoinHandle<String>>,
    out: Option<JoinHandle<String>>,
    started: Instant,
    what: String,
}

impl Interactive {
    pub fn spawn(cmd: Command) -> Interactive {
        Self::start(cmd, false)
    }

    /// `cmd` at a terminal: run by script(1) on a pseudo-terminal, which is then its stdin,
    /// stdout and stderr. Everything it writes comes on stdout (followed line by line, lines
    /// ending in \r\n); what is typed goes through the terminal, echoed.
    pub fn at_terminal(cmd: Command) -> Interactive {
        let line = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut script = Command::new("script");
        // script(1)'s exit status is the command's (-e); no typescript file is kept.
        script.args(["-qec", &line, "/dev/null"]);
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => script.env(key, value),
                None => script.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            script.current_dir(dir);
        }
        Self::start(script, true)
    }

    fn start(mut cmd: Command, follow_stdout: bool) -> Interactive {
        let what = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mailtoken");
        let (tx, lines) = std::sync::mpsc::channel();
        let follow = |r: Box<dyn Read + Send>, tx: Option<std::sync::mpsc::Sender<String>>| {
            thread::spawn(move || {
                use std::io::BufRead;
                let mut r = std::io::BufReader::new(r);
                let (mut all, mut line) = (String::new(), String::new());
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if let Some(tx) = &tx {
                        let _ = tx.send(line.clone());
                    }
                    all.push_str(&line);
                    line.clear();
                }
                all
            })
        };
        let stderr = Box::new(child.stderr.take().unwrap());
        let stdout = Box::new(child.stdout.take().unwrap());
        let (out, err) = if follow_stdout {
            (follow(stdout, Some(tx)), follow(stderr, None))
        } else {
            (follow(stdout, None), follow(stderr, Some(tx)))
        };
        Interactive {
            child,
            lines,
            err: Some(err),
            out: Some(out),
            started: Instant::now(),
            what,
        }
    }

    /// The first line (of stderr; of the terminal's output for `at_terminal`) containing
    /// `needle`; panics after `timeout`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line with {needle:?} on stderr within {timeout:?}"),
            }
        }
    }

    /// Write one line to stdin and close it.
    pub fn type_line(&mut self, line: &str) {
        let mut stdin = self.child.stdin.take().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// Write one line to stdin and keep it open: script(1) may end its command at the end of
    /// its input.
    pub fn type_line_and_wait(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for the exit, at most `timeout` from the start; kill and panic past it.
    pub fn wait(mut self, timeout: Duration) -> RunResult {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if self.started.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("mailtoken did not finish within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(20));
        };
        drop(self.child.stdin.take());
        RunResult {
            what: self.what.clone(),
            code: status.code(),
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
            elapsed: self.started.elapsed(),
            note: None,
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
