//! Exceptions through the approval queue: an inline `gitleaks:allow` or a
//! `-o bottle.bypass=<why>` push waits for the operator; approve lets exactly that push
//! through, reject or timeout refuses it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_pipelock::approvals::{Decision, Held, Journal};
use common::{Fixture, commit, fake_github_token, run_raw, wait_for};

async fn fixture(timeout: u64) -> (Fixture, PathBuf) {
    let mut dir = PathBuf::new();
    let fx = Fixture::start(|s, _| {
        dir = s.root.parent().unwrap().join("approvals");
        s.approvals = Some(dir.clone());
        s.hold_timeout_seconds = timeout;
        s.bottle = "test-bottle".into();
    })
    .await;
    (fx, dir)
}

async fn pending(dir: &Path) -> Held {
    let journal = Journal::open(dir).unwrap();
    wait_for(Duration::from_secs(30), || {
        journal.list().unwrap().into_iter().find(|h| h.decision.is_none())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_suppression_lets_that_push_through() {
    let (fx, dir) = fixture(120).await;
    let work = fx.clone_repo("demo", "agent").await;
    let token = fake_github_token();
    let new = commit(
        &fx.git,
        &work,
        &[("fixture.txt", &format!("key = {token} # gitleaks:allow\n"))],
        "fixture",
    )
    .await;
    let push = tokio::spawn({
        let (git, work) = (fx.git.clone(), work.clone());
        async move { run_raw(&git, &work, &["push", "origin", "main"]).await }
    });
    let held = pending(&dir).await;
    assert_eq!(held.request.bottle, "test-bottle");
    assert_eq!(held.request.method, "GIT-PUSH");
    assert_eq!(held.request.host, "git-gate/demo");
    assert!(
        held.request.path.contains("refs/heads/main (marked gitleaks:allow)"),
        "{}",
        held.request.path
    );
    assert!(held.request.path.contains("path fixture.txt:1"), "{}", held.request.path);
    assert_eq!(held.request.detections[0].rule, "github-pat-classic");
    let journal_text = std::fs::read_to_string(Journal::open(&dir).unwrap().path()).unwrap();
    assert!(!journal_text.contains(&token[4..]), "the journal holds the secret");
    // Upstream is untouched while the push waits.
    assert_ne!(fx.upstream.rev("demo", "refs/heads/main").await.as_deref(), Some(new.as_str()));
    Journal::open(&dir)
        .unwrap()
        .decide(&held.id, Decision::Approve, Some("test fixture".into()), "op")
        .unwrap();
    let out = push.await.unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("remote: bottle: push held: it contains secrets and asks for an exception"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("remote: bottle: exception {} approved", held.id)),
        "{}",
        out.stderr
    );
    assert_eq!(fx.upstream.rev("demo", "refs/heads/main").await.as_deref(), Some(new.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_bypass_request_refuses_the_push_with_the_reason() {
    let (fx, dir) = fixture(120).await;
    let work = fx.clone_repo("demo", "agent").await;
    let before = fx.upstream.rev("demo", "refs/heads/main").await;
    commit(&fx.git, &work, &[("env", &format!("TOKEN={}\n", fake_github_token()))], "env").await;
    let push = tokio::spawn({
        let (git, work) = (fx.git.clone(), work.clone());
        async move {
            run_raw(
                &git,
                &work,
                &["push", "-o", "bottle.bypass=it is a test key", "origin", "main"],
            )
            .await
        }
    });
    let held = pending(&dir).await;
    assert!(
        held.request.path.contains("(bypass requested: it is a test key)"),
        "{}",
        held.request.path
    );
    Journal::open(&dir)
        .unwrap()
        .decide(&held.id, Decision::Reject, Some("real key, rotate it".into()), "op")
        .unwrap();
    let out = push.await.unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&format!("remote: bottle: push rejected: exception {} refused: rejected by the operator: real key, rotate it", held.id)),
        "{}",
        out.stderr
    );
    assert_eq!(fx.upstream.rev("demo", "refs/heads/main").await, before);
    assert_eq!(fx.mirror_rev("demo", "refs/heads/main").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_exception_times_out_and_refuses() {
    let (fx, _dir) = fixture(2).await;
    let work = fx.clone_repo("demo", "agent").await;
    commit(&fx.git, &work, &[("f.txt", &format!("{} gitleaks:allow\n", fake_github_token()))], "f")
        .await;
    let out = run_raw(&fx.git, &work, &["push", "origin", "main"]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("refused: no decision before the hold timed out"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_queue_an_exception_is_refused_and_unknown_options_too() {
    let fx = Fixture::start(|_, _| {}).await;
    let work = fx.clone_repo("demo", "agent").await;
    commit(&fx.git, &work, &[("f.txt", &format!("{} gitleaks:allow\n", fake_github_token()))], "f")
        .await;
    let out = run_raw(&fx.git, &work, &["push", "origin", "main"]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("an exception needs the approval queue, and this bottle has none"),
        "{}",
        out.stderr
    );
    let out = run_raw(&fx.git, &work, &["push", "-o", "ci.skip", "origin", "main"]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("unknown push option \"ci.skip\""), "{}", out.stderr);
}
