//! The sandbox's filesystem: a read-only root built on a tmpfs, then `pivot_root`.
//!
//! Hazard: whatever the new mount tree does not leave out is visible to the agent, and a
//! read-only bind is not read-only until it is remounted (the first `MS_BIND` ignores
//! `MS_RDONLY`), submounts included. So the tree starts empty (a tmpfs) and only
//! [`plan`]'s entries are added; each read-only bind and every mount under it is
//! remounted read-only, keeping the flags the kernel locked on the source (a user
//! namespace may not clear nosuid/nodev/noexec or change atime flags of a mount it
//! inherited; bwrap does the same). Binds are taken from `/oldroot` after a first
//! `pivot_root` onto a scratch tmpfs, so no host path is shadowed while we build, and
//! nothing is ever mounted in the host's mount namespace. `/run`, `/home`, the bottle
//! state, the Docker socket and every other host socket are absent because nothing
//! adds them; `/proc` is fresh (this PID namespace only) and `/dev` holds six nodes and
//! a private devpts.

use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;

use crate::spec::{RootFs, SandboxSpec};

/// The host's system directories [`RootFs::Host`] shows (as the host has them: a
/// directory is bound, a symlink recreated).
pub const HOST_SYSTEM: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The `/etc` entries [`RootFs::Host`] shows: what dynamic linking, TLS, time zones,
/// shells and interpreters need; no secrets (`shadow`, `sudoers`, ssh keys stay out).
pub const HOST_ETC: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "crypto-policies",
    "debian_version",
    "environment",
    "gitconfig",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "magic",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "perl",
    "pki",
    "profile",
    "protocols",
    "python3",
    "services",
    "ssl",
    "terminfo",
    "timezone",
];

/// Top-level names of a [`RootFs::Dir`] that the sandbox makes itself or leaves out.
const ROOTFS_SKIPPED: &[&str] = &["proc", "dev", "tmp", "sys", "run", "home"];

/// The host nodes bound into `/dev` (mknod is refused in a user namespace).
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// One thing in the new root. Paths inside are absolute; sources are host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A host file or directory bound at `target`, read-only unless `writable`.
    Bind { source: PathBuf, target: PathBuf, writable: bool },
    /// A symlink at `link` pointing to `points_to`.
    Symlink { link: PathBuf, points_to: PathBuf },
    /// A generated file.
    File { target: PathBuf, contents: String },
}

/// The entries of the new root, in order, from the spec and what exists on the host.
pub fn plan(spec: &SandboxSpec) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    match &spec.root {
        RootFs::Host => {
            for name in HOST_SYSTEM {
                push_host_entry(
                    &mut entries,
                    &Path::new("/").join(name),
                    &Path::new("/").join(name),
                )?;
            }
            for name in HOST_ETC {
                push_host_entry(
                    &mut entries,
                    &Path::new("/etc").join(name),
                    &Path::new("/etc").join(name),
                )?;
            }
            entries.extend(generated_etc(spec));
        }
        RootFs::Dir(dir) => {
            let workspace_top = spec.workspace.as_ref().and_then(|w| first_component(&w.target));
            let mut names: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
            names.sort_by_key(|entry| entry.file_name());
            for entry in names {
                let name = entry.file_name();
                let skipped = ROOTFS_SKIPPED.iter().any(|s| name == *s)
                    || workspace_top.as_deref().is_some_and(|top| name == top);
                if !skipped {
                    push_host_entry(&mut entries, &entry.path(), &Path::new("/").join(&name))?;
                }
            }
        }
    }
    if let Some(workspace) = &spec.workspace {
        entries.push(Entry::Bind {
            source: workspace.source.clone(),
            target: workspace.target.clone(),
            writable: true,
        });
    }
    for bind in &spec.read_only {
        entries.push(Entry::Bind {
            source: bind.source.clone(),
            target: bind.target.clone(),
            writable: false,
        });
    }
    Ok(entries)
}

fn push_host_entry(entries: &mut Vec<Entry>, source: &Path, target: &Path) -> std::io::Result<()> {
    let metadata = match std::fs::symlink_metadata(source) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if metadata.file_type().is_symlink() {
        entries.push(Entry::Symlink {
            link: target.to_path_buf(),
            points_to: std::fs::read_link(source)?,
        });
    } else {
        entries.push(Entry::Bind {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            writable: false,
        });
    }
    Ok(())
}

