//! bottle-init as PID 1 of a real Docker container. The image is built here from our own
//! binaries and their shared libraries (`docker import`, no pull), cached by content.
//! Checks: `docker stop` finishes gracefully well before Docker's 10 s kill, signals
//! from `docker kill --signal`, the exit code `docker wait` sees, restarts after
//! `kill -9`, and no zombie pile-up.
#![allow(clippy::disallowed_methods)] // drives the docker CLI; no reaper in this process

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bottle_tests::external::{
    TempDir, bottle_init, children_matching, command, output, wait_until,
};
use bottle_tests::testchild_path;

fn docker(args: &[&str]) -> (bool, String, String) {
    let mut cmd = command("docker");
    cmd.args(args);
    let out = output(&mut cmd);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shared_libs(binary: &Path) -> Vec<PathBuf> {
    let out = output(command("ldd").arg(binary));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect()
}

/// Builds (or reuses) an image holding /bottle-init and /testchild.
fn image() -> String {
    let binaries = [(bottle_init(), "bottle-init"), (PathBuf::from(testchild_path()), "testchild")];
    let mut hasher = DefaultHasher::new();
    for (path, _) in &binaries {
        std::fs::read(path).unwrap().hash(&mut hasher);
    }
    let tag = format!("bottle-init-test:{:016x}", hasher.finish());
    if docker(&["image", "inspect", &tag]).0 {
        return tag;
    }
    let root = TempDir::new("rootfs");
    for dir in ["tmp", "run", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for (path, name) in &binaries {
        std::fs::copy(path, root.join(name)).unwrap();
        for lib in shared_libs(path) {
            let dest = root.0.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &dest).unwrap();
        }
    }
    // A name of our own: tests run in parallel processes and each may build the image.
    let tar = std::env::temp_dir().join(format!("bottle-rootfs-{}.tar", std::process::id()));
    let out = output(command("tar").arg("-C").arg(&root.0).arg("-cf").arg(&tar).arg("."));
    assert!(out.status.success(), "tar failed");
    let (ok, _, err) = docker(&["import", tar.to_str().unwrap(), &tag]);
    let _ = std::fs::remove_file(&tar);
    assert!(ok, "docker import failed: {err}");
    tag
}

struct Container {
    name: String,
    dir: TempDir,
}

impl Container {
    fn run(config: &str) -> Container {
        let image = image();
        let dir = TempDir::new("docker");
        std::fs::write(dir.join("init.toml"), config).unwrap();
        let name = format!(
            "bottle-init-test-{}-{}",
            std::process::id(),
            dir.0.file_name().unwrap().to_string_lossy()
        );
        let (ok, _, err) = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "none",
            "-v",
            &format!("{}:/cfg", dir.0.display()),
            &image,
            "/bottle-init",
            "--config",
            "/cfg/init.toml",
        ]);
        assert!(ok, "docker run failed: {err}");
        Container { name, dir }
    }

    fn logs(&self) -> String {
        let (_, out, err) = docker(&["logs", &self.name]);
        format!("{out}\n{err}")
    }

    fn wait_log(&self, needle: &str, count: usize) -> bool {
        wait_until(Duration::from_secs(10), || self.logs().matches(needle).count() >= count)
    }

    fn host_pid(&self) -> i32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &self.name]).1.parse().unwrap()
    }

    fn kill(&self, signal: &str) {
        let (ok, _, err) = docker(&["kill", "--signal", signal, &self.name]);
        assert!(ok, "docker kill {signal}: {err}");
    }

    fn exit_code(&self) -> i32 {
        let (ok, out, err) = docker(&["wait", &self.name]);
        assert!(ok, "{err}");
        out.parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

const DAEMONS: &str = r#"
grace_seconds = 8
exit_report = "/cfg/report.json"
usr1_restarts = ["b"]
[[daemon]]
name = "a"
command = ["/testchild", "sleep", "600"]
[[daemon]]
name = "b"
command = ["/testchild", "sleep", "601"]
backoff = { initial = 0.01 }
[[daemon]]
name = "stubborn"
command = ["/testchild", "ignore-term", "600"]
stop_timeout = 2
"#;

#[test]
fn docker_stop_is_graceful_and_well_inside_dockers_ten_seconds() {
    let c = Container::run(DAEMONS);
    assert!(c.wait_log("Started.", 3), "{}", c.logs());
    let init = c.host_pid();
    assert!(wait_until(Duration::from_secs(5), || children_matching(init, "ignore-term")
        .first()
        .is_some_and(|&p| bottle_tests::has_handler(p, libc::SIGTERM))));
    let t0 = Instant::now();
    let (ok, _, err) = docker(&["stop", &c.name]);
    let took = t0.elapsed();
    assert!(ok, "{err}");
    // The stubborn daemon needs its 2 s stop timeout; Docker would SIGKILL at 10 s.
    assert!(took < Duration::from_secs(6), "docker stop took {took:?}\n{}", c.logs());
    assert_eq!(c.exit_code(), 0, "{}", c.logs());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["shutdown_reason"], "SIGTERM");
}

