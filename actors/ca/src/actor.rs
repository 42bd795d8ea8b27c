//! The CA as an actor: minted in `pre_start` (a failure is a spawn error), its
//! fingerprint logged, and the shared authority handed to the proxy.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::authority::{CaConfig, CertificateAuthority};

/// Everything the CA actor can be asked. Closed on purpose.
#[derive(Debug)]
pub enum CaMsg {
    /// The shared authority (the proxy's TLS resolver mints through it directly).
    Authority(RpcReplyPort<Arc<CertificateAuthority>>),
    /// Fingerprint, certificate and counters.
    Status(RpcReplyPort<CaStatus>),
}

/// What the CA reports about itself; never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaStatus {
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Leaves minted so far.
    pub minted: u64,
}

/// Arguments: how to mint.
#[derive(Debug)]
pub struct CaArgs {
    /// The CA configuration.
    pub config: CaConfig,
}

/// The actor.
#[derive(Debug)]
pub struct CaActor;

impl Actor for CaActor {
    type Msg = CaMsg;
    type State = Arc<CertificateAuthority>;
    type Arguments = CaArgs;

    async fn pre_start(
        &self,
        _: ActorRef<CaMsg>,
        args: CaArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ca = CertificateAuthority::mint(args.config)?;
        tracing::info!(fingerprint = %ca.fingerprint(), "Minted the bottle CA.");
        Ok(Arc::new(ca))
    }

    async fn handle(
        &self,
        _: ActorRef<CaMsg>,
        msg: CaMsg,
        ca: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CaMsg::Authority(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(ca.clone());
                }
            }
            CaMsg::Status(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(CaStatus {
                        fingerprint: ca.fingerprint().to_string(),
                        cert_pem: ca.cert_pem().to_string(),
                        minted: ca.minted(),
                    });
                }
            }
        }
        Ok(())
    }
}
