//! The smallest end-to-end check of the local backend: an agent runs in a sandbox and its
//! exit code comes back through the helper.

mod common;

#[tokio::test]
async fn agent_runs_and_its_exit_code_comes_back() {
    let reaper = common::reaper();
    let workspace = common::TempDir::new("smoke");
    let finished =
        common::run(&reaper, &common::shell("echo hello; id -u; hostname; exit 7", &workspace))
            .await;
    assert_eq!(finished.status, bottle_proc::ExitStatus::Exited(7), "{finished:?}");
    assert_eq!(finished.stdout, "hello\n0\nbottle\n", "{finished:?}");
}
