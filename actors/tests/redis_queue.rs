//! The run queue's Redis side against a real redis-server.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use herald_actors::memory::StoreLimits;
use herald_actors::record::{ExecutionRecord, RunId, RunStatus, Trigger};
use herald_actors::redis_backend::{
    PendingWrite, RedisSettings, RedisStore, blocking_connection, connect,
};
use herald_testkit::RedisServer;

fn store(server: &RedisServer) -> RedisStore {
    let pool = connect(&RedisSettings::new(server.url(), "herald")).expect("pool");
    RedisStore::new(pool, "herald", StoreLimits::default())
}

fn run(n: i64) -> ExecutionRecord {
    let at = DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap();
    ExecutionRecord::pending(
        RunId::for_tick("job", at),
        "job",
        Trigger::Schedule,
        at,
        3,
        Utc::now(),
    )
}

const BLOCK: Duration = Duration::from_millis(200);
const HOUR: Duration = Duration::from_secs(3_600);

#[tokio::test]
async fn runs_are_read_in_batches_and_gone_once_acknowledged() {
    let server = RedisServer::start();
    let s = store(&server);
    s.ensure_queue().await.unwrap();
    s.ensure_queue()
        .await
        .expect("creating the group twice is fine");
    let records: Vec<_> = (0..5).map(run).collect();
    s.enqueue(&records, "test", None).await.unwrap();
    let mut conn = blocking_connection(&server.url(), BLOCK, Duration::from_secs(1))
        .await
        .unwrap();
    let first = s.read_runs(&mut conn, "a", 3, BLOCK).await.unwrap();
    let second = s.read_runs(&mut conn, "b", 10, BLOCK).await.unwrap();
    assert_eq!(first.len() + second.len(), 5);
    assert_eq!(first[0].record, records[0]);
    assert!(
        s.read_runs(&mut conn, "a", 10, BLOCK)
            .await
            .unwrap()
            .is_empty(),
        "each entry is read once"
    );
    assert_eq!(s.queue_depth().await.unwrap(), (5, 5, 0));
    let acks: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|e| PendingWrite::Ack {
            entry_id: e.entry_id.clone(),
        })
        .collect();
    s.apply(&acks).await.unwrap();
    assert_eq!(s.queue_depth().await.unwrap(), (0, 0, 0));
}

#[tokio::test]
async fn an_enqueue_sent_again_queues_nothing_twice_and_respects_other_claims() {
    let server = RedisServer::start();
    let s = store(&server);
    s.ensure_queue().await.unwrap();
    let records: Vec<_> = (0..3).map(run).collect();
    // this daemon claimed ticks 0 and 1; another daemon claimed tick 2
    let ticks: Vec<_> = records
        .iter()
        .map(|r| (r.job_id.clone(), r.scheduled_at))
        .collect();
    assert_eq!(
        s.claim_ticks(&ticks[..2], "me").await.unwrap(),
        vec![true, true]
    );
    assert_eq!(
        s.claim_ticks(&ticks[2..], "other").await.unwrap(),
        vec![true]
    );
    assert_eq!(
        s.enqueue(&records, "me", None).await.unwrap(),
        vec![true, true, false]
    );
    // the reply was lost: the same call again
    assert_eq!(
        s.enqueue(&records, "me", None).await.unwrap(),
        vec![true, true, false]
    );
    assert_eq!(
        s.queue_depth().await.unwrap(),
        (2, 0, 0),
        "two entries, once each"
    );
    // and a queued tick is not claimable again, even by its own daemon
    assert_eq!(s.claim_ticks(&ticks[..1], "me").await.unwrap(), vec![false]);
}

#[tokio::test]
async fn a_dead_consumers_entries_are_reclaimed_unless_it_keeps_touching_them() {
    let server = RedisServer::start();
    let s = store(&server);
    s.ensure_queue().await.unwrap();
    s.enqueue(&[run(0), run(1)], "test", None).await.unwrap();
    let mut conn = blocking_connection(&server.url(), BLOCK, Duration::from_secs(1))
        .await
        .unwrap();
    let held = s.read_runs(&mut conn, "dead", 10, BLOCK).await.unwrap();
    assert_eq!(held.len(), 2);
    let alive: BTreeSet<String> = ["alive".to_string()].into();
    assert!(
        s.reclaim("alive", HOUR, Duration::from_millis(300), 10, &alive)
            .await
            .unwrap()
            .is_empty(),
        "not idle long enough yet"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // the holder is still working on the first entry
    s.touch("dead", &[held[0].entry_id.clone()]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While the holder's lease may be alive, nothing of its is taken (it
    // may be running them cut off from Redis).
    let holder_alive: BTreeSet<String> = ["alive".to_string(), "dead".to_string()].into();
    assert!(
        s.reclaim("alive", HOUR, Duration::from_millis(300), 10, &holder_alive)
            .await
            .unwrap()
            .is_empty(),
        "taken from a daemon whose lease may be alive"
    );
    let taken = s
        .reclaim("alive", HOUR, Duration::from_millis(300), 10, &alive)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].entry_id, held[1].entry_id);
    assert_eq!(taken[0].record, held[1].record);
    // Its own entries (it runs them, touching them) wait for the own
    // timeout, however short the dead one's.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        s.reclaim("alive", HOUR, Duration::from_millis(300), 10, &alive)
            .await
            .unwrap()
            .iter()
            .all(|e| e.entry_id != held[1].entry_id),
        "its own entry taken at the dead one's timeout"
    );
    let own = s
        .reclaim("alive", Duration::from_millis(300), HOUR, 10, &alive)
        .await
        .unwrap();
    assert_eq!(
        own.iter().map(|e| &e.entry_id).collect::<Vec<_>>(),
        vec![&held[1].entry_id],
        "its own idle entry, and not the dead one's (not idle for an hour)"
    );
}

