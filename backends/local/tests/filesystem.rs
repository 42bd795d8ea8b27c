//! Filesystem confinement: a read-only root of system dirs, the workspace writable,
//! private /tmp, and nothing of the host's home, /run or sockets.
mod common;

use bottle_proc::ExitStatus;

#[tokio::test]
async fn host_sockets_home_and_run_are_absent() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("absent");
    // A temp dir standing in for /run, with a live path socket in it.
    let run_dir = common::TempDir::new("fake-run");
    let socket_path = run_dir.0.join("daemon.sock");
    let _server = std::os::unix::net::UnixListener::bind(&socket_path).expect("path socket");
    let paths = [
        socket_path.display().to_string(),
        run_dir.0.display().to_string(),
        "/home".into(),
        "/root".into(),
        "/run".into(),
        "/var/run/docker.sock".into(),
        "/var".into(),
        "/etc/shadow".into(),
        "/sys".into(),
    ];
    let script = format!(
        "for p in {}; do if [ -e \"$p\" ]; then echo \"present $p\"; fi; done; echo done",
        paths.join(" ")
    );
    let finished = common::run(&reaper, &common::shell(&script, &workspace)).await;
    assert_eq!(finished.stdout, "done\n", "{finished:?}");
    // Control: the socket exists on the host, so the check above can fail.
    assert!(socket_path.exists());
}

#[tokio::test]
async fn workspace_is_writable_root_is_read_only_and_tmp_is_private() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("rw");
    let host_marker =
        std::env::temp_dir().join(format!("bottle-local-host-marker-{}", std::process::id()));
    std::fs::write(&host_marker, b"host").expect("marker");
    let script = format!(
        r#"
import errno, os
def attempt(path):
    try:
        with open(path, 'w') as f:
            f.write('x')
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
print('workspace', attempt('/workspace/written-inside'))
print('root', attempt('/new-file'))
print('usr', attempt('/usr/new-file'))
print('etc', attempt('/etc/passwd'))
print('tmp', attempt('/tmp/inside'))
print('host-tmp-visible', os.path.exists('{marker}'))
"#,
        marker = host_marker.display()
    );
    let finished = common::run(&reaper, &common::python(&script, &workspace)).await;
    let _ = std::fs::remove_file(&host_marker);
    assert_eq!(finished.status, ExitStatus::Exited(0), "{finished:?}");
    assert_eq!(
        finished.stdout,
        "workspace ok\nroot EROFS\nusr EROFS\netc EROFS\ntmp ok\nhost-tmp-visible False\n",
        "{finished:?}"
    );
    assert_eq!(std::fs::read(workspace.0.join("written-inside")).expect("written"), b"x");
    assert!(!std::env::temp_dir().join("inside").exists(), "the sandbox's /tmp leaked to the host");
}

#[tokio::test]
async fn dev_is_minimal_with_its_own_devpts() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("dev");
    let script = "import os\nprint(sorted(os.listdir('/dev')))\nfd = os.open('/dev/ptmx', os.O_RDWR | os.O_NOCTTY)\nprint(sorted(os.listdir('/dev/pts')))\nos.write(os.open('/dev/null', os.O_WRONLY), b'x')\n";
    let finished = common::run(&reaper, &common::python(script, &workspace)).await;
    assert_eq!(finished.status, ExitStatus::Exited(0), "{finished:?}");
    let mut lines = finished.stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "['fd', 'full', 'null', 'ptmx', 'pts', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'tty', 'urandom', 'zero']"
        )
    );
    // A fresh devpts: the pty just opened is number 0, and the host's ptys are not there.
    assert_eq!(lines.next(), Some("['0', 'ptmx']"), "{finished:?}");
}
