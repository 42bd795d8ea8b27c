//! A child inherits exactly the descriptors its spec lists, each at its agreed number,
//! even when a source's number is another placement's target; nothing else leaks.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::Duration;

use bottle_proc::{ExitStatus, InheritFd, Reaper, SpawnSpec};

fn pipe_with(text: &str) -> OwnedFd {
    let (read, write) = std::io::pipe().unwrap();
    let mut write = write;
    write.write_all(text.as_bytes()).unwrap();
    drop(write);
    read.into()
}

#[tokio::test]
async fn listed_fds_arrive_at_their_numbers_and_nothing_else_does() {
    let reaper = Reaper::install(false).unwrap();
    let leak_probe = std::fs::File::open("/dev/null").unwrap();
    let a = pipe_with("from-a");
    let b = pipe_with("from-b");
    // `ls /proc/$$/fd` lists the shell's descriptors from another process (and with no
    // pipeline, whose pipe the shell would hold open meanwhile), so the listing adds none.
    let script = "cat <&3; echo; cat <&5; echo; ls /proc/$$/fd";
    let mut child = reaper
        .spawn(SpawnSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            capture_output: true,
            inherit: vec![InheritFd { fd: a, target: 3 }, InheritFd { fd: b, target: 5 }],
            ..SpawnSpec::default()
        })
        .unwrap();
    let mut out = String::new();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut file = std::fs::File::from(stdout);
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        text
    });
    let status = loop {
        reaper.reap();
        match tokio::time::timeout(Duration::from_millis(20), &mut child.exit).await {
            Ok(status) => break status.unwrap(),
            Err(_) => continue,
        }
    };
    out.push_str(&reader.join().unwrap());
    assert_eq!(status, ExitStatus::Exited(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from-a");
    assert_eq!(lines[1], "from-b");
    let mut fds: Vec<i32> =
        lines[2..].iter().flat_map(|l| l.split_whitespace()).map(|n| n.parse().unwrap()).collect();
    fds.sort_unstable();
    assert_eq!(fds, [0, 1, 2, 3, 5], "the /dev/null probe (and everything else) must not leak");
    drop(leak_probe);
}

#[tokio::test]
async fn a_target_below_three_is_refused_before_anything_runs() {
    let reaper = Reaper::install(false).unwrap();
    let err = reaper
        .spawn(SpawnSpec {
            argv: vec!["/bin/true".into()],
            inherit: vec![InheritFd { fd: pipe_with(""), target: 1 }],
            ..SpawnSpec::default()
        })
        .unwrap_err();
    let source = std::error::Error::source(&err).map(|s| s.to_string()).unwrap_or_default();
    assert!(source.contains("Invalid argument"), "{err}: {source}");
}
