//! Process confinement: no capabilities, no_new_privs, seccomp, a private PID namespace.
mod common;

use bottle_proc::ExitStatus;

#[tokio::test]
async fn no_capabilities_no_new_privs_and_seccomp_filter_mode() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("caps");
    let script =
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status";
    let finished = common::run(&reaper, &common::shell(script, &workspace)).await;
    let fields: Vec<(String, String)> = finished
        .stdout
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect();
    let expected = [
        ("CapInh", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapEff", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(fields, expected, "{finished:?}");
}

#[tokio::test]
async fn seccomp_refuses_the_dangerous_syscalls_with_eperm() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("seccomp");
    // Raw syscalls through ctypes (x86_64 numbers); each prints "<name> <errno>".
    let script = r#"
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    print(name, ctypes.get_errno() if rc == -1 else 'allowed')
buf = ctypes.create_string_buffer(256)
ptr = ctypes.addressof(buf)
call('io_uring_setup', 425, 8, ptr)
call('ptrace', 101, 16, 1, 0, 0)
call('process_vm_readv', 310, 1, ptr, 1, ptr, 1, 0)
call('bpf', 321, 0, ptr, 64)
call('perf_event_open', 298, ptr, 0, -1, -1, 0)
call('keyctl', 250, 0, 0, 0, 0)
call('kexec_load', 246, 0, 0, 0, 0)
call('socket_vsock', 41, 40, 1, 0)
call('unshare_user', 272, 0x10000000)
call('clone_newnet', 56, 0x40000000 | 17, 0, 0, 0, 0)
fd = os.open('/proc/self/ns/net', os.O_RDONLY)
call('setns', 308, fd, 0)
call('mount', 165, 0, ptr, 0, 0, 0)
call('pidfd_getfd', 438, 0, 0, 0)
call('ioctl_tiocsti', 16, 0, 0x5412, ptr)
call('io_uring_setup_x32', 425 | 0x40000000, 8, ptr)
call('clone3', 435, ptr, 88)
print('getppid', libc.getppid())
"#;
    let finished = common::run(&reaper, &common::python(script, &workspace)).await;
    assert_eq!(finished.status, ExitStatus::Exited(0), "{finished:?}");
    let eperm = libc::EPERM.to_string();
    let mut lines: Vec<(String, String)> = finished
        .stdout
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    // Control: an ordinary call still works, so the probe can tell allowed from refused.
    assert_eq!(lines.pop(), Some(("getppid".into(), "1".into())), "{finished:?}");
    assert_eq!(
        lines.pop(),
        Some(("clone3".into(), libc::ENOSYS.to_string())),
        "clone3 must fall back"
    );
    let names = [
        "io_uring_setup",
        "ptrace",
        "process_vm_readv",
        "bpf",
        "perf_event_open",
        "keyctl",
        "kexec_load",
        "socket_vsock",
        "unshare_user",
        "clone_newnet",
        "setns",
        "mount",
        "pidfd_getfd",
        "ioctl_tiocsti",
        "io_uring_setup_x32",
    ];
    let expected: Vec<(String, String)> =
        names.iter().map(|n| (n.to_string(), eperm.clone())).collect();
    assert_eq!(lines, expected, "{finished:?}");
}

#[tokio::test]
async fn pid_namespace_hides_and_protects_host_processes() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("pidns");
    let host_pid = std::process::id();
    let script = format!(
        r#"
import os
print('me', os.getpid())
print('pids', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
try:
    os.kill({host_pid}, 0)
    print('kill allowed')
except ProcessLookupError:
    print('kill ESRCH')
"#
    );
    let finished = common::run(&reaper, &common::python(&script, &workspace)).await;
    // PID 1 is the sandbox's init; the agent is its only child.
    assert_eq!(finished.stdout, "me 2\npids [1, 2]\nkill ESRCH\n", "{finished:?}");
    assert!(host_pid > 2, "the host pid must not collide with the sandbox's");
}
