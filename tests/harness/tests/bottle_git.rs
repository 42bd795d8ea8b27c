//! `bottle run` with a declared repository, end to end on the local backend: the agent's
//! git clones and pushes by the upstream's own URL, and reaches it only through the git
//! gate (via egress): a clean push lands upstream, a push with a secret is rejected with
//! the gate's message and upstream does not move. The upstream is the git gate's own
//! test server (`git http-backend` behind HTTPS with a test CA, requiring a token only
//! the sidecar holds).

#[path = "../../../actors/git-gate/tests/common/mod.rs"]
mod common;

use std::os::fd::OwnedFd;
use std::time::Duration;

use bottle_proc::{ExitStatus, SpawnSpec};
use tokio::io::AsyncReadExt;

/// The host variable the bottle file names as the repository's `token_ref`.
const TOKEN_VAR: &str = "BOTTLE_TEST_UPSTREAM_TOKEN";

async fn read_all(fd: Option<OwnedFd>) -> String {
    let Some(fd) = fd else { return String::new() };
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).expect("pipe");
    let mut out = Vec::new();
    let _ = pipe.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `bottle run <file> -- sh -c <script>` through this process's one reaper.
async fn bottle_run(
    state: &std::path::Path,
    file: &std::path::Path,
    ca: &std::path::Path,
    script: &str,
) -> (ExitStatus, String, String) {
    let bottle = bottle_tests::sibling_binary("bottle");
    let libexec = std::path::Path::new(&bottle).parent().unwrap().to_path_buf();
    let reaper = bottle_runtime::process_reaper().unwrap();
    let env = [
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME", state.display().to_string()),
        ("XDG_STATE_HOME", state.display().to_string()),
        ("BOTTLE_LIBEXEC", libexec.display().to_string()),
        ("BOTTLE_UPSTREAM_CA", ca.display().to_string()),
        (TOKEN_VAR, common::UPSTREAM_TOKEN.to_string()),
    ];
    let spec = SpawnSpec {
        argv: vec![
            bottle,
            "run".into(),
            file.into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script.into(),
        ],
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        capture_output: true,
        ..SpawnSpec::default()
    };
    let mut child = reaper.spawn(spec).expect("spawn bottle");
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (status, out, err) = tokio::time::timeout(Duration::from_secs(240), async {
        tokio::join!(child.exit, read_all(stdout), read_all(stderr))
    })
    .await
    .expect("bottle run finished within 240 s");
    (status.expect("the reaper reports the exit"), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_git_goes_through_the_gate_clean_pushes_land_and_secrets_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let git = common::git(&tmp.path().join("home"));
    let upstream = common::Upstream::start(tmp.path().join("upstream"), git.clone()).await;
    let bare = upstream.create("demo").await;
    // Seed upstream directly on disk (not through the gate).
    let seed = tmp.path().join("seed");
    common::run(&git, tmp.path(), &["clone", "-q", bare.to_str().unwrap(), "seed"]).await;
    let first = common::commit(&git, &seed, &[("README", "hello\n")], "first").await;
    common::run(&git, &seed, &["push", "-q", "origin", "HEAD:main"]).await;

    let file = tmp.path().join("gitbottle.md");
    std::fs::write(
        &file,
        format!(
            "---\ngit-gate:\n  user:\n    name: Agent Smith\n    email: agent@bottle.test\n  repos:\n    demo:\n      url: {}\n      token_ref: {TOKEN_VAR}\n---\nA bottle with one repository.\n",
            upstream.url("demo")
        ),
    )
    .unwrap();
    let secret = common::fake_github_token();
    let script = format!(
        r#"set -e
git clone -q {url} /tmp/r
cd /tmp/r
test "$(git log -1 --format=%H)" = {first}
echo clean > clean.txt && git add clean.txt && git commit -qm clean
git push -q origin HEAD:main
echo "CLEAN $(git rev-parse HEAD) $(git log -1 --format='%an <%ae>')"
echo "my github pat {secret}" > notes.txt && git add notes.txt && git commit -qm leak
if git push origin HEAD:main 2>/tmp/push.err; then echo LEAK-PUSHED; exit 3; fi
cat /tmp/push.err >&2
git config --get-regexp '^url\.' || true
env | grep -c {token} || true
"#,
        url = upstream.url("demo"),
        token = common::UPSTREAM_TOKEN,
    );
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let (status, out, err) = bottle_run(&state, &file, &upstream.ca_file, &script).await;
    assert_eq!(status, ExitStatus::Exited(0), "stdout:\n{out}\nstderr:\n{err}");

    let clean = out
        .lines()
        .find_map(|l| l.strip_prefix("CLEAN "))
        .unwrap_or_else(|| panic!("no clean push: {out}\n{err}"));
    let (clean_id, author) = clean.split_once(' ').unwrap();
    assert_eq!(author, "Agent Smith <agent@bottle.test>", "user.name/email from the manifest");
    assert_eq!(upstream.rev("demo", "refs/heads/main").await.as_deref(), Some(clean_id));
    assert!(err.contains("bottle: push rejected: secret detected"), "{err}");
    assert!(err.contains("github-pat-classic"), "the rule is named: {err}");
    assert!(!err.contains(&secret) && !out.contains(&secret), "the secret is masked");
    assert!(out.contains("url.http://git.bottle.internal/demo.git.insteadof"), "{out}");
    assert_eq!(out.lines().last(), Some("0"), "the agent's environment has no token: {out}");
    // Every request upstream carried the token the gate injects; the agent never had it.
    let seen = upstream.seen.lock().unwrap();
    assert!(seen.requests > 0);
    assert!(
        seen.authorizations
            .iter()
            .all(|a| a.as_deref() == Some(common::expected_authorization().as_str()))
    );
}
