//! The Redis store against a real redis-server on a free loopback port.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_redis::redis::AsyncCommands;
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::memory::{RecordQuery, StoreLimits};
use herald_actors::record::{ExecutionRecord, RunId, RunStatus, SkipReason, SkippedTicks, Trigger};
use herald_actors::redis_backend::{
    BackendError, RedisSettings, RedisStore, StoredJob, connect, sync_job,
};
use herald_actors::schedule::Schedule;
use herald_testkit::RedisServer;

fn store(server: &RedisServer, limits: StoreLimits) -> RedisStore {
    let pool = connect(&RedisSettings::new(server.url(), "herald")).expect("pool");
    RedisStore::new(pool, "herald", limits)
}

fn record(job: &str, n: i64, status: RunStatus) -> ExecutionRecord {
    let at = DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap();
    let mut r = ExecutionRecord::pending(
        RunId::for_tick(job, at),
        job,
        Trigger::Schedule,
        at,
        3,
        Utc::now() + TimeDelta::milliseconds(n),
    );
    r.status = status;
    r
}

/// What the health watcher would report, with no peers.
fn health(mode: herald_actors::health::Mode) -> herald_actors::health::Health {
    herald_actors::health::Health {
        mode,
        peers: Default::default(),
        stale: Default::default(),
        jobs_version: 0,
        epoch: None,
    }
}

fn ids(records: &[ExecutionRecord]) -> Vec<String> {
    records.iter().map(|r| r.run_id.0.clone()).collect()
}

#[tokio::test]
async fn records_round_trip_with_a_ttl_and_capped_indexes() {
    let server = RedisServer::start();
    let limits = StoreLimits {
        max_records: 5,
        history_per_job: 3,
        ..StoreLimits::default()
    };
    let s = store(&server, limits);
    let batch: Vec<_> = (0..4)
        .map(|n| {
            record(
                "a",
                n,
                if n % 2 == 0 {
                    RunStatus::Success
                } else {
                    RunStatus::Failed
                },
            )
        })
        .chain((0..3).map(|n| record("b", 10 + n, RunStatus::Success)))
        .collect();
    let dropped = s.put_records(&batch).await.unwrap();
    assert_eq!(dropped, 2, "7 records under a cap of 5");
    assert_eq!(s.dropped_records().await.unwrap(), 2);

    let back = s.record(&batch[3].run_id).await.unwrap().unwrap();
    assert_eq!(back, batch[3]);
    let mut conn = deadpool_redis::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = conn
        .ttl(format!("herald:exec:{}", batch[3].run_id))
        .await
        .unwrap();
    assert!(
        ttl > 7 * 86_400 - 60 && ttl <= 7 * 86_400,
        "record TTL is 7 days: {ttl}"
    );

    let a = s
        .query(&RecordQuery {
            job_id: Some("a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&a),
        ["a@1700000003", "a@1700000002", "a@1700000001"],
        "history capped at 3"
    );
    assert_eq!(
        s.latest("b").await.unwrap().unwrap().run_id.0,
        "b@1700000012"
    );

    let failed = s
        .query(&RecordQuery {
            status: Some(RunStatus::Failed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&failed),
        ["a@1700000003"],
        "a@1700000001 fell out of the recent index"
    );
    let paged = s
        .query(&RecordQuery {
            offset: 1,
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&paged), ["b@1700000011", "b@1700000010"]);
}

#[tokio::test]
async fn an_update_replaces_the_record_in_place() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let mut r = record("a", 0, RunStatus::Pending);
    s.put_records(std::slice::from_ref(&r)).await.unwrap();
    r.status = RunStatus::Success;
    r.duration_ms = Some(12);
    s.put_records(std::slice::from_ref(&r)).await.unwrap();
    let all = s
        .query(&RecordQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all, vec![r]);
}

fn job(expr: &str) -> JobSpec {
    JobSpec::new(
        "reminder",
        Schedule::parse(expr, chrono_tz::Asia::Tehran).unwrap(),
        JobKind::Message {
            template: "hi".into(),
        },
    )
}

#[tokio::test]
async fn operator_edits_survive_a_restart_and_undefined_jobs_are_orphaned() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    // first start: defined in config
    let stored = sync_job(Some(&job("0 22 * * *")), None).unwrap();
    s.put_job(&stored).await.unwrap();
    // an operator edits the schedule and disables it
    let mut edited = s.jobs().await.unwrap().remove(0);
    edited.overrides.schedule = Some("0 21 * * *".into());
    edited.overrides.enabled = Some(false);
    s.put_job(&edited).await.unwrap();
    // restart: a fresh pool syncs the same definition again
    let s2 = store(&server, StoreLimits::default());
    let current = s2.jobs().await.unwrap().pop();
    let synced = sync_job(Some(&job("0 22 * * *")), current).unwrap();
    s2.put_job(&synced).await.unwrap();
    let effective = s2.jobs().await.unwrap()[0].effective().unwrap();
    assert_eq!(effective.schedule.expr().source(), "0 21 * * *");
    assert!(!effective.enabled);
    // next restart: the job is gone from config
    let current = s2.jobs().await.unwrap().pop();
    let orphaned: StoredJob = sync_job(None, current).unwrap();
    s2.put_job(&orphaned).await.unwrap();
    let jobs = s2.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "kept, not deleted");
    assert!(jobs[0].orphaned);
}

