//! A real git client cloning, fetching and pushing through the gate to a local HTTPS
//! upstream (`git http-backend` requiring a token only the gate holds).

mod common;

use common::{Fixture, commit, fake_github_token, run, run_raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_fetch_and_a_clean_push_land_upstream_with_the_injected_token() {
    let fx = Fixture::start(|_, _| {}).await;
    // Protocol v2 (git's default) for the clone.
    let work = fx.clone_repo("demo", "agent").await;
    assert_eq!(std::fs::read_to_string(work.join("README.md")).unwrap(), "# demo\n");
    // The agent's clone holds no credential of any kind.
    let config = std::fs::read_to_string(work.join(".git/config")).unwrap();
    assert!(!config.contains(common::UPSTREAM_TOKEN), "{config}");

    let new = commit(&fx.git, &work, &[("src/lib.rs", "pub fn hello() {}\n")], "add lib").await;
    let out = run_raw(&fx.git, &work, &["push", "origin", "main"]).await;
    assert!(out.status.success(), "push failed: {}", out.stderr);
    assert!(
        out.stderr.contains("remote: bottle: scanned 1 new blob(s), 18 bytes: no secrets"),
        "{}",
        out.stderr
    );
    assert_eq!(fx.upstream.rev("demo", "refs/heads/main").await.as_deref(), Some(new.as_str()));
    assert_eq!(fx.mirror_rev("demo", "refs/heads/main").await.as_deref(), Some(new.as_str()));

    // Every upstream request carried the gate's token.
    let seen = fx.upstream.seen.lock().unwrap().authorizations.clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|a| a.as_deref() == Some(common::expected_authorization().as_str())),
        "{seen:?}"
    );

    // Someone else pushes upstream directly; a protocol v0 fetch through the gate sees it.
    let other = fx.tmp.path().join("other");
    run(
        &fx.git,
        fx.tmp.path(),
        &[
            "clone",
            "-q",
            fx.upstream.root.join("demo.git").to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    )
    .await;
    let theirs = commit(&fx.git, &other, &[("NEWS", "upstream moved\n")], "upstream change").await;
    run(&fx.git, &other, &["push", "-q", "origin", "main"]).await;
    run(&fx.git, &work, &["-c", "protocol.version=0", "fetch", "-q", "origin"]).await;
    assert_eq!(run(&fx.git, &work, &["rev-parse", "origin/main"]).await, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_a_secret_is_rejected_with_the_message_and_nothing_moves() {
    let fx = Fixture::start(|_, _| {}).await;
    let work = fx.clone_repo("demo", "agent").await;
    let before = fx.upstream.rev("demo", "refs/heads/main").await;
    let token = fake_github_token();
    let bad = commit(
        &fx.git,
        &work,
        &[("config/settings.py", &format!("DEBUG = True\nGH = \"{token}\"\n"))],
        "settings",
    )
    .await;
    let out = run_raw(&fx.git, &work, &["push", "origin", "main"]).await;
    assert!(!out.status.success(), "the push went through: {}", out.stderr);
    let err = &out.stderr;
    assert!(err.contains("remote: bottle: push rejected: secret detected"), "{err}");
    assert!(err.contains(&format!("commit {} path config/settings.py:2", &bad[..12])), "{err}");
    assert!(err.contains("remote:     ghp_"), "{err}");
    assert!(err.contains("gitleaks:allow"), "{err}");
    assert!(err.contains("[remote rejected] main -> main (secret detected)"), "{err}");
    assert!(!err.contains(&token[4..]), "the secret was echoed: {err}");
    assert_eq!(fx.upstream.rev("demo", "refs/heads/main").await, before);
    assert_eq!(fx.mirror_rev("demo", "refs/heads/main").await, before);
    // Nothing of the push is left in the mirror.
    assert_eq!(fx.mirror_rev("demo", &format!("{bad}^{{commit}}")).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_branch_whose_old_history_holds_a_secret_is_accepted() {
    let fx = Fixture::start(|_, _| {}).await;
    // History already upstream (pushed directly, before the gate) holds a secret.
    let seed = fx.tmp.path().join("seed");
    let token = fake_github_token();
    commit(&fx.git, &seed, &[("old.env", &format!("TOKEN={token}\n"))], "old leak").await;
    run(
        &fx.git,
        &seed,
        &["push", "-q", fx.upstream.root.join("demo.git").to_str().unwrap(), "main"],
    )
    .await;

    let work = fx.clone_repo("demo", "agent").await;
    run(&fx.git, &work, &["checkout", "-q", "-b", "feature"]).await;
    let new = commit(&fx.git, &work, &[("feature.txt", "clean work\n")], "feature").await;
    let out = run_raw(&fx.git, &work, &["push", "origin", "feature"]).await;
    assert!(out.status.success(), "push failed: {}", out.stderr);
    assert!(out.stderr.contains("scanned 1 new blob(s)"), "{}", out.stderr);
    assert_eq!(fx.upstream.rev("demo", "refs/heads/feature").await.as_deref(), Some(new.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_only_in_a_blob_a_later_commit_deletes_is_still_caught() {
    let fx = Fixture::start(|_, _| {}).await;
    let work = fx.clone_repo("demo", "agent").await;
    let token = fake_github_token();
    let leak = commit(&fx.git, &work, &[("keys.txt", &format!("{token}\n"))], "oops").await;
    run(&fx.git, &work, &["rm", "-q", "keys.txt"]).await;
    run(&fx.git, &work, &["commit", "-q", "-m", "remove the key"]).await;
    assert!(!work.join("keys.txt").exists());
    let out = run_raw(&fx.git, &work, &["push", "origin", "main"]).await;
    assert!(!out.status.success(), "the push went through: {}", out.stderr);
    assert!(
        out.stderr.contains("remote: bottle: push rejected: secret detected"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("commit {} path keys.txt:1", &leak[..12])),
        "{}",
        out.stderr
    );
    assert_ne!(fx.upstream.rev("demo", "refs/heads/main").await.as_deref(), Some(leak.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bottles_own_token_is_caught_in_base64() {
    let fx = Fixture::start(|_, _| {}).await;
    let work = fx.clone_repo("demo", "agent").await;
    let encoded = bottle_pipelock::base64_encode(common::UPSTREAM_TOKEN.as_bytes(), false);
    commit(&fx.git, &work, &[("data.txt", &format!("blob: {encoded}\n"))], "data").await;
    let out = run_raw(&fx.git, &work, &["push", "origin", "main"]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("known-secret:DEMO_TOKEN: commit"), "{}", out.stderr);
    assert!(out.stderr.contains("path data.txt:1"), "{}", out.stderr);
}
