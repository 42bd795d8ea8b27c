//! The agent's seccomp filter: a deny list on top of namespaces and dropped capabilities.
//!
//! Hazard: a deny list is only as good as its aliases. On x86_64 the same syscall is
//! reachable by its x32 number (`nr | 0x4000_0000`) and by the 32-bit `int 0x80` table;
//! seccompiler's filter kills any call whose architecture is not the native one (so the
//! 32-bit table is closed), and every denied x86_64 number is denied again with the x32
//! bit set. `clone3` passes its flags in memory a filter cannot read, so it fails with
//! ENOSYS (libc then falls back to `clone`, whose flags we can check); everything else
//! denied fails with EPERM. The filter is loaded last, after `PR_SET_NO_NEW_PRIVS`,
//! because the setup before it needs `mount`, `unshare` and `pivot_root`.

use std::collections::BTreeMap;

use crate::LocalError;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The errno a denied syscall returns.
pub const DENIED_ERRNO: i32 = libc::EPERM;

/// `AF_VSOCK`: sockets to the hypervisor or other VMs, which namespaces do not fence.
const AF_VSOCK: u64 = 40;

/// Syscalls denied whatever their arguments, with the reason for each group.
pub const DENIED: &[(&str, i64)] = &[
    // io_uring: a second syscall interface that seccomp cannot see into.
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    // Reading or writing other processes (pidfd_getfd: taking another's fds).
    ("ptrace", libc::SYS_ptrace),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    // Large kernel attack surface no agent needs.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    // The kernel keyring is not namespaced by mount or network namespaces.
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    // Replacing or extending the kernel.
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    // No new namespaces and no changes to the mount tree after setup.
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // File handles bypass path-based confinement.
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    // Host-wide state.
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
];

/// `ioctl` requests denied: typing into a terminal (`TIOCSTI`, bubblewrap's
/// CVE-2017-5226) and the console's selection and keyboard requests (`TIOCLINUX`).
const DENIED_IOCTLS: &[u64] = &[0x5412, 0x541C]; // TIOCSTI, TIOCLINUX (asm-generic)

/// Namespace flags that `clone` may not carry.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// The two programs, in the order they are loaded: EPERM rules, then `clone3` -> ENOSYS.
pub fn programs() -> Result<Vec<BpfProgram>, LocalError> {
    let arch = native_arch();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(_, number) in DENIED {
        insert_with_aliases(&mut rules, number, Vec::new());
    }
    let flag_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| rule(0, SeccompCmpOp::MaskedEq(flag as u64), flag as u64))
        .collect::<Result<Vec<_>, _>>()?;
    insert_with_aliases(&mut rules, libc::SYS_clone, flag_rules);
    insert_with_aliases(&mut rules, libc::SYS_socket, vec![rule(0, SeccompCmpOp::Eq, AF_VSOCK)?]);
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|&request| rule(1, SeccompCmpOp::Eq, request))
        .collect::<Result<Vec<_>, _>>()?;
    insert_with_aliases(&mut rules, libc::SYS_ioctl, ioctl_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(DENIED_ERRNO as u32),
        arch,
    )
    .map_err(LocalError::SeccompRules)?;
    let mut clone3 = BTreeMap::new();
    insert_with_aliases(&mut clone3, libc::SYS_clone3, Vec::new());
    let no_clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(LocalError::SeccompRules)?;
    [deny, no_clone3]
        .into_iter()
        .map(|filter| BpfProgram::try_from(filter).map_err(LocalError::SeccompRules))
        .collect()
}

/// Loads the filter into this thread (inherited by every child). Needs no_new_privs.
pub fn load() -> Result<(), LocalError> {
    for program in programs()? {
        seccompiler::apply_filter(&program).map_err(LocalError::SeccompLoad)?;
    }
    Ok(())
}

fn rule(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule, LocalError> {
    let condition = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(LocalError::SeccompRules)?;
    SeccompRule::new(vec![condition]).map_err(LocalError::SeccompRules)
}

fn insert_with_aliases(
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
    number: i64,
    conditions: Vec<SeccompRule>,
) {
    #[cfg(target_arch = "x86_64")]
    rules.insert(number | X32_SYSCALL_BIT, conditions.clone());
    rules.insert(number, conditions);
}

fn native_arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    {
        TargetArch::x86_64
    }
    #[cfg(target_arch = "aarch64")]
    {
        TargetArch::aarch64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_s_minimum_is_on_the_deny_list() {
        for name in [
            "io_uring_setup",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "keyctl",
            "kexec_load",
            "setns",
            "unshare",
        ] {
            assert!(DENIED.iter().any(|(n, _)| *n == name), "{name} missing");
        }
    }

    #[test]
    fn programs_compile() {
        let programs = programs().expect("rules are valid");
        assert_eq!(programs.len(), 2);
        // Every denied syscall costs at least one jump.
        assert!(programs[0].len() > DENIED.len(), "{}", programs[0].len());
    }
}
