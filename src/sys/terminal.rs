//! The terminal: echo turned off while a password is typed.

/// Standard input's echo is off while this lives, and back as it was when it is dropped.
pub struct NoEcho(Option<libc::termios>);

impl NoEcho {
    /// Turn echo off on standard input (nothing happens if it is not a terminal).
    pub fn start() -> NoEcho {
        let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios it is given, and says whether it did; tcsetattr
        // only reads the one it is given.
        unsafe {
            if libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) != 0 {
                return NoEcho(None);
            }
            let saved = saved.assume_init();
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
            NoEcho(Some(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `start`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}
