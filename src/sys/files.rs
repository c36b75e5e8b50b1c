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

/// Reserve `room` bytes on disk for `file` (from its start), so that writing that much later
/// cannot fail for want of space.
pub fn reserve(file: &File, room: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(room)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reservation too large"))?;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        // SAFETY: posix_fallocate only reads the descriptor and the two lengths.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = (file.as_raw_fd(), len);
        Err(super::unsupported("reserving disk room"))
    }
}

/// Whether this process may write into `dir` (its mode, ACLs, a read-only mount).
pub fn writable(dir: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the path it is given and nothing else.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}
