//! The agent's terminal: a pty when `bottle run` is interactive (the launcher's terminal
//! in raw mode, bytes copied both ways, resizes forwarded), the launcher's own stdio when
//! it is not.
//!
//! Hazard: a launcher that dies or returns with its terminal in raw mode leaves the
//! user's shell unusable. The raw mode lives in a guard that restores the saved mode on
//! drop, whichever way the run ends.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use bottle_local::AgentStdio;
use bottle_proc::pty;

/// Whether the launcher runs in a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    /// stdin and stdout are both terminals.
    pub interactive: bool,
}

impl Terminal {
    /// Looks at stdin and stdout.
    pub fn detect() -> Terminal {
        let interactive = pty::is_terminal(std::io::stdin().as_fd())
            && pty::is_terminal(std::io::stdout().as_fd());
        Terminal { interactive }
    }
}

/// The agent's stdio for this terminal, and the pty master when there is one.
pub fn agent_stdio(terminal: &Terminal) -> Result<(AgentStdio, Option<OwnedFd>), String> {
    if !terminal.interactive {
        return Ok((
            super::inherited_stdio().map_err(|e| format!("cannot pass stdio: {e}"))?,
            None,
        ));
    }
    let pair = pty::openpty().map_err(|e| format!("cannot open a pty: {e}"))?;
    if let Ok(size) = pty::window_size(std::io::stdin().as_fd()) {
        let _ = pty::set_window_size(pair.master.as_fd(), size);
    }
    Ok((AgentStdio::Pty(pair.slave), Some(pair.master)))
}

/// The copy between the launcher's terminal and the agent's pty; restores the terminal
/// when dropped.
#[derive(Debug)]
pub struct Attached {
    _raw: Option<pty::RawMode>,
    resize: tokio::task::JoinHandle<()>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.resize.abort();
    }
}

/// Puts the terminal in raw mode and copies bytes both ways until the agent's side
/// closes; forwards every SIGWINCH (`resized` changes) as the pty's new size.
pub fn attach(
    master: OwnedFd,
    _terminal: &Terminal,
    mut resized: tokio::sync::watch::Receiver<u64>,
) -> Attached {
    let raw = pty::set_raw_mode(std::io::stdin().as_fd()).ok();
    if let Ok(reader) = master.try_clone() {
        std::thread::spawn(move || copy(std::fs::File::from(reader), std::io::stdout()));
    }
    if let Ok(writer) = master.try_clone() {
        // Blocks on the terminal; ends with the launcher (a read cannot be interrupted).
        std::thread::spawn(move || copy(std::io::stdin(), std::fs::File::from(writer)));
    }
    let resize = tokio::spawn(async move {
        while resized.changed().await.is_ok() {
            if let Ok(size) = pty::window_size(std::io::stdin().as_fd()) {
                let _ = pty::set_window_size(master.as_fd(), size);
            }
        }
    });
    Attached { _raw: raw, resize }
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
        }
    }
}