#[tokio::test]
async fn due_retries_move_onto_the_queue_once() {
    let server = RedisServer::start();
    let s = store(&server);
    s.ensure_queue().await.unwrap();
    let now = Utc::now();
    let mut soon = run(0);
    soon.attempt = 2;
    let mut later = run(1);
    later.attempt = 2;
    s.apply(&[
        PendingWrite::Retry {
            record: Box::new(soon.clone()),
            due: now - TimeDelta::milliseconds(10),
        },
        PendingWrite::Retry {
            record: Box::new(later),
            due: now + TimeDelta::seconds(60),
        },
    ])
    .await
    .unwrap();
    let (a, b) = tokio::join!(
        s.promote_due_retries(now, 100),
        s.promote_due_retries(now, 100)
    );
    assert_eq!(
        a.unwrap() + b.unwrap(),
        1,
        "moved once though two daemons tried"
    );
    let mut conn = blocking_connection(&server.url(), BLOCK, Duration::from_secs(1))
        .await
        .unwrap();
    let entries = s.read_runs(&mut conn, "a", 10, BLOCK).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].record, soon);
    assert_eq!(
        s.queue_depth().await.unwrap().2,
        1,
        "the later retry still waits"
    );
}

#[tokio::test]
async fn a_record_in_redis_only_moves_forward() {
    let server = RedisServer::start();
    let s = store(&server);
    let pending = run(0);
    let mut running = pending.clone();
    running.status = RunStatus::Running;
    let mut done = running.clone();
    done.status = RunStatus::Success;
    s.put_records(std::slice::from_ref(&running)).await.unwrap();
    s.put_records(std::slice::from_ref(&pending)).await.unwrap();
    assert_eq!(
        s.record(&pending.run_id).await.unwrap().unwrap().status,
        RunStatus::Running,
        "a late PENDING is dropped"
    );
    s.put_records(std::slice::from_ref(&done)).await.unwrap();
    s.put_records(std::slice::from_ref(&running)).await.unwrap();
    assert_eq!(
        s.record(&pending.run_id).await.unwrap().unwrap().status,
        RunStatus::Success,
        "a late RUNNING is dropped"
    );
    let mut retry = pending.clone();
    retry.attempt = 2;
    s.put_records(std::slice::from_ref(&retry)).await.unwrap();
    assert_eq!(s.record(&pending.run_id).await.unwrap().unwrap().attempt, 2);
    // Redis reads a record's progress off its text: text inside a value
    // that looks like an earlier status or attempt does not fool it.
    let mut failed = retry.clone();
    failed.status = RunStatus::Failed;
    failed.error = Some(r#"upstream said {"status":"PENDING","attempt":1}"#.into());
    s.put_records(std::slice::from_ref(&failed)).await.unwrap();
    let mut late = retry.clone();
    late.status = RunStatus::Running;
    s.put_records(std::slice::from_ref(&late)).await.unwrap();
    assert_eq!(
        s.record(&pending.run_id).await.unwrap().unwrap(),
        failed,
        "a late RUNNING is dropped after a final record quoting a status"
    );
    // A value before the record's own keys (the job id comes first) that
    // quotes a later attempt is not read as the record's attempt: the
    // final record of attempt 1 still replaces the RUNNING one.
    let at = DateTime::from_timestamp(1_700_000_100, 0).unwrap();
    let job = r#"odd"attempt":9,"status":"SUCCESS""#;
    let mut running = ExecutionRecord::pending(
        RunId::for_tick(job, at),
        job,
        Trigger::Schedule,
        at,
        3,
        Utc::now(),
    );
    running.status = RunStatus::Running;
    s.put_records(std::slice::from_ref(&running)).await.unwrap();
    let mut done = running.clone();
    done.status = RunStatus::Success;
    s.put_records(std::slice::from_ref(&done)).await.unwrap();
    assert_eq!(
        s.record(&running.run_id).await.unwrap().unwrap().status,
        RunStatus::Success,
        "a job id quoting an attempt misled the progress check"
    );
    // The status and attempt are read off the text without decoding it:
    // a stored value that is not JSON but names a later attempt still
    // refuses an earlier one (JSON decoding, the fallback, would fail and
    // let it through).
    let at = DateTime::from_timestamp(1_700_000_200, 0).unwrap();
    let mut early = ExecutionRecord::pending(
        RunId::for_tick("job", at),
        "job",
        Trigger::Schedule,
        at,
        3,
        Utc::now(),
    );
    early.status = RunStatus::Running;
    let key = format!("herald:exec:{}", early.run_id.0);
    let later = r#"{"run_id":"x","status":"SUCCESS","attempt":3,"#;
    let mut c = deadpool_redis::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = deadpool_redis::redis::cmd("SET")
        .arg(&key)
        .arg(later)
        .query_async(&mut c)
        .await
        .unwrap();
    s.put_records(std::slice::from_ref(&early)).await.unwrap();
    let kept: String = deadpool_redis::redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kept, later, "an earlier attempt replaced a later one");
}
