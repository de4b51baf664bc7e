//! A handler that panics, errors or hangs fails its attempt, is retried per
//! its policy, and leaves the pool at full strength.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald_actors::handler::{JobError, Registry, RunContext};
use herald_actors::memory::RecordQuery;
use herald_actors::notifier::DryRun;
use herald_actors::record::{Counts, RunId, RunStatus};
use herald_actors::{Herald, TreeConfig, spawn_tree};
use support::{coded, finished, quick_retry, started};

const WORKERS: usize = 3;

async fn tree(registry: Registry, jobs: Vec<herald_actors::job::JobSpec>) -> Herald {
    let config = TreeConfig {
        workers: WORKERS,
        ..TreeConfig::default()
    };
    spawn_tree(config, jobs, registry, Arc::new(DryRun))
        .await
        .unwrap()
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("panic", |_ctx: RunContext| async {
        if true {
            panic!("handler blew up");
        }
        Ok(Counts::default())
    });
    r.register("hang", |_ctx: RunContext| async {
        std::future::pending::<()>().await;
        Ok(Counts::default())
    });
    r.register("error", |_ctx: RunContext| async {
        Err(JobError::new("the food service answered 503"))
    });
    r
}

#[tokio::test]
async fn a_panicking_handler_fails_each_attempt_and_the_pool_keeps_its_size() {
    let mut job = coded("panics", "0 0 1 1 *", "panic");
    job.retry = quick_retry(2);
    let herald = tree(registry(), vec![job]).await;
    let run = herald
        .scheduler
        .run_now("panics".into())
        .await
        .unwrap()
        .unwrap();
    let rec = finished(&herald, &run).await;
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(rec.attempt, 2, "retried once, then failed for good");
    assert!(
        rec.error
            .as_deref()
            .unwrap_or("")
            .contains("panicked: handler blew up"),
        "{rec:?}"
    );
    let stats = herald.pool.stats().await.unwrap();
    assert_eq!(stats.workers, WORKERS);
    assert_eq!(
        stats.worker_restarts, 0,
        "a job's panic does not touch its worker"
    );
    assert_eq!(stats.busy, 0);
    herald.shutdown().await;
}

#[tokio::test]
async fn a_hanging_handler_times_out_and_is_retried() {
    let mut job = coded("hangs", "0 0 1 1 *", "hang");
    job.retry = quick_retry(2);
    job.timeout = Duration::from_millis(200);
    let herald = tree(registry(), vec![job]).await;
    let run = herald
        .scheduler
        .run_now("hangs".into())
        .await
        .unwrap()
        .unwrap();
    let rec = finished(&herald, &run).await;
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(rec.attempt, 2);
    assert!(
        rec.error
            .as_deref()
            .unwrap_or("")
            .contains("timed out after 200ms"),
        "{rec:?}"
    );
    let stats = herald.pool.stats().await.unwrap();
    assert_eq!((stats.workers, stats.busy), (WORKERS, 0));
    herald.shutdown().await;
}

#[tokio::test]
async fn an_erroring_handler_is_retried_until_it_succeeds() {
    let attempts = Arc::new(AtomicU32::new(0));
    let mut registry = registry();
    let a = attempts.clone();
    registry.register("flaky", move |ctx: RunContext| {
        let a = a.clone();
        async move {
            a.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt < 3 {
                Err(JobError::new(format!("attempt {} failed", ctx.attempt)))
            } else {
                Ok(Counts {
                    sent: 1,
                    ..Counts::default()
                })
            }
        }
    });
    let mut job = coded("flaky", "0 0 1 1 *", "flaky");
    job.retry = quick_retry(3);
    let herald = tree(registry, vec![job]).await;
    let run = herald
        .scheduler
        .run_now("flaky".into())
        .await
        .unwrap()
        .unwrap();
    let rec = finished(&herald, &run).await;
    assert_eq!(
        (rec.status, rec.attempt, rec.counts.sent),
        (RunStatus::Success, 3, 1)
    );
    assert_eq!(rec.error, None);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    herald.shutdown().await;
}

#[tokio::test]
async fn an_error_after_the_last_attempt_stays_failed_with_its_message() {
    let mut job = coded("broken", "0 0 1 1 *", "error");
    job.retry = quick_retry(1);
    let herald = tree(registry(), vec![job]).await;
    let run = herald
        .scheduler
        .run_now("broken".into())
        .await
        .unwrap()
        .unwrap();
    let rec = finished(&herald, &run).await;
    assert_eq!((rec.status, rec.attempt), (RunStatus::Failed, 1));
    assert_eq!(rec.error.as_deref(), Some("the food service answered 503"));
    let failed = herald
        .store
        .query(RecordQuery {
            status: Some(RunStatus::Failed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    herald.shutdown().await;
}

#[tokio::test]
async fn a_running_run_can_be_cancelled() {
    let mut job = coded("hangs", "0 0 1 1 *", "hang");
    job.timeout = Duration::from_secs(60);
    let herald = tree(registry(), vec![job]).await;
    let run = herald
        .scheduler
        .run_now("hangs".into())
        .await
        .unwrap()
        .unwrap();
    started(&herald, &run).await;
    assert!(herald.pool.cancel(run.clone()).await.unwrap());
    let rec = finished(&herald, &run).await;
    assert_eq!(rec.status, RunStatus::Cancelled);
    assert!(!herald.pool.cancel(RunId("nope@1".into())).await.unwrap());
    herald.shutdown().await;
}

#[tokio::test]
async fn the_local_queue_is_bounded_and_a_run_past_it_fails_visibly() {
    let mut job = coded("hangs", "0 0 1 1 *", "hang");
    job.timeout = Duration::from_secs(60);
    job.overlap = herald_actors::job::OverlapPolicy::Allow;
    let config = TreeConfig {
        workers: 1,
        max_queued: 2,
        shutdown_grace: Duration::from_millis(200),
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, vec![job], registry(), Arc::new(DryRun))
        .await
        .unwrap();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = herald
            .scheduler
            .run_now("hangs".into())
            .await
            .unwrap()
            .unwrap();
        if runs.is_empty() {
            // one worker busy, then the queue fills
            started(&herald, &run).await;
        }
        runs.push(run);
    }
    // 1 running + 2 waiting; the 4th and 5th are turned away, recorded
    for run in &runs[3..] {
        let rec = finished(&herald, run).await;
        assert_eq!(rec.status, RunStatus::Failed);
        let error = rec.error.unwrap_or_default();
        assert!(error.contains("workers.max_queued"), "{error}");
    }
    let stats = herald.pool.stats().await.unwrap();
    assert_eq!((stats.busy, stats.queued), (1, 2));
    for run in &runs[..3] {
        let rec = herald.store.record(run.clone()).await.unwrap().unwrap();
        assert!(!rec.status.is_terminal(), "{rec:?}");
    }
    herald.shutdown().await;
}
