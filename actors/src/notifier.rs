//! The Notifier actor: delivers what runs produce through a [`Transport`].
//!
//! Today's transport is dry-run (it logs each message); Telegram and
//! webhooks plug in behind the same trait.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::record::{Counts, RunId};

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub run_id: RunId,
    pub job_id: String,
    /// Who it is for, as the transport understands it.
    pub recipient: String,
    pub text: String,
}

/// What happened to one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Sent,
    Failed(String),
}

/// A way to deliver notifications.
pub trait Transport: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn send(&self, notification: &Notification) -> DeliveryOutcome;
}

/// Logs what it would send. The transport when no token is configured.
pub struct DryRun;

impl Transport for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn send(&self, n: &Notification) -> DeliveryOutcome {
        tracing::info!(
            job = %n.job_id,
            run = %n.run_id,
            to = %n.recipient,
            text = %n.text,
            "dry-run: would send"
        );
        DeliveryOutcome::Sent
    }
}

pub enum NotifierMsg {
    Deliver(Vec<Notification>, RpcReplyPort<Counts>),
}

pub struct Notifier;

pub struct NotifierState {
    transport: Arc<dyn Transport>,
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = Arc<dyn Transport>;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMsg>,
        transport: Arc<dyn Transport>,
    ) -> Result<NotifierState, ActorProcessingErr> {
        Ok(NotifierState { transport })
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifierMsg::Deliver(notifications, reply) => {
                let mut counts = Counts::default();
                for n in &notifications {
                    match state.transport.send(n) {
                        DeliveryOutcome::Sent => counts.sent += 1,
                        DeliveryOutcome::Failed(reason) => {
                            tracing::warn!(job = %n.job_id, run = %n.run_id, to = %n.recipient, %reason, "delivery failed");
                            counts.failed += 1;
                        }
                    }
                }
                let _ = reply.send(counts);
            }
        }
        Ok(())
    }
}
