//! The one room for system calls: every `libc` call and `unsafe` block of the library, behind
//! safe functions, and the one place where the platform is decided (`cfg`).
//!
//! One file per concern: `process` (start-up, core dumps, signals, other processes), `files`
//! (opening without following links, reserving room, access), `lock` (waiting for a file lock
//! with a deadline), `terminal` (echo off for a password) and `net` (waiting on listeners,
//! the owner of a loopback connection).
//!
//! Linux, macOS and FreeBSD each get the system's own way where it has one, and a portable
//! way otherwise (a thread for the lock's deadline, written bytes for reserved room, no peer
//! check); a system without either says so at run time (an `Unsupported` error, or "unknown"
//! where unknown is the safe answer) rather than failing to compile. On Linux the portable
//! ways can be forced with `--cfg mailtoken_portable` (tests/all.sh does, for a second run of
//! the tests they touch), so that they are tested here and not only compiled.

pub mod files;
pub mod lock;
pub mod net;
pub mod process;
pub mod terminal;

/// The effective user id: whose files mailtoken may use, and who the proxy serves.
pub fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    /// The house rule this folder exists for: `libc` and `unsafe` nowhere else in src/ but
    /// the two programs' `main` (whose C signature needs them). A system call added elsewhere
    /// would escape the platform decision made here.
    #[test]
    fn no_system_calls_outside_this_room() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mains = [src.join("main.rs"), src.join("bin/mailtoken-full.rs")];
        let mut files = vec![src.clone()];
        let mut offenders = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                if path != src.join("sys") {
                    files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || mains.contains(&path) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("libc::") || code.contains("unsafe {") || code.contains("unsafe(")
                {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "system calls outside src/sys:\n{}",
            offenders.join("\n")
        );
        assert!(
            src.join("sys/process.rs").exists(),
            "the walk must start where the code is"
        );
    }
}
