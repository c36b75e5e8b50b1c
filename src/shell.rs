//! The one place that starts other programs: the user's commands, the browser, the clipboard,
//! and `mailtoken-full`, which `mailtoken` becomes for everything but the cached token call.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The program with every command, installed beside `mailtoken`.
pub const FULL_PROGRAM: &str = "mailtoken-full";
/// How `mailtoken` tells `mailtoken-full` which build it is from.
const BUILD_VAR: &str = "MAILTOKEN_BUILD";
/// This build's identity (build.rs: a hash of the sources), the same in both programs.
const BUILD: &str = env!("MAILTOKEN_BUILD");

/// Become `mailtoken-full` with the same arguments: the same process, streams, signals and
/// exit status (exec). Returns only if that fails, with what to do.
pub fn become_full(args: &[std::ffi::OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let full = match full_program() {
        Ok(full) => full,
        Err(err) => return err,
    };
    let mut cmd = Command::new(&full);
    if let Some(arg0) = args.first() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(args.iter().skip(1)).env(BUILD_VAR, BUILD).exec();
    anyhow::anyhow!(
        "cannot run {}: {err}. It is installed beside mailtoken (`cargo install` puts both \
         in ~/.cargo/bin); install again, or in a checkout run `cargo build`",
        full.display()
    )
}

/// In `mailtoken-full`: refuse a `mailtoken` of another build (one rebuilt alone by `cargo
/// run`, or copied without this one), whose quick path may disagree with this program; and
/// keep the variable from the programs this one starts.
pub fn check_front() -> Result<()> {
    let Some(front) = std::env::var_os(BUILD_VAR) else {
        return Ok(());
    };
    // Called first thing in `main`, before any other thread exists.
    crate::sys::process::remove_env_at_start(BUILD_VAR);
    if front != BUILD {
        bail!(
            "mailtoken and {FULL_PROGRAM} are from different builds: install them again \
             together (`cargo install --locked --path .`), or in a checkout run `cargo build`"
        );
    }
    Ok(())
}

/// Environment variables that hold secrets (`client_secret_env`): no program we start sees them.
static WITHHELD: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keep `name` out of the environment of every program started from now on.
pub fn withhold_env(name: &str) {
    let mut names = WITHHELD.lock().unwrap_or_else(|e| e.into_inner());
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// A command for `program` without the withheld variables, starting with no signal blocked:
/// it may be started while this process holds off SIGTERM (a store command during a commit, a
/// notification after a failed refresh), and the mask would otherwise be inherited.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for name in WITHHELD.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        cmd.env_remove(name);
    }
    crate::sys::process::unblock_signals_in_child(&mut cmd);
    cmd
}

/// How long a user's command (a secret from `pass`, a store command) may take, a passphrase
/// typed into pinentry included: past this it is killed and the call fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A secret or a token store is a few kilobytes; past this the output is not one.
const MAX_OUTPUT: u64 = 1 << 20;

/// Run a user's configured command through `sh -c`, feeding it `input`; its stdout comes back
/// and its stderr goes to ours. `what` names the setting in messages (`store command`).
pub fn run(what: &str, cmd: &str, input: Option<&[u8]>) -> Result<Vec<u8>> {
    run_within(what, cmd, input, COMMAND_TIMEOUT)
}

fn run_within(what: &str, cmd: &str, input: Option<&[u8]>, limit: Duration) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut child = command("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {what} `{cmd}`"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input)
            .with_context(|| format!("{what} `{cmd}` did not take its input"))?;
    }
    // Read on a thread, so that a command that never ends (or whose children keep the pipe
    // open) cannot hold us past the deadline.
    let mut stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = (&mut stdout).take(MAX_OUTPUT + 1).read_to_end(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{what} `{cmd}` did not finish within {} s and was stopped",
                    limit.as_secs()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("{what} `{cmd}` failed")),
        }
    };
    let out = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1))
        .map_err(|_| anyhow::anyhow!("{what} `{cmd}` left its output open"))?
        .with_context(|| format!("cannot read the output of {what} `{cmd}`"))?;
    // First: past the limit we stopped reading, and the command may have died of that.
    if out.len() as u64 > MAX_OUTPUT {
        bail!(
            "{what} `{cmd}` printed more than {MAX_OUTPUT} bytes: that is not a secret or a token store"
        );
    }
    if !status.success() {
        bail!("{}", failed(what, cmd, status.code()));
    }
    Ok(out)
}

