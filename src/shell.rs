//! The one place that starts other programs: the user's commands, the browser, the clipboard.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Environment variables that hold secrets (`client_secret_env`): no program we start sees them.
static WITHHELD: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keep `name` out of the environment of every program started from now on.
pub fn withhold_env(name: &str) {
    let mut names = WITHHELD.lock().unwrap_or_else(|e| e.into_inner());
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// A command for `program` without the withheld variables.
fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for name in WITHHELD.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        cmd.env_remove(name);
    }
    cmd
}

/// Run a user's configured command through `sh -c`, feeding it `input`; its stdout comes back
/// and its stderr goes to ours. `what` names the setting in messages (`store command`).
pub fn run(what: &str, cmd: &str, input: Option<&[u8]>) -> Result<Vec<u8>> {
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
    let out = child
        .wait_with_output()
        .with_context(|| format!("{what} `{cmd}` failed"))?;
    if !out.status.success() {
        bail!("{what} `{cmd}` failed ({})", out.status);
    }
    Ok(out.stdout)
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
