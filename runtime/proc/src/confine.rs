//! Primitives for a single-threaded sandbox helper: fork, a tiny init, exec, capabilities.
//!
//! Hazard: `fork` in a multi-threaded process leaves the child with locks other threads
//! held (the allocator's among them), so anything but async-signal-safe calls can
//! deadlock it. Every function here that forks refuses unless the calling process has
//! exactly one thread, so the child may run ordinary Rust. A launcher with a tokio
//! runtime never calls these: it spawns the sandbox helper through [`crate::Reaper::spawn`]
//! (fork + exec at once), and the freshly exec'd helper is single-threaded.
//!
//! The helper has exactly one waiter too: [`supervise_child`], the only `waitpid` in that
//! process. It forwards every signal it receives to its one child and returns that child's
//! status; as PID 1 of a PID namespace it also reaps orphans.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::{ExitStatus, ForkError, Pid};

/// Number of threads of this process (from `/proc/self/status`).
pub fn thread_count() -> std::io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no Threads: line in /proc/self/status"))
}

/// Forks this (single-threaded) process, handing `value` to the child.
///
/// The child runs `child(value)` and then `_exit`s with the code it returns (101 if it
/// panics): it never returns into the caller's stack, so no destructor or buffered
/// output of the parent runs twice. In the parent `value` is dropped on success (an fd
/// given to the child is closed here) and returned with the error on failure. Every
/// other fd the parent holds is inherited too, so give the child what it needs through
/// `value` rather than clones. With `die_with_parent` the child gets
/// `PR_SET_PDEATHSIG(SIGKILL)` and exits at once if the parent is already gone (the race
/// between `fork` and `prctl` is closed with a pipe).
pub fn fork_process<T, F>(die_with_parent: bool, value: T, child: F) -> Result<Pid, (ForkError, T)>
where
    F: FnOnce(T) -> i32,
{
    let threads = match thread_count() {
        Ok(threads) => threads,
        Err(err) => return Err((ForkError::Fork(err), value)),
    };
    if threads != 1 {
        return Err((ForkError::MultiThreaded { threads }, value));
    }
    let death_pipe = if die_with_parent {
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => Some(pipe),
            Err(errno) => return Err((ForkError::DeathPipe(errno.into()), value)),
        }
    } else {
        None
    };
    // SAFETY: the process has exactly one thread (checked above), so no lock can be held
    // by a thread that does not exist in the child; the child may run ordinary code.
    match unsafe { nix::unistd::fork() } {
        Err(errno) => Err((ForkError::Fork(errno.into()), value)),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            if let Some((read_end, write_end)) = death_pipe {
                drop(read_end);
                // Held open until the child has set PDEATHSIG and checked the pipe (it
                // then closes its read end, which poll reports here as POLLERR): had
                // we died before, its check would have seen our end closed.
                wait_for_no_readers(&write_end);
            }
            drop(value);
            Ok(child.as_raw())
        }
        Ok(nix::unistd::ForkResult::Child) => {
            if let Some((read_end, write_end)) = death_pipe {
                drop(write_end);
                if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
                    || parent_gone(&read_end)
                {
                    exit_now(1);
                }
                drop(read_end);
            }
            let code = catch_unwind(AssertUnwindSafe(move || child(value))).unwrap_or(101);
            exit_now(code)
        }
    }
}

