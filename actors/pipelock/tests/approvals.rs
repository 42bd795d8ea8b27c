//! The approval queue: journal semantics, the store actor, the waiting client, and a
//! restart of the store in the middle of a hold.

use std::path::PathBuf;
use std::time::Duration;

use bottle_pipelock::approvals::{
    ApprovalClient, ApprovalError, ApprovalStore, Decision, HoldRequest, JOURNAL, Journal, Outcome,
    approved_fingerprints,
};
use bottle_pipelock::{Detection, Location};
use ractor::Actor;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bottle-approvals-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn request() -> HoldRequest {
    request_with("00112233aabbccdd")
}

fn request_with(fingerprint: &str) -> HoldRequest {
    HoldRequest {
        bottle: "test".into(),
        method: "POST".into(),
        host: "api.example.com".into(),
        path: "/upload".into(),
        detections: vec![Detection {
            rule: "github-pat-classic".into(),
            location: Location::Body,
            encoding: "raw".into(),
            span: Some((10, 50)),
            excerpt: "ghp_************".into(),
            fingerprint: fingerprint.into(),
        }],
    }
}

#[test]
fn first_decision_wins_and_rejection_needs_a_reason() {
    let d = dir("first");
    let journal = Journal::open(&d).unwrap();
    let held = journal.hold(request(), Duration::from_secs(300)).unwrap();
    assert!(matches!(
        journal.decide(&held.id, Decision::Reject, None, "op"),
        Err(ApprovalError::ReasonRequired)
    ));
    journal.decide(&held.id, Decision::Approve, None, "op").unwrap();
    let again = journal.decide(&held.id, Decision::Reject, Some("no".into()), "op2");
    assert!(matches!(again, Err(ApprovalError::AlreadyDecided { .. })), "{again:?}");
    assert!(matches!(
        journal.decide("ffffff", Decision::Approve, None, "op"),
        Err(ApprovalError::Unknown(_))
    ));
    let list = journal.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].decision, Some((Decision::Approve, None)));
    assert_eq!(approved_fingerprints(&list), vec!["00112233aabbccdd".to_string()]);
}

#[test]
fn concurrent_deciders_cannot_both_win() {
    let d = dir("race");
    let journal = Journal::open(&d).unwrap();
    for _ in 0..20 {
        let held = journal.hold(request(), Duration::from_secs(300)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (j, id) = (Journal::open(&d).unwrap(), held.id.clone());
                std::thread::spawn(move || {
                    let decision = if i % 2 == 0 { Decision::Approve } else { Decision::Reject };
                    j.decide(&id, decision, Some(format!("by {i}")), "op").is_ok()
                })
            })
            .collect();
        let wins = threads.into_iter().map(|t| t.join().unwrap()).filter(|w| *w).count();
        assert_eq!(wins, 1);
    }
}

#[test]
fn a_torn_last_line_and_garbage_are_skipped_and_nothing_else_is_lost() {
    let d = dir("torn");
    let journal = Journal::open(&d).unwrap();
    let a = journal.hold(request(), Duration::from_secs(300)).unwrap();
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(d.join(JOURNAL)).unwrap();
    f.write_all(b"garbage that is not json\n{\"op\":\"hold\",\"id\":\"tor").unwrap();
    drop(f);
    let list = journal.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, a.id);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(JOURNAL)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

async fn store(
    name: &str,
    d: &std::path::Path,
) -> ractor::ActorRef<bottle_pipelock::approvals::ApprovalMsg> {
    let (actor, _) =
        Actor::spawn(Some(name.to_string()), ApprovalStore, d.to_path_buf().into()).await.unwrap();
    actor
}

