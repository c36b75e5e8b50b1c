//! Files: opening without following a link or blocking on a FIFO, reserving disk room, and
//! whether a directory can be written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Open only what is at the path itself: never through a symbolic link, never blocking on a
/// FIFO or device, and never inherited by programs started later.
pub fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
}

/// Whether an open with `no_follow` failed because the path is a symbolic link (ELOOP; FreeBSD
/// says EMLINK).
pub fn is_link(e: &io::Error) -> bool {
    let link = if cfg!(target_os = "freebsd") {
        libc::EMLINK
    } else {
        libc::ELOOP
    };
    e.raw_os_error() == Some(link)
}

/// Whether an open for writing with `no_follow` failed because the path is a FIFO nobody reads.
pub fn is_unread_fifo(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENXIO)
}

/// Reserve `room` bytes on disk for `file` (from its start; its length becomes `room`), so
/// that writing that much later cannot fail for want of space. Where the file system cannot
/// allocate ahead (ZFS, some NFS, or no call for it), the bytes are written and synced: the
/// room was there a moment ago, and a copy-on-write file system may still need new room for
/// the real bytes (the rescue directory is for that case).
pub fn reserve(file: &File, room: u64) -> io::Result<()> {
    match allocate(file, room) {
        Err(e) if cannot_allocate(&e) => fill(file, room),
        done => done,
    }
}

/// The errors of a file system or system that has no allocation ahead of writing.
fn cannot_allocate(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
        || e.raw_os_error() == Some(libc::ENOTSUP)
}

/// Write `room` zero bytes into `file` from its start, and sync them.
fn fill(file: &File, room: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = [0u8; 8192];
    let mut at = 0;
    while at < room {
        let n = zeros
            .len()
            .min(usize::try_from(room - at).unwrap_or(usize::MAX));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

#[cfg(any(
    all(target_os = "linux", not(mailtoken_portable)),
    target_os = "android",
    target_os = "freebsd"
))]
fn allocate(file: &File, room: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = off_t(room)?;
    // SAFETY: posix_fallocate only reads the descriptor and the two lengths.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// macOS: F_PREALLOCATE gives the file blocks past its end, all of them or none; the length
/// is then set as posix_fallocate would.
#[cfg(target_vendor = "apple")]
fn allocate(file: &File, room: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut store = libc::fstore_t {
        fst_flags: libc::F_ALLOCATEALL,
        fst_posmode: libc::F_PEOFPOSMODE,
        fst_offset: 0,
        fst_length: off_t(room)?,
        fst_bytesalloc: 0,
    };
    // SAFETY: fcntl(F_PREALLOCATE) reads and updates the fstore_t it is given.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PREALLOCATE, &mut store) } == -1 {
        return Err(io::Error::last_os_error());
    }
    file.set_len(room)
}

/// Elsewhere (and on Linux with the portable paths forced): the bytes are written.
#[cfg(not(any(
    all(target_os = "linux", not(mailtoken_portable)),
    target_os = "android",
    target_os = "freebsd",
    target_vendor = "apple"
)))]
fn allocate(_: &File, room: u64) -> io::Result<()> {
    off_t(room)?;
    Err(io::ErrorKind::Unsupported.into())
}

fn off_t(room: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(room)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reservation too large"))
}

/// Whether this process may write into `dir` (its mode, ACLs, a read-only mount).
pub fn writable(dir: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the path it is given and nothing else.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_there_whichever_way_it_was_made() {
        let dir = tempfile::tempdir().unwrap();
        for (way, result) in [
            (
                "allocated",
                reserve(&File::create(dir.path().join("a")).unwrap(), 20_000),
            ),
            (
                "written",
                fill(&File::create(dir.path().join("b")).unwrap(), 20_000),
            ),
        ] {
            result.unwrap();
            let name = if way == "allocated" { "a" } else { "b" };
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.len(), 20_000, "{way}");
            use std::os::unix::fs::MetadataExt;
            assert!(
                meta.blocks() * 512 >= 20_000,
                "{way}: {} blocks",
                meta.blocks()
            );
        }
        assert!(cannot_allocate(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
        assert!(!cannot_allocate(&io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
    }
}
