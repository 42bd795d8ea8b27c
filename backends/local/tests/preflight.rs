//! Preflight: doctor passes here, and a host that refuses user namespaces is named.
mod common;

use bottle_local::{Cause, CheckOutcome, HelperCommand, LocalError, LocalSandbox};

#[tokio::test]
async fn doctor_passes_on_this_host() {
    let reaper = common::reaper();
    let checks = common::backend().doctor(&reaper).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["user namespace settings", "sandbox probe"]);
    for check in &checks {
        assert!(matches!(check.outcome, CheckOutcome::Pass(_)), "{check:?}");
    }
}

/// The helper run inside a user namespace whose `user.max_user_namespaces` is 0: a
/// host that refuses user namespaces, simulated without touching the real sysctl.
fn refusing_host() -> LocalSandbox {
    let helper = env!("CARGO_BIN_EXE_bottle-sandbox");
    LocalSandbox::new(HelperCommand {
        argv: vec![
            "/usr/bin/unshare".into(),
            "--user".into(),
            "--map-root-user".into(),
            "/bin/sh".into(),
            "-c".into(),
            "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\"".into(),
            helper.into(),
        ],
    })
}

#[tokio::test]
async fn refused_user_namespaces_are_named_with_the_fix() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("refused");
    let err = refusing_host()
        .start(&common::shell("echo must-not-run", &workspace), &reaper)
        .await
        .expect_err("refused");
    let LocalError::Refused(refusal) = &err else { panic!("not a refusal: {err:?}") };
    assert_eq!(refusal.cause, Cause::MaxUserNamespacesZero);
    assert_eq!(refusal.failure.errno, libc::ENOSPC);
    let text = err.to_string();
    assert!(text.contains("creating the user namespace"), "{text}");
    assert!(text.contains("user.max_user_namespaces is 0"), "{text}");
    assert!(text.contains("fix: raise it: sysctl -w user.max_user_namespaces="), "{text}");
}

#[tokio::test]
async fn doctor_shows_the_refusal() {
    let reaper = common::reaper();
    let checks = refusing_host().doctor(&reaper).await;
    let probe = checks.iter().find(|c| c.name == "sandbox probe").expect("probe check");
    let CheckOutcome::Fail { summary, refusal: Some(refusal) } = &probe.outcome else {
        panic!("probe did not fail with a refusal: {probe:?}")
    };
    assert_eq!(refusal.cause, Cause::MaxUserNamespacesZero);
    assert!(summary.contains("user.max_user_namespaces is 0"), "{summary}");
}