/// What a user's command that failed is told as: with the shell's words for a program that
/// is missing (127) or cannot run (126) turned into the fix, since `sh: 1: pass: not found`
/// on stderr is easily missed among a mail program's messages.
pub fn failed(what: &str, cmd: &str, code: Option<i32>) -> String {
    let program = cmd.split_whitespace().next().unwrap_or(cmd);
    let secret = what == "client_secret_command";
    let or = if secret {
        " (or give the secret with client_secret_file or client_secret_env)"
    } else {
        ""
    };
    match code {
        Some(127) => format!(
            "{what} `{cmd}` failed: `{program}` is not installed or not on PATH (exit 127): \
             install it, or change the command{or}"
        ),
        Some(126) => format!(
            "{what} `{cmd}` failed: `{program}` cannot be run (exit 126: not executable, or a \
             directory): fix the command{or}"
        ),
        Some(code) => format!("{what} `{cmd}` failed (exit status: {code})"),
        None => format!("{what} `{cmd}` was ended by a signal"),
    }
}

/// Whether `program` (a command's first word) can be found: a path that exists, or a name on
/// PATH, or a shell word that is no program (a builtin, a variable assignment): those are not
/// judged.
pub fn can_find(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(program) = cmd.split_whitespace().next() else {
        return true;
    };
    if program.contains('=')
        || !program
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+~".contains(c))
    {
        return true;
    }
    let runnable = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return runnable(std::path::Path::new(program)) || program.starts_with('~');
    }
    const BUILTINS: &[&str] = &[
        "echo", "printf", "cat", "test", "[", "read", "exec", "command", "eval", "env",
    ];
    BUILTINS.contains(&program)
        || std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| runnable(&dir.join(program)))
        })
}

/// Run a user's notification command through `sh -c` with `env` added, its stdout sent to our
/// stderr (our stdout carries only secrets), waiting at most `patience` before leaving it to
/// finish on its own. False when it could not start or failed in that time.
pub fn notify(cmd: &str, env: &[(&str, &str)], patience: Duration) -> bool {
    use std::os::fd::AsFd;
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(mut child) = command("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .stderr(Stdio::inherit())
        .spawn()
    else {
        return false;
    };
    finished_well_or_still_running(&mut child, patience)
}

/// The longest first line a background `mailtoken-full` is read for.
const MAX_WORD: u64 = 4096;

/// Start `mailtoken-full` with `args`, on its own, and wait at most `patience` for the first
/// line it prints: its word on how its work started. It goes on after that, and after this
/// process ends: in a process group of its own (a Ctrl-C at the terminal is not for it), its
/// stdin and stderr on /dev/null. It keeps this process's environment, a withheld client
/// secret included: it is mailtoken, which withholds it from its own children in turn.
pub fn start_full_in_background(args: &[&std::ffi::OsStr], patience: Duration) -> Result<String> {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::CommandExt;
    let full = full_program()?;
    let mut cmd = Command::new(&full);
    crate::sys::process::unblock_signals_in_child(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", full.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout.take(MAX_WORD)).read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
    });
    // Reaped when it ends, so that a long-lived caller (the proxy) keeps no zombie.
    std::thread::spawn(move || child.wait());
    match rx.recv_timeout(patience) {
        Ok(Ok(line)) if !line.trim().is_empty() => Ok(line.trim().to_string()),
        Ok(_) => bail!("{FULL_PROGRAM} ended without saying how its work started"),
        Err(_) => bail!(
            "{FULL_PROGRAM} said nothing within {} s of starting",
            patience.as_secs()
        ),
    }
}

