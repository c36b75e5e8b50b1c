//! The one runner for the binary under test: spawn it, collect stdout and stderr on threads so
//! a chatty child cannot block, and kill it at a deadline.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Default deadline for one run of the binary.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailtoken")
}

/// Result of one run of the binary.
#[derive(Debug)]
pub struct RunResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunResult {
    /// Both streams, labelled, for assertion messages.
    pub fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }

    /// Panic with full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.stdout,
            self.stderr
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
            code: status.code(),
            stdout: self.take_out(true),
            stderr: self.take_out(false),
            elapsed,
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
