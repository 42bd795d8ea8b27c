//! Why a host refuses to build a sandbox, named with its fix (`bottle doctor`).
//!
//! Hazard: a sandbox that half-builds and runs anyway (no user namespace, so no network
//! namespace, so the host's network) is worse than none. The helper never falls back:
//! the first failing step aborts the run, and this module turns that step, its errno
//! and the user-namespace sysctls read at that moment into a [`Cause`] a person can act
//! on. [`classify`] is pure, so the mapping is tested without breaking the host.

use serde::{Deserialize, Serialize};

use crate::wire::{SetupFailure, Step};

/// The host settings that decide whether unprivileged user namespaces work.
/// `None` where the file does not exist on this kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsernsSysctls {
    /// `user.max_user_namespaces` (`/proc/sys/user/max_user_namespaces`).
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (Debian before 11, some hardened kernels).
    pub unprivileged_userns_clone: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10 and later).
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
}

impl UsernsSysctls {
    /// Reads the three settings from `/proc/sys`.
    pub fn read() -> UsernsSysctls {
        let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse().ok();
        UsernsSysctls {
            max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
            unprivileged_userns_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict_unprivileged_userns: read(
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            ),
        }
    }
}

/// A known reason the host refuses, each with its fix ([`Cause::fix`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `user.max_user_namespaces` is 0.
    MaxUserNamespacesZero,
    /// `user.max_user_namespaces` is reached (ENOSPC with a non-zero limit).
    UserNamespaceLimitReached,
    /// `kernel.unprivileged_userns_clone` is 0.
    UnprivilegedUsernsCloneOff,
    /// Ubuntu's AppArmor restriction on unprivileged user namespaces.
    AppArmorRestricted,
    /// The kernel has no user namespaces (EINVAL from `unshare`).
    KernelWithoutUserNamespaces,
    /// EPERM with every sysctl permissive: a container without CAP_SYS_ADMIN or whose
    /// seccomp profile blocks `unshare`, or we already run inside a sandbox.
    ContainerForbidsNamespaces,
    /// `/proc` could not be mounted: the host's `/proc` is partly masked (a container).
    ProcMasked,
    /// Something else; the step and errno say what.
    Other,
}

impl Cause {
    /// What is wrong, in one sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::MaxUserNamespacesZero => {
                "user namespaces are disabled: user.max_user_namespaces is 0"
            }
            Cause::UserNamespaceLimitReached => "the user.max_user_namespaces limit is reached",
            Cause::UnprivilegedUsernsCloneOff => {
                "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone is 0"
            }
            Cause::AppArmorRestricted => {
                "AppArmor restricts unprivileged user namespaces: kernel.apparmor_restrict_unprivileged_userns is 1"
            }
            Cause::KernelWithoutUserNamespaces => {
                "this kernel has no user namespaces (CONFIG_USER_NS)"
            }
            Cause::ContainerForbidsNamespaces => {
                "creating namespaces is forbidden here: a container without CAP_SYS_ADMIN, or a seccomp profile that blocks unshare"
            }
            Cause::ProcMasked => {
                "a fresh /proc cannot be mounted: the host's /proc is partly masked (typical in a container)"
            }
            Cause::Other => "the sandbox could not be built",
        }
    }

    /// How to fix it.
    pub fn fix(self) -> &'static str {
        match self {
            Cause::MaxUserNamespacesZero | Cause::UserNamespaceLimitReached => {
                "raise it: sysctl -w user.max_user_namespaces=15000 (persist in /etc/sysctl.d/)"
            }
            Cause::UnprivilegedUsernsCloneOff => {
                "sysctl -w kernel.unprivileged_userns_clone=1 (persist in /etc/sysctl.d/)"
            }
            Cause::AppArmorRestricted => {
                "install an AppArmor profile granting `userns` to the bottle binaries, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
            }
            Cause::KernelWithoutUserNamespaces => {
                "use a kernel built with CONFIG_USER_NS=y, or the docker backend"
            }
            Cause::ContainerForbidsNamespaces | Cause::ProcMasked => {
                "run on the host, or give the container a seccomp profile that allows unshare and an unmasked /proc; or use the docker backend"
            }
            Cause::Other => "run `bottle doctor` for the failing step",
        }
    }
}

/// Maps a failed step to its cause, from the errno and the sysctls read when it failed.
pub fn classify(step: Step, errno: i32, sysctls: &UsernsSysctls) -> Cause {
    let apparmor = sysctls.apparmor_restrict_unprivileged_userns == Some(1);
    let userns_step = matches!(
        step,
        Step::UnshareUser
            | Step::WriteIdMaps
            | Step::UnshareNamespaces
            | Step::ForkPidOne
            | Step::MountPrivate
    );
    match (step, errno) {
        (Step::UnshareUser, libc::ENOSPC) if sysctls.max_user_namespaces == Some(0) => {
            Cause::MaxUserNamespacesZero
        }
        (Step::UnshareUser, libc::ENOSPC) => Cause::UserNamespaceLimitReached,
        (Step::UnshareUser, libc::EINVAL) => Cause::KernelWithoutUserNamespaces,
        (Step::UnshareUser, libc::EPERM | libc::EACCES)
            if sysctls.unprivileged_userns_clone == Some(0) =>
        {
            Cause::UnprivilegedUsernsCloneOff
        }
        (_, libc::EPERM | libc::EACCES) if userns_step && apparmor => Cause::AppArmorRestricted,
        (_, libc::EPERM) if userns_step => Cause::ContainerForbidsNamespaces,
        (Step::MountProc, libc::EPERM) => Cause::ProcMasked,
        _ => Cause::Other,
    }
}

