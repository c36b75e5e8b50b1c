//! Gives both programs, `mailtoken` and `mailtoken-full`, the same build identity (a hash of
//! the sources), so that the first refuses to hand a call to a second from another build (a
//! `cargo run` that rebuilt only `mailtoken`, or one program copied without the other); and
//! links the unwinder statically on glibc.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let mut files = vec![
        PathBuf::from("Cargo.toml"),
        PathBuf::from("Cargo.lock"),
        PathBuf::from("build.rs"),
    ];
    collect(Path::new("src"), &mut files);
    files.sort();
    // FNV-1a: stable across Rust versions and machines (reproducible builds).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let name = file.to_string_lossy();
        let bytes = fs::read(file).unwrap_or_default();
        for byte in name.as_bytes().iter().chain([0u8].iter()).chain(&bytes) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=MAILTOKEN_BUILD={hash:016x}");
    // The platform, for `--version`.
    println!(
        "cargo:rustc-env=MAILTOKEN_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // Rust's std links libgcc_s for its unwinder, which only prints a panic's backtrace here
    // (panics abort). Loading that second library is about a tenth of the cached `token`
    // call; the same unwinder from libgcc_eh.a (gcc's -static-libgcc) costs nothing at
    // start-up. Named ahead of std's -lgcc_s, it leaves that one unused, and --as-needed
    // drops it. A crt-static build links libgcc_eh already.
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE").contains("crt-static")
    {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
    for watched in ["src", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={watched}");
    }
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
