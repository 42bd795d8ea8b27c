//! Small /proc readers used by the reaper's sweep and by leak tests, and the adoption of
//! an inherited listening socket (a descriptor with two owners is closed twice).

use crate::Pid;

/// Number of open file descriptors of this process (from `/proc/self/fd`).
pub fn count_open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count().saturating_sub(1)).unwrap_or(0)
}

/// Every pid visible in `/proc`.
pub fn list_pids() -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<Pid>().ok()).collect()
}

/// The state letter (`R`, `S`, `Z`, ...) and parent pid of `pid`, from `/proc/<pid>/stat`.
pub fn state_and_ppid(pid: Pid) -> Option<(char, Pid)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Zombie children of `parent` that nobody has reaped yet.
pub fn zombies_of(parent: Pid) -> Vec<Pid> {
    list_pids()
        .into_iter()
        .filter(|&pid| matches!(state_and_ppid(pid), Some(('Z', ppid)) if ppid == parent))
        .collect()
}

/// Live (non-zombie) children of `parent`.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    list_pids()
        .into_iter()
        .filter(|&pid| matches!(state_and_ppid(pid), Some((state, ppid)) if ppid == parent && state != 'Z'))
        .collect()
}

/// Descriptors already taken by [`take_inherited`]: each may be owned once.
static TAKEN: std::sync::Mutex<std::collections::BTreeSet<std::os::fd::RawFd>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Takes ownership of a file descriptor the parent left open for us (a pipe with the
/// secrets, a listening socket); dropping the result closes it. It is marked
/// close-on-exec so no child inherits it. Refuses stdin/stdout/stderr, a descriptor
/// that is not open, and one taken before (two owners would close it twice).
pub fn take_inherited(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::{Error, ErrorKind};
    if fd <= 2 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("fd {fd} is stdin, stdout or stderr"),
        ));
    }
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    if taken.contains(&fd) {
        return Err(Error::new(ErrorKind::AlreadyExists, format!("fd {fd} was already taken")));
    }
    // SAFETY: fcntl(F_GETFD/F_SETFD) on any integer has no memory-safety preconditions;
    // it fails with EBADF when the descriptor is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(Error::last_os_error());
    }
    taken.insert(fd);
    // SAFETY: the descriptor is open (checked above), was inherited rather than opened
    // by anything in this process, and TAKEN guarantees this is its only owner.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Takes ownership of an inherited, already listening TCP socket by its descriptor number
/// (the launcher creates it inside the agent's network namespace and passes it down).
///
/// Refused, with the reason: a number that is not open, not a socket, not TCP, not
/// listening, or already adopted in this process (two owners would close it twice). The
/// descriptor is marked close-on-exec so it never reaches a child. The caller must not
/// own it otherwise: it is inherited, or was given up with `into_raw_fd`.
pub fn adopt_listener(fd: std::os::fd::RawFd) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let refuse = |why: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("fd {fd}: {why}"))
    };
    if fd < 0 {
        return Err(refuse("not a descriptor number"));
    }
    let mut adopted = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    if adopted.contains(&fd) {
        return Err(refuse("already adopted by this process"));
    }
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags; any number is allowed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(refuse("not open"));
    }
    let int_opt = |level, name| -> std::io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len point to live locals of the sizes getsockopt is told.
        let rc =
            unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
        if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(value) }
    };
    let domain = int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|_| refuse("not a socket"))?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(refuse("not an IPv4 or IPv6 socket"));
    }
    if int_opt(libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(refuse("not a TCP socket"));
    }
    if int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN)? != 1 {
        return Err(refuse("not listening"));
    }
    // SAFETY: F_SETFD on a descriptor checked open above; only its close-on-exec flag changes.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    adopted.insert(fd);
    // SAFETY: the descriptor is open, is a listening TCP socket, and the TAKEN set
    // guarantees this is its only owner in the process (it was inherited, not opened by
    // Rust code here, and is adopted once).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(std::net::TcpListener::from(owned))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    #[test]
    fn an_inherited_pipe_is_taken_once_and_read() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let raw = reader.into_raw_fd();
        writer.write_all(b"{}").unwrap();
        drop(writer);
        let mut file = std::fs::File::from(take_inherited(raw).unwrap());
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "{}");
        let again = take_inherited(raw).unwrap_err();
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists, "{again}");
        assert!(take_inherited(1).unwrap_err().to_string().contains("stdin, stdout or stderr"));
        let closed = take_inherited(100_000).unwrap_err();
        assert_eq!(closed.raw_os_error(), Some(libc::EBADF), "{closed}");
    }

    #[test]
    fn a_listening_socket_is_adopted_once_and_anything_else_is_refused_with_the_reason() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = listener.into_raw_fd();
        let adopted = adopt_listener(fd).unwrap();
        assert_eq!(adopted.local_addr().unwrap(), addr);
        let again = adopt_listener(fd).unwrap_err();
        assert!(again.to_string().contains("already adopted"), "{again}");

        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let err = adopt_listener(file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = adopt_listener(udp.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a TCP socket"), "{err}");
        let err = adopt_listener(1_000_000).unwrap_err();
        assert!(err.to_string().contains("not open"), "{err}");
    }
}
