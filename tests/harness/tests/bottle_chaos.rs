//! Chaos and concurrency through the built `bottle` binary: the egress daemon restarted
//! under a running agent, and eight bottles launched at once in one state root.

use std::collections::BTreeSet;
use std::time::Duration;

use bottle_tests::bottle_run::{
    Ending, Fixture, LAUNCH_WAIT, Launched, Observed, assert_torn_down, built_dir, namespaces_of,
    wait_for_path,
};

/// `bottle-init ctl ARGS` against a bottle's control socket.
fn ctl(fx: &Fixture, id: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let socket = fx.bottle_dir(id).join("control.sock");
    let mut command = bottle_tests::external::command(built_dir().join("bottle-init"));
    command.arg("ctl").arg("--socket").arg(&socket).args(args);
    let out = bottle_tests::external::output(&mut command);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_restarted_egress_daemon_serves_the_agents_next_request() {
    let fx = Fixture::with_api("chaos-egress");
    let file = fx.bottle("chaos", "");
    let script = r#"
ask before https://api.bottle.test/whoami
touch /workspace/first-done
wait_for restarted
n=0
while [ $n -lt 100 ]; do
  n=$((n+1))
  ask after https://api.bottle.test/whoami
  grep -q authorized /tmp/b 2>/dev/null && ! grep -q unauthorized /tmp/b && break
  sleep 0.1
done
echo "R attempts $n"
"#;
    let launched = fx.launch(&file, script);
    assert!(wait_for_path(&fx.workspace().join("first-done"), LAUNCH_WAIT), "no first request");
    let id = fx.ids().pop().expect("a bottle");
    let (code, stdout, stderr) = ctl(&fx, &id, &["restart", "egress"]);
    assert_eq!(code, Some(0), "ctl restart: {stdout} {stderr}");
    let (_, status, _) = ctl(&fx, &id, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    let egress = status["children"]
        .as_array()
        .and_then(|c| c.iter().find(|d| d["name"] == "egress"))
        .cloned()
        .expect("an egress daemon");
    assert_eq!(egress["restarts"], 1, "{status}");
    fx.signal_agent("restarted");
    let (finished, seen) = launched.wait(LAUNCH_WAIT);
    assert_eq!(finished.code, Some(0), "{finished:?}");
    let results = finished.results();
    assert_eq!(results["before"], "200 0 authorized", "{results:?}");
    assert_eq!(results["after"], "200 0 authorized", "after the restart: {results:?}");
    let attempts: u32 = results["attempts"].parse().unwrap();
    assert!(attempts <= 100, "{results:?}");
    let authorized = fx.api().requests_to("/whoami").iter().filter(|s| s.authorized).count();
    assert_eq!(authorized, 2, "{:?}", fx.api().seen());
    assert_torn_down(&fx, &seen, &[id], Ending::Exited(0));
}

#[test]
fn eight_bottles_launched_at_once_get_their_own_resources_and_all_clean_up() {
    const N: usize = 8;
    let fx = Fixture::with_api("chaos-eight");
    let file = fx.bottle("eight", "");
    let script = r#"
ask allowed https://api.bottle.test/whoami
echo "R host $(hostname)"
touch "/workspace/$(hostname).running"
wait_for go
"#;
    let launches: Vec<Launched> = (0..N).map(|_| fx.launch(&file, script)).collect();
    let all_running = bottle_tests::external::wait_until(Duration::from_secs(90), || {
        fx.records().iter().filter(|r| r["phase"] == "running").count() == N
            && fx.ids().iter().all(|id| fx.workspace().join(format!("{id}.running")).exists())
    });
    assert!(all_running, "not all {N} bottles ran: {:?}", fx.records());
    for launched in &launches {
        launched.watcher.sync();
    }
    let records = fx.records();
    let distinct = |field: &dyn Fn(&serde_json::Value) -> String| -> usize {
        records.iter().map(field).collect::<BTreeSet<_>>().len()
    };
    assert_eq!(distinct(&|r| r["id"].to_string()), N);
    assert_eq!(distinct(&|r| r["sidecar"]["pid"].to_string()), N);
    assert_eq!(distinct(&|r| r["agent"]["pid"].to_string()), N);
    let cas: BTreeSet<String> = fx
        .ids()
        .iter()
        .map(|id| std::fs::read_to_string(fx.bottle_dir(id).join("ca/ca.pem")).unwrap())
        .collect();
    assert_eq!(cas.len(), N, "bottles share a CA");
    let host_net = namespaces_of(std::process::id() as i32)
        .and_then(|ns| ns.into_iter().find(|(k, _)| k == "net"))
        .map(|(_, inode)| inode)
        .expect("our own network namespace");
    let mut namespaces = BTreeSet::new();
    for launched in &launches {
        let seen = launched.watcher.seen();
        let nets: BTreeSet<u64> = seen
            .namespaces
            .iter()
            .flat_map(|ns| ns.iter().filter(|(k, _)| k == "net").map(|(_, i)| *i))
            .filter(|inode| *inode != host_net)
            .collect();
        assert_eq!(nets.len(), 1, "one network namespace per bottle: {seen:?}");
        namespaces.extend(nets);
    }
    assert_eq!(namespaces.len(), N, "bottles share a network namespace");

    fx.signal_agent("go");
    let mut observed = Observed::default();
    for launched in launches {
        let (finished, seen) = launched.wait(LAUNCH_WAIT);
        assert_eq!(finished.code, Some(0), "{finished:?}");
        let results = finished.results();
        assert_eq!(results["allowed"], "200 0 authorized", "{results:?}");
        assert!(fx.ids().contains(&results["host"]), "{results:?}");
        observed.processes.extend(seen.processes);
        observed.namespaces.extend(seen.namespaces);
    }
    let authorized = fx.api().requests_to("/whoami").iter().filter(|s| s.authorized).count();
    assert_eq!(authorized, N);
    assert_torn_down(&fx, &observed, &fx.ids(), Ending::Exited(0));
}