#[tokio::test]
async fn last_tick_only_moves_forward() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    s.raise_last_tick("a", t).await.unwrap();
    s.raise_last_tick("a", t - TimeDelta::seconds(60))
        .await
        .unwrap();
    let got = s.last_ticks(&["a".into(), "b".into()]).await.unwrap();
    assert_eq!(got.get("a"), Some(&t));
    assert_eq!(got.get("b"), None);
}

#[tokio::test]
async fn a_tick_is_claimed_once_among_many_claimers() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let claims = (0..20).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.claim_tick("a", at, &format!("daemon-{i}"), Duration::from_secs(60))
                .await
        })
    });
    let mut won = 0;
    for c in claims {
        if c.await.unwrap().unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    // asking again is safe: the holder still holds it, the others still do not
    let holder = s
        .claim_ticks(&[("a".into(), at)], "daemon-0")
        .await
        .unwrap();
    let others: Vec<bool> = futures_like_join(&s, at).await;
    assert_eq!(holder.len(), 1);
    assert_eq!(
        others.iter().filter(|w| **w).count() + usize::from(holder[0]),
        1
    );
    // the next tick is a different claim
    assert!(
        s.claim_tick(
            "a",
            at + TimeDelta::seconds(1),
            "daemon-0",
            Duration::from_secs(60)
        )
        .await
        .unwrap()
    );
}

#[tokio::test]
async fn skipped_ticks_are_kept_newest_first_and_capped() {
    let server = RedisServer::start();
    let limits = StoreLimits {
        max_skipped: 3,
        ..StoreLimits::default()
    };
    let s = store(&server, limits);
    let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let entries: Vec<_> = (0..5)
        .map(|n| SkippedTicks {
            job_id: if n % 2 == 0 { "a".into() } else { "b".into() },
            reason: SkipReason::Overlap,
            first: at + TimeDelta::seconds(n),
            last: at + TimeDelta::seconds(n),
            count: 1,
            recorded_at: at + TimeDelta::seconds(n),
        })
        .collect();
    s.put_skipped(&entries).await.unwrap();
    let all = s.skipped(None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].first, at + TimeDelta::seconds(4));
    let a = s.skipped(Some("a"), 10).await.unwrap();
    assert_eq!(a.len(), 2);
    // the entries trimmed away take their data with them
    let mut c = redis_conn(&server).await;
    let kept: usize = c.hlen("herald:skips:data").await.unwrap();
    assert_eq!(kept, 3);
}

#[tokio::test]
async fn a_skip_is_recorded_once_however_often_it_is_written() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let skip = |recorded_at| SkippedTicks {
        job_id: "a".into(),
        reason: SkipReason::Misfire,
        first: at,
        last: at + TimeDelta::minutes(5),
        count: 5,
        recorded_at,
    };
    // a replayed pipeline, and a second daemon deciding the same skip later
    s.put_skipped(&[skip(at)]).await.unwrap();
    s.put_skipped(&[skip(at)]).await.unwrap();
    s.put_skipped(&[skip(at + TimeDelta::seconds(3))])
        .await
        .unwrap();
    let all = s.skipped(None, 10).await.unwrap();
    assert_eq!(all, vec![skip(at)]);
    // a different window is a different entry
    let mut later = skip(at);
    later.first = at + TimeDelta::minutes(6);
    s.put_skipped(&[later]).await.unwrap();
    assert_eq!(s.skipped(Some("a"), 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn writes_survive_redis_forgetting_its_scripts() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    s.put_records(&[record("a", 1, RunStatus::Pending)])
        .await
        .unwrap();
    // what a Redis restart does to the script cache
    let mut c = redis_conn(&server).await;
    let _: () = deadpool_redis::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    s.put_records(&[
        record("a", 1, RunStatus::Success),
        record("a", 2, RunStatus::Pending),
    ])
    .await
    .unwrap();
    let stored = s.record(&record("a", 1, RunStatus::Success).run_id).await;
    assert_eq!(stored.unwrap().unwrap().status, RunStatus::Success);
    assert!(
        s.record(&record("a", 2, RunStatus::Pending).run_id)
            .await
            .unwrap()
            .is_some()
    );
    let _: () = deadpool_redis::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut c)
        .await
        .unwrap();
    let won = s
        .claim_ticks(
            &[(
                "a".into(),
                DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            )],
            "d1",
        )
        .await
        .unwrap();
    assert_eq!(won, vec![true]);
}