/// True if the parent's end of the death pipe is closed (the parent has exited).
fn parent_gone(read_end: &OwnedFd) -> bool {
    let mut fds = [libc::pollfd { fd: read_end.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    // SAFETY: poll on one valid pollfd that lives on this stack, zero timeout.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    ready != 0 && fds[0].revents & (libc::POLLHUP | libc::POLLIN) != 0
}

/// Blocks until no process holds the read end of the pipe whose write end this is.
fn wait_for_no_readers(write_end: &OwnedFd) {
    loop {
        // No events asked for: poll still reports POLLERR once the last reader is gone.
        let mut fds = [libc::pollfd { fd: write_end.as_raw_fd(), events: 0, revents: 0 }];
        // SAFETY: poll on one valid pollfd that lives on this stack.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, -1) };
        if ready > 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends this forked copy without running atexit handlers or flushing
    // stdio buffers that belong to the parent.
    unsafe { libc::_exit(code) }
}

/// Blocks every signal in this thread, so they wait for [`supervise_child`]. Call it
/// before forking the child that `supervise_child` will wait for; the child undoes it
/// with [`prepare_exec`].
pub fn block_all_signals() -> std::io::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None)?;
    Ok(())
}

/// What a supervising process serves besides its main child: PID 1's exec socket and
/// the connections of its clients. The supervise loop polls [`Served::watched`] together
/// with the signals, and tells the server about every other child it reaps (the server
/// forked some of them), so the loop stays the process's only waiter.
pub trait Served {
    /// The fds to wait on this round, for input or hangup.
    fn watched(&self) -> Vec<RawFd>;
    /// `fd`, one of [`Served::watched`], is readable or hung up.
    fn ready(&mut self, fd: RawFd);
    /// A child other than the main one was reaped (one the server forked, or an orphan).
    fn reaped(&mut self, pid: Pid, status: ExitStatus);
}

/// Serves nothing: [`supervise_child`].
struct NothingServed;

impl Served for NothingServed {
    fn watched(&self) -> Vec<RawFd> {
        Vec::new()
    }
    fn ready(&mut self, _fd: RawFd) {}
    fn reaped(&mut self, _pid: Pid, _status: ExitStatus) {}
}

/// Waits for `child` (this process's one child that matters) and returns its status.
/// Every signal that arrives meanwhile, except SIGCHLD, is forwarded to `child`; other
/// children (orphans re-parented to a PID 1) are reaped and dropped. Expects
/// [`block_all_signals`] to have been called. This is the process's only waiter.
pub fn supervise_child(child: Pid) -> std::io::Result<ExitStatus> {
    supervise_serving(child, &mut NothingServed)
}

/// [`supervise_child`], also serving `served`: its fds are polled with the signals (a
/// signalfd over the blocked set, so no handler runs and no wakeup is lost), and every
/// child other than `child` that is reaped is reported to it. Returns once `child` is
/// reaped; what `served` forked may still run (see [`kill_and_reap_the_rest`]).
pub fn supervise_serving(child: Pid, served: &mut dyn Served) -> std::io::Result<ExitStatus> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let signals =
        SignalFd::with_flags(&SigSet::all(), SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    loop {
        if let Some(status) = reap_until(child, served)? {
            return Ok(status);
        }
        let watched = served.watched();
        let mut fds = Vec::with_capacity(watched.len() + 1);
        fds.push(libc::pollfd { fd: signals.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.extend(watched.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }));
        // SAFETY: poll on a vector of pollfds we own; the length is the vector's. The
        // 1 s timeout is only a safety net: SIGCHLD wakes us through the signalfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(err);
        }
        if fds[0].revents != 0 {
            while let Some(info) = signals.read_signal()? {
                let signal = info.ssi_signo as i32;
                if signal != libc::SIGCHLD {
                    crate::signal::kill_pid(child, signal);
                }
            }
        }
        for pollfd in &fds[1..] {
            if pollfd.revents != 0 {
                served.ready(pollfd.fd);
            }
        }
    }
}

/// Reaps every exited child without blocking; returns `child`'s status once it is among
/// them. The others go to `served`.
fn reap_until(child: Pid, served: &mut dyn Served) -> std::io::Result<Option<ExitStatus>> {
    loop {
        match reap_one()? {
            Reaped::Nothing => return Ok(None),
            Reaped::Child(pid, status) if pid == child => return Ok(Some(status)),
            Reaped::Child(pid, status) => served.reaped(pid, status),
        }
    }
}

enum Reaped {
    /// No child has exited (or there are none).
    Nothing,
    /// This child ended with this status.
    Child(Pid, ExitStatus),
}

/// One `waitpid(-1, WNOHANG)`: the single place this helper waits.
fn reap_one() -> std::io::Result<Reaped> {
    loop {
        let mut raw = 0;
        #[allow(clippy::disallowed_methods)] // the one waiter of a single-threaded helper
        // SAFETY: waitpid with a valid out-pointer; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        if pid == 0 {
            return Ok(Reaped::Nothing);
        }
        if pid < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => Err(err),
            };
        }
        if let Some(status) = ExitStatus::from_raw(raw) {
            return Ok(Reaped::Child(pid, status));
        }
    }
}