/// A refusal: the failed step, its cause and the OS error, as one message naming the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the helper reported.
    pub failure: SetupFailure,
    /// What it means.
    pub cause: Cause,
}

impl Refusal {
    /// Classifies a failure report.
    pub fn from_failure(failure: SetupFailure) -> Refusal {
        let cause = classify(failure.step, failure.errno, &failure.sysctls);
        Refusal { failure, cause }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let SetupFailure { step, detail, errno, .. } = &self.failure;
        write!(f, "{step}")?;
        if !detail.is_empty() {
            write!(f, " ({detail})")?;
        }
        if *errno != 0 {
            write!(f, ": {}", nix::errno::Errno::from_raw(*errno).desc())?;
        }
        write!(f, ": {}; fix: {}", self.cause.describe(), self.cause.fix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctls(max: Option<u64>, clone: Option<u64>, apparmor: Option<u64>) -> UsernsSysctls {
        UsernsSysctls {
            max_user_namespaces: max,
            unprivileged_userns_clone: clone,
            apparmor_restrict_unprivileged_userns: apparmor,
        }
    }

    #[test]
    fn enospc_with_a_zero_limit_names_max_user_namespaces() {
        let cause = classify(Step::UnshareUser, libc::ENOSPC, &sysctls(Some(0), None, None));
        assert_eq!(cause, Cause::MaxUserNamespacesZero);
        assert!(cause.describe().contains("user.max_user_namespaces is 0"));
        assert!(cause.fix().contains("sysctl -w user.max_user_namespaces="));
    }

    #[test]
    fn enospc_with_a_limit_is_the_limit_reached() {
        let cause = classify(Step::UnshareUser, libc::ENOSPC, &sysctls(Some(5), None, None));
        assert_eq!(cause, Cause::UserNamespaceLimitReached);
    }

    #[test]
    fn eperm_with_userns_clone_off_names_that_sysctl() {
        let cause = classify(Step::UnshareUser, libc::EPERM, &sysctls(Some(100), Some(0), None));
        assert_eq!(cause, Cause::UnprivilegedUsernsCloneOff);
        assert!(cause.fix().contains("kernel.unprivileged_userns_clone=1"));
    }

    #[test]
    fn apparmor_restriction_shows_up_at_the_map_write_too() {
        // Ubuntu lets unshare succeed but strips the namespace's capabilities.
        for step in [Step::UnshareUser, Step::WriteIdMaps, Step::UnshareNamespaces] {
            let cause = classify(step, libc::EPERM, &sysctls(Some(100), None, Some(1)));
            assert_eq!(cause, Cause::AppArmorRestricted, "{step:?}");
        }
        assert!(
            Cause::AppArmorRestricted.fix().contains("apparmor_restrict_unprivileged_userns=0")
        );
    }

    #[test]
    fn eperm_with_permissive_sysctls_is_a_container() {
        let cause = classify(Step::UnshareUser, libc::EPERM, &sysctls(Some(100), Some(1), Some(0)));
        assert_eq!(cause, Cause::ContainerForbidsNamespaces);
    }

    #[test]
    fn einval_is_a_kernel_without_user_namespaces() {
        let cause = classify(Step::UnshareUser, libc::EINVAL, &UsernsSysctls::default());
        assert_eq!(cause, Cause::KernelWithoutUserNamespaces);
    }

    #[test]
    fn proc_mount_refusal_is_a_masked_proc() {
        assert_eq!(
            classify(Step::MountProc, libc::EPERM, &UsernsSysctls::default()),
            Cause::ProcMasked
        );
    }

    #[test]
    fn unrelated_failures_stay_other() {
        assert_eq!(classify(Step::Exec, libc::ENOENT, &UsernsSysctls::default()), Cause::Other);
        assert_eq!(
            classify(Step::EgressListen, libc::EADDRINUSE, &UsernsSysctls::default()),
            Cause::Other
        );
    }

    #[test]
    fn refusal_message_names_step_error_cause_and_fix() {
        let failure = SetupFailure {
            step: Step::UnshareUser,
            detail: String::new(),
            errno: libc::ENOSPC,
            sysctls: sysctls(Some(0), None, None),
        };
        let text = Refusal::from_failure(failure).to_string();
        assert!(text.starts_with("creating the user namespace: No space left on device"), "{text}");
        assert!(text.contains("user.max_user_namespaces is 0; fix: raise it"), "{text}");
    }
}
