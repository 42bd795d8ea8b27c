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