/// Where `mailtoken-full` is: beside this program.
fn full_program() -> Result<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|me| Some(me.parent()?.join(FULL_PROGRAM)))
        .with_context(|| format!("cannot tell where this program is, so where {FULL_PROGRAM} is"))
}

/// Start a helper program and leave it running (a browser). False when it cannot start.
pub fn launch(program: &str, args: &[&str]) -> bool {
    command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .is_ok()
}

/// Hand `input` to a helper program on stdin (a clipboard tool); true when it took it.
/// Waits at most `patience`: clipboard tools may stay around to serve the selection.
pub fn feed(program: &str, args: &[&str], input: &str, patience: Duration) -> bool {
    let Ok(mut child) = command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take()
        && stdin.write_all(input.as_bytes()).is_err()
    {
        return false;
    }
    finished_well_or_still_running(&mut child, patience)
}

/// Wait up to `patience` for a helper: true if it ended well or is still running then (it is
/// left to finish on its own), false if it failed.
fn finished_well_or_still_running(child: &mut std::process::Child, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => sleep(Duration::from_millis(20)),
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_named_with_the_fix() {
        let told = failed("client_secret_command", "pass show gmail-oauth", Some(127));
        assert!(
            told.contains("`pass` is not installed or not on PATH (exit 127)"),
            "{told}"
        );
        assert!(
            told.contains("client_secret_file or client_secret_env"),
            "{told}"
        );
        let store = failed("store command", "/opt/x load", Some(126));
        assert!(store.contains("`/opt/x` cannot be run"), "{store}");
        assert!(!store.contains("client_secret"), "{store}");
        assert_eq!(
            failed("notify_command", "false", Some(1)),
            "notify_command `false` failed (exit status: 1)"
        );
        assert!(can_find("sh -c true"));
        assert!(can_find("printf s3cret"));
        assert!(can_find("X=1 pass show"));
        assert!(!can_find("surely-no-such-program-here show x"));
        assert!(!can_find("/nonexistent/pass show x"));
    }

    #[test]
    fn a_command_that_does_not_finish_is_stopped_at_its_deadline() {
        let started = Instant::now();
        let err = run_within("test command", "sleep 30", None, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish within"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20), "{err}");
        let err = run_within(
            "test command",
            "head -c 2000000 /dev/zero",
            None,
            COMMAND_TIMEOUT,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("printed more than"), "{err}");
    }

    #[test]
    fn a_command_started_while_signals_are_held_gets_none_blocked() {
        let _held = crate::sys::process::hold_signals();
        // exec: the mask of the process std started, not of a child the shell forks.
        let out = run("test command", "exec grep SigBlk /proc/self/status", None).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            "SigBlk:\t0000000000000000"
        );
    }

    #[test]
    fn commands_get_input_and_report_failure() {
        assert_eq!(run("test command", "cat", Some(b"abc")).unwrap(), b"abc");
        let err = run("test command", "exit 3", None).unwrap_err().to_string();
        assert!(err.starts_with("test command `exit 3` failed"), "{err}");
        assert!(feed("cat", &[], "x", Duration::from_secs(2)));
        assert!(!feed("/nonexistent/tool", &[], "x", Duration::from_secs(2)));
        assert!(!launch("/nonexistent/browser", &[]));
    }

    #[test]
    fn withheld_variables_do_not_reach_children() {
        // PATH is in every test environment; withholding it must empty it in the child.
        withhold_env("MAILTOKEN_SHELL_TEST_NEVER_SET");
        let out = run("test command", "env", None).unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("MAILTOKEN_SHELL_TEST_NEVER_SET"));
    }
}