#[test]
fn docker_kill_signals_become_reload_restart_and_shutdown() {
    let c = Container::run(DAEMONS);
    assert!(c.wait_log("Started.", 3), "{}", c.logs());
    c.kill("HUP");
    assert!(c.wait_log("Configuration reloaded", 1), "{}", c.logs());
    c.kill("USR1");
    assert!(c.wait_log("Restarted (SIGUSR1)", 1), "{}", c.logs());
    for signal in ["USR2", "QUIT", "ALRM", "WINCH", "TSTP", "PIPE"] {
        c.kill(signal);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &c.name]).1, "true", "{}", c.logs());
    c.kill("TERM");
    assert_eq!(c.exit_code(), 0, "{}", c.logs());
}

#[test]
fn docker_wait_sees_the_significant_daemons_code() {
    let c = Container::run(
        "[[daemon]]\nname = \"job\"\ncommand = [\"/testchild\", \"exit\", \"42\"]\nrestart = \"temporary\"\nsignificant = true\n[[daemon]]\nname = \"side\"\ncommand = [\"/testchild\", \"sleep\", \"600\"]\n",
    );
    assert_eq!(c.exit_code(), 42, "{}", c.logs());
}

#[test]
fn a_bad_config_in_a_container_exits_196_and_names_the_key() {
    let c = Container::run(
        "[[daemon]]\nname = \"a\"\ncommand = [\"/testchild\", \"sleep\", \"600\"]\nintensity = 1\n",
    );
    assert_eq!(c.exit_code(), 196, "{}", c.logs());
    assert!(c.logs().contains("unknown key `daemon[0].intensity`"), "{}", c.logs());
}

#[test]
fn a_daemon_killed_with_sigkill_is_restarted_and_no_zombies_pile_up() {
    let c = Container::run(
        "intensity = { max_restarts = 1000, period_seconds = 1 }\n[[daemon]]\nname = \"a\"\ncommand = [\"/testchild\", \"sleep\", \"600\"]\nbackoff = { initial = 0.01 }\n[[daemon]]\nname = \"forker\"\ncommand = [\"/testchild\", \"orphans\", \"4\", \"0\"]\nbackoff = { initial = 0.05, factor = 1.0, cap = 0.05 }\n",
    );
    assert!(c.wait_log("Started.", 2), "{}", c.logs());
    let init = c.host_pid();
    let first = children_matching(init, "sleep 600")[0];
    bottle_tests::external::signal(first, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(5), || children_matching(init, "sleep 600")
            .iter()
            .any(|&p| p != first)),
        "{}",
        c.logs()
    );
    // The forker leaves 4 orphans per run, about 20 runs a second.
    std::thread::sleep(Duration::from_secs(1));
    let mut worst = 0;
    for _ in 0..40 {
        worst = worst.max(bottle_runtime::proc::fd::zombies_of(init).len());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(worst <= 5, "zombies piled up: {worst}");
}