fn generated_etc(spec: &SandboxSpec) -> Vec<Entry> {
    let home = spec.workspace.as_ref().map_or_else(|| PathBuf::from("/tmp"), |w| w.target.clone());
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if spec.uid != 0 {
        passwd.push_str(&format!(
            "agent:x:{}:{}:agent:{}:/bin/sh\n",
            spec.uid,
            spec.gid,
            home.display()
        ));
    }
    if spec.gid != 0 {
        group.push_str(&format!("agent:x:{}:\n", spec.gid));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    let hostname = &spec.hostname;
    vec![
        Entry::File { target: "/etc/passwd".into(), contents: passwd },
        Entry::File { target: "/etc/group".into(), contents: group },
        Entry::File {
            target: "/etc/hosts".into(),
            contents: format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost\n"),
        },
        Entry::File { target: "/etc/hostname".into(), contents: format!("{hostname}\n") },
    ]
}

fn first_component(path: &Path) -> Option<String> {
    path.components().find_map(|c| match c {
        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    })
}

/// Where the scratch tmpfs goes before the first pivot (shadowed only in our namespace).
const SCRATCH: &str = "/tmp";
/// The host's root after the first pivot.
const OLD_ROOT: &str = "/oldroot";
/// The sandbox's root while it is built.
const NEW_ROOT: &str = "/newroot";

/// A failed mount step: which path, and the OS error.
#[derive(Debug)]
pub struct MountFailure {
    /// The path the step worked on.
    pub path: PathBuf,
    /// The OS error.
    pub source: std::io::Error,
}

fn at(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> MountFailure {
    let path = path.as_ref().to_path_buf();
    move |source| MountFailure { path, source }
}

fn errno_at(path: impl AsRef<Path>) -> impl FnOnce(nix::errno::Errno) -> MountFailure {
    let path = path.as_ref().to_path_buf();
    move |errno| MountFailure { path, source: errno.into() }
}

/// Makes every mount private, so nothing we do propagates to the host.
pub fn make_private() -> Result<(), MountFailure> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno_at("/"))
}

/// Mounts the scratch tmpfs, pivots into it (the host root moves to `/oldroot`) and
/// builds the new root at `/newroot` from `entries`, with a private `/tmp` of
/// `tmp_bytes`. The new root's own tmpfs is left writable until [`seal_root`].
pub fn build_root(entries: &[Entry], tmp_bytes: u64) -> Result<(), MountFailure> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount_tmpfs(SCRATCH, "mode=0755,size=1m", quiet)?;
    for dir in [NEW_ROOT, OLD_ROOT] {
        std::fs::create_dir(format!("{SCRATCH}{dir}")).map_err(at(dir))?;
    }
    mount_tmpfs(format!("{SCRATCH}{NEW_ROOT}"), "mode=0755,size=16m", quiet)?;
    nix::unistd::pivot_root(SCRATCH, &*format!("{SCRATCH}{OLD_ROOT}"))
        .map_err(errno_at(SCRATCH))?;
    nix::unistd::chdir("/").map_err(errno_at("/"))?;
    for entry in entries {
        apply_entry(entry)?;
    }
    let tmp = inside("/tmp");
    std::fs::create_dir_all(&tmp).map_err(at(&tmp))?;
    mount_tmpfs(&tmp, &format!("mode=1777,size={tmp_bytes}"), quiet)
}

fn apply_entry(entry: &Entry) -> Result<(), MountFailure> {
    match entry {
        Entry::Bind { source, target, writable } => {
            bind(&from_host(source), &inside(target), *writable)
        }
        Entry::Symlink { link, points_to } => {
            let link = inside(link);
            make_parent(&link)?;
            std::os::unix::fs::symlink(points_to, &link).map_err(at(&link))
        }
        Entry::File { target, contents } => {
            let target = inside(target);
            make_parent(&target)?;
            std::fs::write(&target, contents).map_err(at(&target))
        }
    }
}

