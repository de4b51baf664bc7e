//! The ExecutionStore actor: the one writer of execution records, skipped
//! ticks, the job table and last ticks, and the place queries go.
//!
//! Its data lives in a [`MemoryStore`] behind an `Arc<Mutex<_>>` that the
//! tree owns and hands to every incarnation of this actor, so a restart
//! loses nothing. Handlers never fail: a bad write is ignored, not fatal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::AbortOnDrop;
use crate::job::JobSpec;
use crate::memory::{MemoryStore, RecordQuery};
use crate::record::{ExecutionRecord, RunId, SkippedTicks};

/// How often expired records are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub type SharedMemory = Arc<Mutex<MemoryStore>>;

pub enum StoreMsg {
    PutRecord(ExecutionRecord),
    PutSkipped(SkippedTicks),
    SetLastTick {
        job_id: String,
        at: DateTime<Utc>,
    },
    PutJob(Arc<JobSpec>),
    RemoveJob(String),
    GetRecord(RunId, RpcReplyPort<Option<ExecutionRecord>>),
    Query(RecordQuery, RpcReplyPort<Vec<ExecutionRecord>>),
    Latest(String, RpcReplyPort<Option<ExecutionRecord>>),
    Skipped {
        job_id: Option<String>,
        limit: usize,
        reply: RpcReplyPort<Vec<SkippedTicks>>,
    },
    /// What a restarted actor rebuilds from.
    Snapshot(RpcReplyPort<StoreSnapshot>),
    Stats(RpcReplyPort<StoreStats>),
    Sweep,
}

/// The state the scheduler and the pool rebuild from.
#[derive(Debug, Clone, Default)]
pub struct StoreSnapshot {
    pub jobs: Vec<Arc<JobSpec>>,
    pub last_ticks: HashMap<String, DateTime<Utc>>,
    /// PENDING and RUNNING records, oldest first.
    pub unfinished: Vec<ExecutionRecord>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub records: usize,
    pub dropped_records: u64,
}

pub struct ExecutionStore;

pub struct StoreState {
    memory: SharedMemory,
    _sweeper: AbortOnDrop,
}

impl StoreState {
    fn mem(&self) -> MutexGuard<'_, MemoryStore> {
        // A poisoned lock means a panic mid-operation elsewhere; the
        // structures are still consistent enough to serve and keep going.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Actor for ExecutionStore {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = SharedMemory;

    async fn pre_start(
        &self,
        myself: ActorRef<StoreMsg>,
        memory: SharedMemory,
    ) -> Result<StoreState, ActorProcessingErr> {
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                if myself.cast(StoreMsg::Sweep).is_err() {
                    break;
                }
            }
        });
        Ok(StoreState {
            memory,
            _sweeper: AbortOnDrop::from(sweeper),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<StoreMsg>,
        msg: StoreMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StoreMsg::PutRecord(r) => {
                state.mem().put_record(r);
            }
            StoreMsg::PutSkipped(s) => state.mem().put_skipped(s),
            StoreMsg::SetLastTick { job_id, at } => state.mem().set_last_tick(&job_id, at),
            StoreMsg::PutJob(spec) => state.mem().put_job(spec),
            StoreMsg::RemoveJob(id) => {
                state.mem().remove_job(&id);
            }
            StoreMsg::GetRecord(id, reply) => {
                let _ = reply.send(state.mem().record(&id));
            }
            StoreMsg::Query(q, reply) => {
                let _ = reply.send(state.mem().query(&q));
            }
            StoreMsg::Latest(job, reply) => {
                let _ = reply.send(state.mem().latest(&job));
            }
            StoreMsg::Skipped {
                job_id,
                limit,
                reply,
            } => {
                let _ = reply.send(state.mem().skipped(job_id.as_deref(), limit));
            }
            StoreMsg::Snapshot(reply) => {
                let mem = state.mem();
                let jobs = mem.jobs();
                let last_ticks = jobs
                    .iter()
                    .filter_map(|j| mem.last_tick(&j.id).map(|t| (j.id.clone(), t)))
                    .collect();
                let snapshot = StoreSnapshot {
                    jobs,
                    last_ticks,
                    unfinished: mem.unfinished(),
                };
                drop(mem);
                let _ = reply.send(snapshot);
            }
            StoreMsg::Stats(reply) => {
                let mem = state.mem();
                let stats = StoreStats {
                    records: mem.record_count(),
                    dropped_records: mem.dropped_records(),
                };
                drop(mem);
                let _ = reply.send(stats);
            }
            StoreMsg::Sweep => {
                let expired = state.mem().expire(Utc::now());
                if expired > 0 {
                    tracing::debug!(expired, "expired execution records");
                }
            }
        }
        Ok(())
    }
}