async fn redis_conn(server: &RedisServer) -> deadpool_redis::redis::aio::MultiplexedConnection {
    deadpool_redis::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_whether_refused_or_silent() {
    let mut server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    s.ping().await.expect("answers while up");

    server.freeze();
    let started = Instant::now();
    let err = s.ping().await.expect_err("a frozen redis does not answer");
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    server.thaw();

    server.stop();
    let started = Instant::now();
    let err = s.ping().await.expect_err("a stopped redis refuses");
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    server.restart();
    let back = async {
        loop {
            if s.ping().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("the pool reconnects");
}

/// Claims of the same tick by daemons 1..20, one after the other.
async fn futures_like_join(s: &RedisStore, at: DateTime<Utc>) -> Vec<bool> {
    let mut out = Vec::new();
    for i in 1..20 {
        out.extend(
            s.claim_ticks(&[("a".into(), at)], &format!("daemon-{i}"))
                .await
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_never_repeat_a_record_while_runs_are_added() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let old: Vec<_> = (0..600)
        .map(|n| record("a", n, RunStatus::Success))
        .collect();
    s.put_records(&old).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.put_records(&[record("a", n, RunStatus::Running)])
                    .await
                    .unwrap();
                n += 1;
            }
        })
    };
    for _ in 0..30 {
        // walks several pages of the recent index while it grows at the top
        let got = s
            .query(&RecordQuery {
                status: Some(RunStatus::Success),
                limit: 600,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut ids: Vec<_> = got.iter().map(|r| r.run_id.0.clone()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "a record came back twice");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
}

#[tokio::test]
async fn a_delivery_claimed_and_never_reported_is_in_doubt_even_for_its_own_daemon() {
    use herald_actors::redis_backend::DeliveryClaim;
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let keys = vec!["run@1:7:0:0".to_string()];
    assert_eq!(
        s.claim_deliveries(&keys, "d1", None).await.unwrap(),
        vec![DeliveryClaim::Mine]
    );
    // its own claim: a send task that outlived its Notifier still holds
    // it, or the claim's answer was lost (the ledger knows which)
    assert_eq!(
        s.claim_deliveries(&keys, "d1", None).await.unwrap(),
        vec![DeliveryClaim::Ours]
    );
    assert_eq!(
        s.claim_deliveries(&keys, "d2", None).await.unwrap(),
        vec![DeliveryClaim::InDoubt]
    );
    // a definite failure releases it; a success makes it sent for everyone
    s.settle_deliveries(&[(keys[0].clone(), false)])
        .await
        .unwrap();
    assert_eq!(
        s.claim_deliveries(&keys, "d2", None).await.unwrap(),
        vec![DeliveryClaim::Mine]
    );
    s.settle_deliveries(&[(keys[0].clone(), true)])
        .await
        .unwrap();
    assert_eq!(
        s.claim_deliveries(&keys, "d1", None).await.unwrap(),
        vec![DeliveryClaim::Sent]
    );
}

/// A skip claims its ticks and records the stretches it won in one
/// script: a tick a peer holds splits the entry, and what Redis holds
/// reads back as the entries a daemon would have written.
#[tokio::test]
async fn a_skip_claims_its_ticks_and_records_what_it_won_at_once() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let first = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let ticks: Vec<DateTime<Utc>> = (0..5).map(|i| first + TimeDelta::seconds(i)).collect();
    // A peer ran the third tick.
    assert_eq!(
        s.claim_ticks(&[("a".into(), ticks[2])], "peer:queued")
            .await
            .unwrap(),
        vec![true]
    );
    let skip = SkippedTicks {
        job_id: "a".into(),
        reason: SkipReason::Overlap,
        first: ticks[0],
        last: ticks[4],
        count: 5,
        recorded_at: first + TimeDelta::milliseconds(5_500),
    };
    let won = s
        .claim_and_skip(&[(&skip, ticks.as_slice())], "me:skipped", None)
        .await
        .unwrap();
    assert_eq!(won, vec![vec![true, true, false, true, true]]);
    // Again (a replayed call): the same claims are still this daemon's,
    // and nothing is added twice.
    let again = s
        .claim_and_skip(&[(&skip, ticks.as_slice())], "me:skipped", None)
        .await
        .unwrap();
    assert_eq!(again, won);
    let mut entries = s.skipped(Some("a"), 10).await.unwrap();
    entries.sort_by_key(|e| e.first);
    let stretches: Vec<_> = entries.iter().map(|e| (e.first, e.last, e.count)).collect();
    assert_eq!(
        stretches,
        vec![(ticks[0], ticks[1], 2), (ticks[3], ticks[4], 2)]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.reason == SkipReason::Overlap && e.recorded_at == skip.recorded_at)
    );
    // The store's own write of a won stretch (as the scheduler makes it)
    // is the same entry.
    s.put_skipped(&[SkippedTicks {
        last: ticks[1],
        count: 2,
        ..skip.clone()
    }])
    .await
    .unwrap();
    assert_eq!(s.skipped(Some("a"), 10).await.unwrap().len(), 2);
}

/// After Redis lost its data, a daemon that has not seen the new epoch
/// yet cannot claim: a peer's claims from before the loss are gone, and
/// claiming now could run a tick twice. Enqueues and skips (several ticks
/// each) are refused while Redis holds another epoch or none, claim
/// nothing, and go through once the daemon names the epoch Redis holds.
#[tokio::test]
async fn claims_are_refused_after_redis_lost_its_data_until_the_new_epoch_is_known() {
    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let mut conn = deadpool_redis::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let first = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let ticks: Vec<DateTime<Utc>> = (0..3).map(|i| first + TimeDelta::seconds(i)).collect();
    let skip = SkippedTicks {
        job_id: "a".into(),
        reason: SkipReason::Overlap,
        first: ticks[0],
        last: ticks[2],
        count: 3,
        recorded_at: first + TimeDelta::seconds(3),
    };
    let runs = [
        record("b", 0, RunStatus::Pending),
        record("b", 1, RunStatus::Pending),
    ];
    let claims = |job: &str, at: &[DateTime<Utc>]| -> Vec<String> {
        at.iter()
            .map(|t| format!("herald:tick:{job}:{}", t.timestamp()))
            .collect()
    };
    let run_claims = claims("b", &[runs[0].scheduled_at, runs[1].scheduled_at]);
    let skip_claims = claims("a", &ticks);
    // Redis holds no epoch (it restarted empty), then another one.
    for held in [None, Some("e2")] {
        if let Some(e) = held {
            let _: () = conn.set("herald:epoch", e).await.unwrap();
        }
        assert!(matches!(
            s.enqueue(&runs, "me", Some("e1")).await,
            Err(BackendError::EpochChanged)
        ));
        assert!(matches!(
            s.claim_and_skip(&[(&skip, ticks.as_slice())], "me:skipped", Some("e1"))
                .await,
            Err(BackendError::EpochChanged)
        ));
        for key in run_claims.iter().chain(&skip_claims) {
            let v: Option<String> = conn.get(key).await.unwrap();
            assert_eq!(v, None, "{key} claimed though the epoch changed");
        }
        assert!(s.skipped(Some("a"), 10).await.unwrap().is_empty());
        let queued: usize = conn.xlen("herald:runs").await.unwrap();
        assert_eq!(queued, 0, "a refused enqueue queued a run");
        assert!(s.record(&runs[0].run_id).await.unwrap().is_none());
    }
    // The daemon learned the epoch Redis holds: both go through.
    assert_eq!(
        s.enqueue(&runs, "me", Some("e2")).await.unwrap(),
        vec![true, true]
    );
    let won = s
        .claim_and_skip(&[(&skip, ticks.as_slice())], "me:skipped", Some("e2"))
        .await
        .unwrap();
    assert_eq!(won, vec![vec![true, true, true]]);
    let entries = s.skipped(Some("a"), 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].first, entries[0].last, entries[0].count),
        (ticks[0], ticks[2], 3)
    );
    for key in &skip_claims {
        let v: Option<String> = conn.get(key).await.unwrap();
        assert_eq!(v.as_deref(), Some("me:skipped"));
    }
}