/// Waits until the journal has a pending hold; returns its id.
async fn pending_id(journal: &Journal) -> String {
    for _ in 0..200 {
        if let Some(h) = journal.list().unwrap().into_iter().find(|h| h.decision.is_none()) {
            return h.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no hold was journaled");
}

#[tokio::test]
async fn approve_releases_and_reject_refuses_with_the_reason() {
    let d = dir("client");
    let name = format!("approvals-client-{}", std::process::id());
    let actor = store(&name, &d).await;
    let client = ApprovalClient { store: name.clone(), timeout: Duration::from_secs(20) };
    let journal = Journal::open(&d).unwrap();

    let c = client.clone();
    let waiting = tokio::spawn(async move { c.hold(request()).await });
    let id = pending_id(&journal).await;
    journal.decide(&id, Decision::Approve, None, "operator").unwrap();
    assert_eq!(waiting.await.unwrap(), Outcome::Approved { id });

    // The same fingerprint again is already approved: no new hold.
    assert_eq!(client.hold(request()).await, Outcome::Approved { id: "safelisted".into() });
    let c = client.clone();
    let waiting = tokio::spawn(async move { c.hold(request_with("ffeeddccbbaa9988")).await });
    let id = pending_id(&journal).await;
    journal.decide(&id, Decision::Reject, Some("not this one".into()), "operator").unwrap();
    match waiting.await.unwrap() {
        Outcome::Refused { id: Some(got), why } => {
            assert_eq!(got, id);
            assert!(why.contains("not this one"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    actor.stop(None);
}

#[tokio::test]
async fn a_hold_nobody_answers_expires_and_is_journaled_as_expired() {
    let d = dir("expire");
    let name = format!("approvals-expire-{}", std::process::id());
    let actor = store(&name, &d).await;
    let client = ApprovalClient { store: name, timeout: Duration::from_millis(600) };
    match client.hold(request()).await {
        Outcome::Refused { id: Some(_), why } => assert!(why.contains("timed out"), "{why}"),
        other => panic!("{other:?}"),
    }
    let journal = Journal::open(&d).unwrap();
    for _ in 0..100 {
        if journal.list().unwrap()[0].decision.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(journal.list().unwrap()[0].decision, Some((Decision::Expire, None)));
    actor.stop(None);
}

#[tokio::test]
async fn no_store_refuses_at_once() {
    let client =
        ApprovalClient { store: "approvals-nobody-here".into(), timeout: Duration::from_secs(30) };
    let started = std::time::Instant::now();
    assert!(matches!(client.hold(request()).await, Outcome::Refused { id: None, .. }));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_store_restart_during_a_hold_loses_nothing() {
    let d = dir("restart");
    let name = format!("approvals-restart-{}", std::process::id());
    let actor = store(&name, &d).await;
    let client = ApprovalClient { store: name.clone(), timeout: Duration::from_secs(20) };
    let journal = Journal::open(&d).unwrap();
    let c = client.clone();
    let waiting = tokio::spawn(async move { c.hold(request()).await });
    let id = pending_id(&journal).await;
    // The store dies (a crash, not a stop) with the request parked on it.
    actor.kill();
    for _ in 0..250 {
        if ractor::registry::where_is(name.clone()).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The operator answers while no store runs: the journal takes it.
    journal.decide(&id, Decision::Approve, None, "operator").unwrap();
    // Nothing to wait for here: this is a window in which nothing may happen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "released without a store");
    // A new store (the supervisor's restart) replays the journal and releases it.
    let actor = store(&name, &d).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Approved { id });
    actor.stop(None);
}

#[test]
fn the_fingerprint_key_is_created_once_private_and_reused() {
    let d = dir("key");
    let a = bottle_pipelock::approvals::fingerprint_key(&d).unwrap();
    let b = bottle_pipelock::approvals::fingerprint_key(&d).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
    assert_eq!(a.fingerprint("secret-value-123"), b.fingerprint("secret-value-123"));
    let other = bottle_pipelock::FingerprintKey::random();
    assert_ne!(a.fingerprint("secret-value-123"), other.fingerprint("secret-value-123"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(bottle_pipelock::approvals::KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