/// Binds `source` at `target` (a mount point made to match: directory or empty file)
/// and remounts it (and, when read-only, every mount below it) with its final flags.
fn bind(source: &Path, target: &Path, writable: bool) -> Result<(), MountFailure> {
    let is_dir = std::fs::metadata(source).map_err(at(source))?.is_dir();
    make_parent(target)?;
    if is_dir {
        std::fs::create_dir_all(target).map_err(at(target))?;
    } else if !target.exists() {
        std::fs::write(target, b"").map_err(at(target))?;
    }
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(errno_at(target))?;
    let extra = if writable { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    remount(target, extra | MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    if !writable {
        for below in mounts_below(target).map_err(at(target))? {
            remount(&below, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
        }
    }
    Ok(())
}

/// Remounts the bind at `target` with `flags` plus the flags the kernel locked on it.
fn remount(target: &Path, flags: MsFlags) -> Result<(), MountFailure> {
    let locked = nix::sys::statvfs::statvfs(target).map_err(errno_at(target))?.flags();
    let mut keep = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if locked.contains(fs_flag) {
            keep |= ms_flag;
        }
    }
    let all = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | keep;
    nix::mount::mount(None::<&str>, target, None::<&str>, all, None::<&str>)
        .map_err(errno_at(target))
}

/// Mount points strictly below `target`, from `/proc/self/mountinfo`.
fn mounts_below(target: &Path) -> std::io::Result<Vec<PathBuf>> {
    // Our /proc is the host's, under the old root, until the new one is mounted.
    let info = std::fs::read_to_string(from_host(Path::new("/proc/self/mountinfo")))?;
    let prefix = format!("{}/", target.display());
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|point| point.starts_with(&prefix))
        .map(PathBuf::from)
        .collect())
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value =
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts a fresh `/proc` for this PID namespace. Must run while `/oldroot` (with the
/// host's fully visible `/proc`) is still attached: the kernel refuses a new procfs in a
/// user namespace that cannot already see one.
pub fn mount_proc() -> Result<(), MountFailure> {
    let proc = inside("/proc");
    std::fs::create_dir_all(&proc).map_err(at(&proc))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(Some("proc"), &proc, Some("proc"), flags, None::<&str>)
        .map_err(errno_at(&proc))
}

/// A minimal `/dev`: the host's six harmless nodes, a private devpts with `/dev/ptmx`,
/// `/dev/shm`, and the `fd`/`stdin`/`stdout`/`stderr` links.
pub fn mount_dev() -> Result<(), MountFailure> {
    let dev = inside("/dev");
    std::fs::create_dir_all(&dev).map_err(at(&dev))?;
    mount_tmpfs(&dev, "mode=0755,size=64k", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    for node in DEV_NODES {
        let target = dev.join(node);
        std::fs::write(&target, b"").map_err(at(&target))?;
        let source = from_host(&Path::new("/dev").join(node));
        nix::mount::mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(errno_at(&target))?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(at(&pts))?;
    nix::mount::mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(errno_at(&pts))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(at(&shm))?;
    mount_tmpfs(&shm, "mode=1777,size=64m", MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    for (link, points_to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(points_to, dev.join(link)).map_err(at(dev.join(link)))?;
    }
    Ok(())
}

/// Makes the new root's own tmpfs read-only, detaches the host root and pivots into the
/// new root, leaving the process in `/`.
pub fn seal_root() -> Result<(), MountFailure> {
    remount(Path::new(NEW_ROOT), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    nix::mount::umount2(OLD_ROOT, MntFlags::MNT_DETACH).map_err(errno_at(OLD_ROOT))?;
    nix::unistd::chdir(NEW_ROOT).map_err(errno_at(NEW_ROOT))?;
    // pivot_root(".", ".") stacks the scratch root on top of the new one; detaching "."
    // then removes it (runc's trick), so no path to the scratch tmpfs remains.
    nix::unistd::pivot_root(".", ".").map_err(errno_at(NEW_ROOT))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(errno_at("."))?;
    nix::unistd::chdir("/").map_err(errno_at("/"))
}

fn mount_tmpfs(
    target: impl AsRef<Path>,
    options: &str,
    flags: MsFlags,
) -> Result<(), MountFailure> {
    let target = target.as_ref();
    nix::mount::mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .map_err(errno_at(target))
}

fn make_parent(path: &Path) -> Result<(), MountFailure> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(at(parent)),
        None => Ok(()),
    }
}

/// `path` (absolute, inside the sandbox) under the new root being built.
fn inside(path: impl AsRef<Path>) -> PathBuf {
    rebase(NEW_ROOT, path.as_ref())
}

/// Host `path` as seen after the first pivot.
fn from_host(path: &Path) -> PathBuf {
    rebase(OLD_ROOT, path)
}

fn rebase(base: &str, path: &Path) -> PathBuf {
    let mut out = PathBuf::from(base);
    out.extend(path.components().filter(|c| matches!(c, Component::Normal(_))));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ReadOnlyBind, Workspace};

    #[test]
    fn host_root_has_system_dirs_curated_etc_and_no_secrets() {
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.workspace = Some(Workspace { source: "/work".into(), target: "/workspace".into() });
        spec.read_only.push(ReadOnlyBind {
            source: "/etc/hostname".into(),
            target: "/etc/bottle-ca.pem".into(),
        });
        let entries = plan(&spec).expect("plan");
        let targets: Vec<PathBuf> = entries
            .iter()
            .map(|e| match e {
                Entry::Bind { target, .. } | Entry::File { target, .. } => target.clone(),
                Entry::Symlink { link, .. } => link.clone(),
            })
            .collect();
        assert!(targets.contains(&PathBuf::from("/usr")));
        assert!(targets.contains(&PathBuf::from("/etc/passwd")));
        for absent in ["/home", "/run", "/var", "/root", "/etc/shadow", "/etc/sudoers", "/etc/ssh"]
        {
            assert!(!targets.contains(&PathBuf::from(absent)), "{absent} must not be in the root");
        }
        let writable: Vec<_> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Bind { target, writable: true, .. } => Some(target.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(writable, vec![PathBuf::from("/workspace")]);
        let generated_passwd = entries.iter().find_map(|e| match e {
            Entry::File { target, contents } if target == Path::new("/etc/passwd") => {
                Some(contents.clone())
            }
            _ => None,
        });
        assert!(generated_passwd.expect("passwd").starts_with("root:x:0:0:"));
    }

    #[test]
    fn host_symlinks_are_recreated_not_bound() {
        let entries = plan(&SandboxSpec::new(vec!["true".into()])).expect("plan");
        if std::fs::symlink_metadata("/bin").expect("/bin").file_type().is_symlink() {
            assert!(entries.contains(&Entry::Symlink {
                link: "/bin".into(),
                points_to: std::fs::read_link("/bin").unwrap()
            }));
        }
    }

    #[test]
    fn mountinfo_escapes_decode() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn rebase_ignores_dot_dot_and_root() {
        assert_eq!(rebase("/newroot", Path::new("/etc/../x")), PathBuf::from("/newroot/etc/x"));
    }
}