/// A fan-out looks up what Redis holds of its parts before sending; that
/// knowledge must outlive Redis: a part a killed daemon began to send, or
/// sent, is not taken for free from memory once Redis is gone (a run
/// taken over from a killed daemon, whose chats were busy until the
/// outage began, messaged two users twice in the chaos run).
#[tokio::test]
async fn parts_another_daemon_sent_or_began_stay_known_to_the_ledger_offline() {
    use herald_actors::health::Mode;
    use herald_actors::ledger::DeliveryLedger;
    use herald_actors::redis_backend::DeliveryClaim;

    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let keys: Vec<String> = ["began", "sent", "free"]
        .iter()
        .map(|k| format!("run@1:{k}:0:0"))
        .collect();
    // The killed daemon's claims: one part going out, one sent.
    s.claim_deliveries(&keys[..2], "dead", None).await.unwrap();
    s.settle_deliveries(&[(keys[1].clone(), true)])
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(health(Mode::Online));
    let ledger = DeliveryLedger::new(Some((s.clone(), rx)), "me".into());
    assert_eq!(ledger.already_sent(&keys).await, vec![false, true, false]);
    tx.send(health(Mode::Offline)).unwrap();
    // A run from the shared queue is held offline: once this daemon's
    // lease is over a peer takes it over, seeing in Redis only what was
    // sent before the outage.
    assert_eq!(
        ledger.claim(&keys, true).await,
        vec![DeliveryClaim::Held; 3],
        "offline, a shared run's parts wait for Redis"
    );
    assert_eq!(
        ledger.claim(&keys, false).await,
        vec![
            DeliveryClaim::InDoubt,
            DeliveryClaim::Sent,
            DeliveryClaim::Mine
        ],
        "offline, memory knows what Redis held at the fan-out's start"
    );
    tx.send(health(Mode::Online)).unwrap();
    assert_eq!(
        ledger.claim(&keys[2..], true).await,
        vec![DeliveryClaim::Mine],
        "back online, the claim is Redis's again"
    );
    // That claim's send never started: a Notifier restarted meanwhile
    // finds this daemon's own claim in doubt.
    assert_eq!(
        ledger.claim(&keys[2..], true).await,
        vec![DeliveryClaim::InDoubt]
    );
}

