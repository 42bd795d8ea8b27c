//! The demo tree: real processes (through /bin/sh), an in-process actor and a nested
//! supervisor. `flaky` crashes every two seconds and is restarted with backoff.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bottle_runtime::backoff::Backoff;
use bottle_runtime::policy::Strategy;
use bottle_runtime::spec::{ActorFactory, ChildSpec, ChildStart, ProcessSpec, SupervisorSpec};
use bottle_runtime::{Node, NodeConfig};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

/// Counts and logs every 1.5 s.
#[derive(Debug)]
struct Counter;

#[derive(Debug)]
enum CounterMsg {
    /// Sent by its own interval timer.
    Tick,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<CounterMsg>,
        _: (),
    ) -> Result<u64, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(1500), || CounterMsg::Tick);
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CounterMsg::Tick => {
                *count += 1;
                tracing::info!(count = *count, "[counter] in-process actor tick");
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct CounterFactory;

#[async_trait::async_trait]
impl ActorFactory for CounterFactory {
    async fn spawn_linked(
        &self,
        _name: String,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr> {
        Ok(Actor::spawn_linked(None, Counter, (), supervisor).await?.0.get_cell())
    }
}

fn sh(name: &str, script: &str) -> ChildSpec {
    ChildSpec::new(name, ChildStart::Process(ProcessSpec::new(["/bin/sh", "-c", script])))
}

/// The demo tree.
pub(crate) fn tree() -> SupervisorSpec {
    let workers = SupervisorSpec::new("workers")
        .strategy(Strategy::RestForOne)
        .child(ChildSpec::new("counter", ChildStart::Actor(Arc::new(CounterFactory))))
        .child(sh("sleeper", "echo 'sleeping (pid '$$')'; exec sleep 3600"));
    SupervisorSpec::new("root")
        .intensity(5, Duration::from_secs(10))
        .child(sh("clock", "while :; do echo \"tick $(date +%T)\"; sleep 1; done"))
        .child(
            sh(
                "flaky",
                "echo \"working (pid $$)\"; sleep 2; echo 'crashing with exit 3' >&2; exit 3",
            )
            .backoff(Backoff { initial: Duration::from_millis(300), ..Backoff::default() }),
        )
        .child(ChildSpec::new("workers", ChildStart::Supervisor(workers)))
}

pub(crate) async fn run(seconds: u64, json: bool) -> anyhow::Result<ExitCode> {
    let node =
        Node::start(tree(), NodeConfig::default()).await.context("starting the demo tree")?;
    tracing::info!(
        seconds,
        "Demo tree started; flaky crashes every 2 s and is restarted. Ctrl-C stops early."
    );
    let stopper = node.actor().clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let _ = stopper.send_message(bottle_runtime::NodeMsg::Shutdown("demo time is up".into()));
    });
    let exit = node.wait().await;
    timer.abort();
    let flaky = exit
        .report
        .supervisors
        .iter()
        .flat_map(|s| s.children.iter())
        .find(|c| c.name == "flaky")
        .map_or(0, |c| c.restarts);
    tracing::info!(
        tree_exit_code = exit.code,
        flaky_restarts = flaky,
        cause = ?exit.report.cause,
        "Demo finished. A crash before a graceful shutdown keeps its code (docs/exit-codes.md)."
    );
    if json {
        #[allow(clippy::print_stdout)] // the report is this command's output
        {
            println!("{}", exit.report.to_json());
        }
    }
    // The demo succeeded if the crashing daemon was restarted and the tree shut down
    // on time; the tree's own code (3, crash-then-shutdown) is shown above.
    Ok(if flaky > 0 && matches!(exit.report.cause, bottle_runtime::exit::TreeCause::Shutdown) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
