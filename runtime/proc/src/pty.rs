//! Pseudo-terminals: a pty pair for an interactive agent, window sizes, raw mode.
//!
//! Hazard: a terminal fd is a way to type into whatever session owns it (`TIOCSTI`), so
//! the agent must never share a session with the user's terminal. It gets a pty of its
//! own as its controlling terminal ([`start_session`] with the slave: `setsid`, then
//! `TIOCSCTTY`), or, without one, a new session with no controlling terminal at all (the
//! kernel refuses `TIOCSTI` on a terminal that is not the caller's controlling one to a
//! process without CAP_SYS_ADMIN, and the seccomp filter denies it outright). Both ends
//! are opened close-on-exec and without becoming anyone's controlling terminal
//! (`O_NOCTTY`); the slave is opened from the master (`TIOCGPTPEER`), never by a path
//! that could name someone else's pty. Raw mode of the launcher's terminal is restored
//! when the guard drops, also on an error path.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use nix::sys::termios::{SetArg, Termios};

/// Both ends of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    /// The launcher's end: what it writes is the agent's input, what it reads the output.
    pub master: OwnedFd,
    /// The agent's end (its stdin, stdout, stderr and controlling terminal).
    pub slave: OwnedFd,
}

/// Opens a new pty pair (both close-on-exec, neither our controlling terminal).
pub fn openpty() -> std::io::Result<Pty> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")?
        .into();
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a pointer to our local; the fd is a ptmx.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes integer open flags and returns a new fd (or -1).
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl just created this fd for us; nobody else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok(Pty { master, slave })
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Sets the window size of the terminal `fd` (either end of a pty); the kernel sends
/// SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> std::io::Result<()> {
    let value = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from a pointer to our local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &value) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of the terminal `fd` (ENOTTY if it is not a terminal).
pub fn window_size(fd: BorrowedFd<'_>) -> std::io::Result<WindowSize> {
    let mut value = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize through a pointer to our local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut value) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(WindowSize { rows: value.ws_row, cols: value.ws_col })
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Makes this process the leader of a new session (and of a new process group), with
/// `terminal` as its controlling terminal when given. For a forked child before exec:
/// an agent without a pty still gets a session of its own, so no terminal it inherited
/// is its controlling one.
pub fn start_session(terminal: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    nix::unistd::setsid()?;
    if let Some(terminal) = terminal {
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal it from another
        // session); the fd is borrowed for the call.
        if unsafe { libc::ioctl(terminal.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The launcher's terminal in raw mode; the saved mode comes back on drop or
/// [`RawMode::restore`].
#[derive(Debug)]
pub struct RawMode {
    terminal: OwnedFd,
    saved: Option<Termios>,
}

/// Puts the terminal `fd` in raw mode (no echo, no line editing, no signals from keys:
/// every byte goes to the agent's pty, whose own line discipline handles them).
pub fn set_raw_mode(fd: BorrowedFd<'_>) -> std::io::Result<RawMode> {
    let terminal = fd.try_clone_to_owned()?;
    let saved = nix::sys::termios::tcgetattr(&terminal)?;
    let mut raw = saved.clone();
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&terminal, SetArg::TCSANOW, &raw)?;
    Ok(RawMode { terminal, saved: Some(saved) })
}

impl RawMode {
    /// Restores the saved mode now, reporting a failure.
    pub fn restore(mut self) -> std::io::Result<()> {
        self.restore_saved()
    }

    fn restore_saved(&mut self) -> std::io::Result<()> {
        match self.saved.take() {
            Some(saved) => {
                nix::sys::termios::tcsetattr(self.terminal.as_fd(), SetArg::TCSANOW, &saved)?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = self.restore_saved();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_pair_carries_bytes_and_its_size() {
        let pty = openpty().expect("pty");
        assert!(is_terminal(pty.slave.as_fd()));
        assert!(is_terminal(pty.master.as_fd()));
        let (_, pipe) = nix::unistd::pipe().expect("pipe");
        assert!(!is_terminal(pipe.as_fd()), "control: a pipe is not a terminal");
        let size = WindowSize { rows: 33, cols: 101 };
        set_window_size(pty.master.as_fd(), size).expect("set size");
        assert_eq!(window_size(pty.slave.as_fd()).expect("size"), size);
        let err = window_size(pipe.as_fd()).expect_err("a pipe has no size");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        // Raw mode off echo: bytes written on the slave come out of the master as is.
        let raw = set_raw_mode(pty.slave.as_fd()).expect("raw");
        nix::unistd::write(&pty.slave, b"a\n").expect("write");
        let mut buffer = [0u8; 8];
        let n = nix::unistd::read(&pty.master, &mut buffer).expect("read");
        assert_eq!(&buffer[..n], b"a\n", "raw mode: no \\r added");
        raw.restore().expect("restore");
        nix::unistd::write(&pty.slave, b"b\n").expect("write");
        let n = nix::unistd::read(&pty.master, &mut buffer).expect("read");
        assert_eq!(&buffer[..n], b"b\r\n", "cooked mode again: \\n becomes \\r\\n");
    }

    #[test]
    fn both_ends_are_close_on_exec() {
        let pty = openpty().expect("pty");
        for fd in [&pty.master, &pty.slave] {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("flags");
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }
}
