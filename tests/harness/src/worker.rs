//! A tiny in-process worker actor for supervision tests: counts its starts and panics
//! when told to (through its factory's `inject_panic`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bottle_runtime::spec::ActorFactory;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

/// The worker.
#[derive(Debug)]
pub struct Worker {
    starts: Arc<AtomicU32>,
}

/// Its one message.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Panic in the handler ("worker boom").
    Boom,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Boom => panic!("worker boom"),
        }
    }
}

/// Starts [`Worker`]s and counts how many started.
#[derive(Debug, Clone, Default)]
pub struct WorkerFactory {
    /// Starts so far.
    pub starts: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl ActorFactory for WorkerFactory {
    async fn spawn_linked(
        &self,
        _name: String,
        supervisor: ActorCell,
    ) -> Result<ActorCell, SpawnErr> {
        let (r, _) =
            Actor::spawn_linked(None, Worker { starts: self.starts.clone() }, (), supervisor)
                .await?;
        Ok(r.get_cell())
    }

    fn inject_panic(&self, cell: &ActorCell) -> bool {
        cell.send_message(WorkerMsg::Boom).is_ok()
    }
}