/// A claim whose answer was lost (Redis cut just after it landed) leaves
/// this daemon's own `sending:` mark and no send: asked again, the part
/// is this daemon's to send, not in doubt (the Jepsen run lost messages
/// that way, each recorded "outcome unknown" though never sent).
#[tokio::test]
async fn a_delivery_claim_whose_answer_was_lost_is_sent_when_asked_again() {
    use herald_actors::health::Mode;
    use herald_actors::ledger::DeliveryLedger;
    use herald_actors::redis_backend::DeliveryClaim;
    use herald_testkit::relay::{Link, Relay};

    let server = RedisServer::start();
    let relay = Relay::start(server.port()).await;
    let pool = connect(&RedisSettings::new(relay.redis_url(), "herald")).expect("pool");
    let through_relay = RedisStore::new(pool, "herald", StoreLimits::default());
    let direct = store(&server, StoreLimits::default());
    let (_tx, rx) = tokio::sync::watch::channel(health(Mode::Online));
    let ledger = DeliveryLedger::new(Some((through_relay, rx)), "me".into());
    let keys = vec!["run@1:9:0:0".to_string()];
    // The claim lands; its answer does not come back.
    relay.set(Link::BlackHole);
    direct.claim_deliveries(&keys, "me", None).await.unwrap();
    assert_eq!(
        ledger.claim(&keys, true).await,
        vec![DeliveryClaim::Unavailable]
    );
    relay.set(Link::Open);
    assert_eq!(
        ledger.claim(&keys, true).await,
        vec![DeliveryClaim::Mine],
        "its own unanswered claim, never sent"
    );
    // Another daemon's claim stays in doubt.
    let other = vec!["run@1:10:0:0".to_string()];
    direct.claim_deliveries(&other, "peer", None).await.unwrap();
    assert_eq!(
        ledger.claim(&other, true).await,
        vec![DeliveryClaim::InDoubt]
    );
}

