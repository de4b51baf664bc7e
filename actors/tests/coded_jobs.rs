//! A coded job through the `Job` trait: registered with one line, synced
//! into Redis with its default schedule, keeping operator edits across
//! restarts, orphaned when no longer registered, and given targeting, the
//! store, messages and its settings in its context.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herald_actors::handler::{BoxFuture, Job, JobError, Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::record::{Counts, RunStatus};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_actors::schedule::Schedule;
use herald_actors::users::{Targets, User};
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use support::{Recorder, finished_within};

/// A job that greets every member of the pack named in its settings.
struct Greeter;

impl Job for Greeter {
    fn definition(&self) -> Result<JobSpec, String> {
        let schedule =
            Schedule::parse("0 9 * * mon", chrono_tz::Europe::Berlin).map_err(|e| e.to_string())?;
        Ok(JobSpec::new(
            "greeter",
            schedule,
            JobKind::Coded {
                handler: "greeter".into(),
            },
        ))
    }

    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        Box::pin(async move {
            let pack = ctx.config["pack"]
                .as_str()
                .ok_or_else(|| JobError::new("settings: `pack` is missing"))?
                .to_string();
            // the store is there too: the job's previous runs
            let before = ctx
                .store
                .latest(ctx.job.id.to_string())
                .await
                .map_err(|e| JobError::new(e.to_string()))?;
            let targets = Targets {
                packs: vec![pack],
                ..Targets::default()
            };
            for chat in ctx.users.resolve(&targets).await {
                ctx.send_dm(
                    chat,
                    format!("hello {chat} (earlier run: {})", before.is_some()),
                );
            }
            Ok(Counts::default())
        })
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.add(Greeter).unwrap();
    r.configure("greeter", serde_json::json!({"pack": "team"}));
    r
}

async fn daemon(server: &RedisServer, registry: Registry, recorder: Arc<Recorder>) -> Herald {
    let config = TreeConfig {
        redis: Some(RedisSettings::new(server.url(), "herald")),
        ..TreeConfig::default()
    };
    spawn_tree(config, Vec::new(), registry, recorder)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_registered_job_syncs_keeps_edits_and_runs_with_its_context() {
    let server = RedisServer::start();
    let recorder = Arc::new(Recorder::default());
    let herald = daemon(&server, registry(), recorder.clone()).await;
    let jobs = herald.scheduler.jobs().await.unwrap();
    let greeter = jobs
        .iter()
        .find(|j| &*j.spec.id == "greeter")
        .expect("registered job runs");
    assert_eq!(greeter.spec.schedule.expr().source(), "0 9 * * mon");
    for (id, packs) in [(1, vec!["team"]), (2, vec![]), (3, vec!["team"])] {
        herald
            .users
            .put(User {
                chat_id: id,
                name: String::new(),
                active: true,
                packs: packs.into_iter().map(String::from).collect(),
            })
            .await
            .unwrap();
    }
    let run = herald
        .scheduler
        .run_now("greeter".into())
        .await
        .unwrap()
        .unwrap();
    let rec = finished_within(&herald, &run, Duration::from_secs(10)).await;
    assert_eq!(rec.status, RunStatus::Success, "{rec:?}");
    let sent: Vec<i64> = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(c, _, _)| *c)
        .collect();
    assert_eq!(sent, vec![1, 3]);

    // an operator moves it; the edit survives a restart
    let mut edited = greeter.spec.as_ref().clone();
    edited.schedule = Schedule::parse("30 8 * * mon", chrono_tz::Europe::Berlin).unwrap();
    herald.scheduler.upsert_job(edited).await.unwrap();
    herald.store.flush().await.unwrap();
    herald.shutdown().await;
    let herald = daemon(&server, registry(), recorder.clone()).await;
    let jobs = herald.scheduler.jobs().await.unwrap();
    let greeter = jobs.iter().find(|j| &*j.spec.id == "greeter").unwrap();
    assert_eq!(greeter.spec.schedule.expr().source(), "30 8 * * mon");
    herald.shutdown().await;

    // no longer registered: orphaned in Redis, not run
    let herald = daemon(&server, Registry::new(), recorder).await;
    assert!(herald.scheduler.jobs().await.unwrap().is_empty());
    herald.shutdown().await;
    let store = RedisStore::new(
        connect(&RedisSettings::new(server.url(), "herald")).unwrap(),
        "herald",
        Default::default(),
    );
    let stored = store.jobs().await.unwrap();
    assert!(
        stored
            .iter()
            .any(|j| j.definition.id == "greeter" && j.orphaned)
    );
}

#[test]
fn a_job_registered_twice_is_refused() {
    let mut r = Registry::new();
    r.add(Greeter).unwrap();
    let e = r.add(Greeter).err().unwrap();
    assert!(e.contains("registered twice"), "{e}");
}