/// The last act of a PID 1 whose main child has ended: SIGKILL every other process of
/// its PID namespace and reap them for up to `limit`, reporting each to `served` (so an
/// exec client learns its command was killed). Returns how many were reaped.
pub fn kill_and_reap_the_rest(served: &mut dyn Served, limit: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + limit;
    let mut reaped = 0;
    loop {
        // Again each round: a process caught in fork before the first kill has a child now.
        let signalled = crate::signal::signal_all_others(libc::SIGKILL);
        while let Ok(Reaped::Child(pid, status)) = reap_one() {
            reaped += 1;
            served.reaped(pid, status);
        }
        if signalled == 0 || std::time::Instant::now() >= deadline {
            return reaped;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Sends `signal` to the process group `pgid`. Only for a child this process has not
/// reaped yet (its pid cannot have been recycled): the caller is its only waiter.
pub fn signal_child_group(pgid: Pid, signal: i32) -> std::io::Result<()> {
    crate::signal::kill_group(pgid, signal)
}

/// Makes `stdin`, `stdout` and `stderr` this process's fds 0, 1 and 2 (without the
/// close-on-exec flag). Safe when a source already is one of 0-2: each is first copied
/// above them, so no dup2 overwrites a source another still needs.
pub fn install_stdio(stdio: [BorrowedFd<'_>; 3]) -> std::io::Result<()> {
    let mut copies = Vec::with_capacity(3);
    for fd in stdio {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid fd we borrow returns a new fd we own.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just created for us by fcntl.
        copies.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    for (target, copy) in copies.iter().enumerate() {
        // SAFETY: dup2 onto 0, 1 or 2, which this process deliberately replaces; the
        // OwnedFds that std holds for them (none: std's stdio are not OwnedFds) are
        // unaffected, and the target loses close-on-exec as exec needs.
        if unsafe { libc::dup2(copy.as_raw_fd(), target as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Readies this process for `execve`: every signal disposition back to default, an
/// empty signal mask, every fd above stderr marked close-on-exec.
pub fn prepare_exec() -> std::io::Result<()> {
    crate::spawn::child_setup(&[])
}

/// Replaces this process with `argv[0]` (looked up on the `PATH` in `env` if it has no
/// slash), with exactly `env`. Returns only on failure, with the most telling error
/// (EACCES over ENOENT, as execvp does).
pub fn exec_program(argv: &[String], env: &[(String, String)]) -> std::io::Error {
    let to_c =
        |s: &str| CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL));
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| to_c(a)).collect();
    let envp: Result<Vec<CString>, _> =
        env.iter().map(|(k, v)| to_c(&format!("{k}={v}"))).collect();
    let (Ok(args), Ok(envp)) = (args, envp) else {
        return std::io::Error::from_raw_os_error(libc::EINVAL);
    };
    let Some(program) = argv.first() else {
        return std::io::Error::from_raw_os_error(libc::ENOENT);
    };
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        let path =
            env.iter().find(|(k, _)| k == "PATH").map_or("/usr/bin:/bin", |(_, v)| v.as_str());
        path.split(':').filter(|d| !d.is_empty()).map(|dir| format!("{dir}/{program}")).collect()
    };
    let mut best = std::io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in candidates {
        let Ok(path) = to_c(&candidate) else { continue };
        let Err(errno) = nix::unistd::execve(&path, &args, &envp);
        if errno == nix::errno::Errno::EACCES || best.raw_os_error() == Some(libc::ENOENT) {
            best = errno.into();
        }
    }
    best
}

/// Drops every capability for good: the bounding set, the ambient set, then effective,
/// permitted and inheritable; locks the securebits so exec of a root-owned or setuid
/// program cannot give any back. Needs CAP_SETPCAP (held in a fresh user namespace).
pub fn drop_all_capabilities() -> std::io::Result<()> {
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: past the kernel's last capability.
            if err.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(err);
        }
    }
    // SAFETY: prctl with integer arguments only. EINVAL on kernels without ambient caps.
    unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    // NOROOT | NOROOT_LOCKED | NO_SETUID_FIXUP | NO_SETUID_FIXUP_LOCKED | KEEP_CAPS_LOCKED.
    const SECUREBITS: libc::c_ulong = 0x2f;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads one header and two data structs (version 3), both on this stack.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Brings the loopback interface of this network namespace up (what `ip link set lo up`
/// does), with the SIOCGIFFLAGS/SIOCSIFFLAGS ioctls.
pub fn loopback_up() -> std::io::Result<()> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes ifru_flags of the ifreq we own; the fd is a socket.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just filled ifru_flags, the union member we read and write.
    unsafe {
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own; the fd is a socket.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_in_a_multi_threaded_process_and_the_value_comes_back() {
        // The test harness runs this test on a thread of its own: at least two threads.
        let (err, value) = fork_process(false, 42, |_| 0).expect_err("refused");
        assert!(matches!(err, ForkError::MultiThreaded { threads } if threads >= 2), "{err:?}");
        assert_eq!(value, 42);
    }

    #[test]
    fn thread_count_sees_a_new_thread() {
        let before = thread_count().expect("count");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || rx.recv());
        assert_eq!(thread_count().expect("count"), before + 1);
        drop(tx);
        let _ = thread.join();
    }
}