/// After Redis lost its data, a daemon writes back the message parts it
/// knows were sent: a run a peer took over and sent is then not sent
/// again by a daemon that held it through the loss (the Jepsen run sent
/// three messages twice between two restarts without data).
#[tokio::test]
async fn the_parts_a_daemon_sent_are_written_back_after_redis_lost_its_data() {
    use herald_actors::health::Mode;
    use herald_actors::ledger::DeliveryLedger;
    use herald_actors::redis_backend::DeliveryClaim;

    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let (_tx, rx) = tokio::sync::watch::channel(health(Mode::Online));
    let ledger = DeliveryLedger::new(Some((s.clone(), rx)), "me".into());
    let keys: Vec<String> = (0..3).map(|i| format!("run@1:{i}:0:0")).collect();
    assert_eq!(
        ledger.claim(&keys, true).await,
        vec![DeliveryClaim::Mine; 3]
    );
    ledger.settle(keys[0].clone(), true).await;
    ledger.settle(keys[1].clone(), true).await;
    // The third went out and failed for sure: released, not sent.
    ledger.settle(keys[2].clone(), false).await;
    assert_eq!(ledger.sent_keys(), keys[..2].to_vec());
    let mut conn = deadpool_redis::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = deadpool_redis::redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    s.restore(&[], &[], &ledger.sent_keys(), "me", "e2")
        .await
        .unwrap();
    assert_eq!(
        s.claim_deliveries(&keys, "peer", None).await.unwrap(),
        vec![
            DeliveryClaim::Sent,
            DeliveryClaim::Sent,
            DeliveryClaim::Mine
        ]
    );
}

/// A Redis restarted empty holds no `sent` marks until every daemon wrote
/// back what it sent: a delivery claim meanwhile would find a part a peer
/// sent free. Claims are fenced by the epoch (refused before this daemon
/// notices the loss) and held while the daemons write back (the Jepsen
/// run sent a message twice: a held part claimed in the new, empty Redis
/// a moment before its peer wrote back that it had sent it).
#[tokio::test]
async fn a_delivery_claim_after_redis_lost_its_data_waits_for_the_write_back() {
    use herald_actors::health::Mode;
    use herald_actors::ledger::{ClaimEpoch, DeliveryLedger};
    use herald_actors::redis_backend::{BackendError, DeliveryClaim};

    let server = RedisServer::start();
    let s = store(&server, StoreLimits::default());
    let mut conn = redis_conn(&server).await;
    let epoch_conn = conn.clone();
    let set_epoch = |epoch: &'static str| {
        let mut conn = epoch_conn.clone();
        async move {
            let _: () = deadpool_redis::redis::cmd("SET")
                .arg("herald:epoch")
                .arg(epoch)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    set_epoch("e1").await;
    let (_tx, rx) = tokio::sync::watch::channel(health(Mode::Online));
    let me = DeliveryLedger::new(Some((s.clone(), rx.clone())), "me".into());
    let peer = DeliveryLedger::new(Some((s.clone(), rx)), "peer".into());
    me.set_epoch(ClaimEpoch::Settled("e1".into()));
    peer.set_epoch(ClaimEpoch::Settled("e1".into()));
    let keys = vec!["run@1:0:0:0".to_string()];
    // The peer took the run over and sent it.
    assert_eq!(peer.claim(&keys, true).await, vec![DeliveryClaim::Mine]);
    peer.settle(keys[0].clone(), true).await;

    let _: () = deadpool_redis::redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    // Before this daemon notices: refused by the epoch, nothing claimed.
    assert!(matches!(
        s.claim_deliveries(&keys, "me", Some("e1")).await,
        Err(BackendError::EpochChanged)
    ));
    assert_eq!(me.claim(&keys, true).await, vec![DeliveryClaim::Held]);
    assert_eq!(me.claim(&keys, false).await, vec![DeliveryClaim::Held]);
    set_epoch("e2").await;
    assert_eq!(me.claim(&keys, true).await, vec![DeliveryClaim::Held]);
    // Noticed: held while the daemons write back.
    me.set_epoch(ClaimEpoch::Restoring);
    assert!(!me.can_claim());
    assert_eq!(me.claim(&keys, true).await, vec![DeliveryClaim::Held]);
    s.restore(&[], &[], &peer.sent_keys(), "peer", "e2")
        .await
        .unwrap();
    me.set_epoch(ClaimEpoch::Settled("e2".into()));
    assert!(me.can_claim());
    assert_eq!(me.claim(&keys, true).await, vec![DeliveryClaim::Sent]);
    let fresh = vec!["run@1:1:0:0".to_string()];
    assert_eq!(me.claim(&fresh, true).await, vec![DeliveryClaim::Mine]);
}
