//! Small /proc readers used by the reaper's sweep and by leak tests.

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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;

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
}
