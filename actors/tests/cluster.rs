//! Several daemons on one real redis-server, and Redis outages.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_actors::health::Mode;
use herald_actors::job::{JobId, JobSpec};
use herald_actors::memory::{RecordQuery, StoreLimits};
use herald_actors::notifier::DryRun;
use herald_actors::record::RunStatus;
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_actors::{Herald, TreeConfig, spawn_tree};
use herald_testkit::RedisServer;
use support::{Calls, Relay, coded, counting, wait_for};

async fn daemon(server: &RedisServer, jobs: Vec<JobSpec>, calls: &Calls) -> Herald {
    daemon_at(server.url(), None, jobs, calls).await
}

async fn daemon_at(url: String, id: Option<&str>, jobs: Vec<JobSpec>, calls: &Calls) -> Herald {
    let config = TreeConfig {
        redis: Some(RedisSettings::new(url, "herald")),
        daemon_id: id.map(str::to_string),
        ..TreeConfig::default()
    };
    spawn_tree(config, jobs, counting(calls), Arc::new(DryRun))
        .await
        .expect("daemon starts")
}

fn redis(server: &RedisServer) -> RedisStore {
    RedisStore::new(
        connect(&RedisSettings::new(server.url(), "herald")).unwrap(),
        "herald",
        StoreLimits::default(),
    )
}

async fn wait_mode(herald: &Herald, mode: Mode, within: Duration) -> Duration {
    let started = Instant::now();
    wait_for(&format!("mode {mode:?}"), within, || async {
        (herald.mode() == mode).then_some(())
    })
    .await;
    started.elapsed()
}

/// Ticks (scheduled instants) that ran, from the counting handler.
fn ticks(calls: &Calls) -> Vec<DateTime<Utc>> {
    let mut t: Vec<_> = calls.0.lock().unwrap().keys().map(|(_, at)| *at).collect();
    t.sort();
    t
}

#[tokio::test]
async fn two_daemons_on_one_redis_run_each_tick_exactly_once() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let a = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    let b = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    assert_eq!((a.mode(), b.mode()), (Mode::Online, Mode::Online));
    wait_for("30 ticks", Duration::from_secs(40), || async {
        (calls.total() >= 30).then_some(())
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(calls.max_per_tick(), 1, "a tick ran on both daemons");
    let t = ticks(&calls);
    let span = (*t.last().unwrap() - t[0]).num_seconds() + 1;
    assert_eq!(
        t.len() as i64,
        span,
        "no tick was missed between the first and the last"
    );
}

#[tokio::test]
async fn a_redis_outage_goes_offline_and_back_and_every_record_reaches_redis() {
    let mut server = RedisServer::start();
    let calls = Calls::default();
    let herald = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    wait_for("a first run", Duration::from_secs(5), || async {
        (calls.total() >= 1).then_some(())
    })
    .await;

    server.stop();
    let stopped_at = Utc::now();
    let took = wait_mode(&herald, Mode::Offline, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "offline after {took:?}");
    let before = calls.total();
    wait_for("runs while offline", Duration::from_secs(10), || async {
        (calls.total() >= before + 3).then_some(())
    })
    .await;
    // Runs recorded while Redis was down (earlier ones went to the old
    // server, which restarts empty: no persistence in tests).
    let offline_runs: Vec<_> = herald
        .store
        .query(RecordQuery {
            status: Some(RunStatus::Success),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.created_at >= stopped_at)
        .collect();
    assert!(offline_runs.len() >= 3, "{offline_runs:?}");

    server.restart();
    let took = wait_mode(&herald, Mode::Online, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "online after {took:?}");
    // the restarted server is empty: every record seen offline must arrive
    let direct = redis(&server);
    wait_for("buffered records in redis", Duration::from_secs(5), || {
        let (direct, offline_runs) = (direct.clone(), offline_runs.clone());
        async move {
            for r in &offline_runs {
                if direct.record(&r.run_id).await.ok()??.status != RunStatus::Success {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    assert_eq!(herald.store.stats().await.unwrap().pending_writes, 0);
    // Redis came back empty: the job is written back and keeps firing.
    wait_for(
        "the job written back to redis",
        Duration::from_secs(5),
        || {
            let direct = direct.clone();
            async move {
                direct
                    .jobs()
                    .await
                    .ok()?
                    .iter()
                    .any(|j| j.definition.id == "every-second")
                    .then_some(())
            }
        },
    )
    .await;
    let after = calls.total();
    wait_for(
        "runs after redis returned",
        Duration::from_secs(10),
        || async { (calls.total() >= after + 2).then_some(()) },
    )
    .await;
    assert!(
        herald
            .scheduler
            .jobs()
            .await
            .unwrap()
            .iter()
            .any(|j| &*j.spec.id == "every-second"),
        "the job is still scheduled"
    );
    herald.shutdown().await;
}

#[tokio::test]
async fn a_redis_that_accepts_but_never_answers_is_offline_too() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let herald = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    server.freeze();
    let took = wait_mode(&herald, Mode::Offline, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "offline after {took:?}");
    let before = calls.total();
    wait_for(
        "runs while redis is silent",
        Duration::from_secs(10),
        || async { (calls.total() >= before + 2).then_some(()) },
    )
    .await;
    server.thaw();
    let took = wait_mode(&herald, Mode::Online, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "online after {took:?}");
    herald.shutdown().await;
}

#[tokio::test]
async fn a_tick_whose_claim_gets_no_answer_still_runs_once() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let herald = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    wait_for("a first run", Duration::from_secs(5), || async {
        (calls.total() >= 1).then_some(())
    })
    .await;
    // Go silent just before a tick, so its claim reaches a Redis that takes
    // it but answers only after the claim and its retry have timed out.
    let into_second = Utc::now().timestamp_subsec_millis() as u64;
    tokio::time::sleep(Duration::from_millis((1_900 - into_second) % 1_000)).await;
    server.freeze();
    let frozen_at = Utc::now();
    wait_mode(&herald, Mode::Offline, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.thaw();
    wait_mode(&herald, Mode::Online, Duration::from_secs(3)).await;
    let before = calls.total();
    wait_for("runs after the outage", Duration::from_secs(10), || async {
        (calls.total() >= before + 3).then_some(())
    })
    .await;
    let skipped = herald
        .store
        .skipped(Some("every-second".into()), 1_000)
        .await
        .unwrap();
    herald.shutdown().await;
    assert_eq!(calls.max_per_tick(), 1, "a tick ran twice");
    // Every tick from the first to the last ran, or was recorded skipped
    // (overlap: the unanswered tick counts as running until it is settled).
    let ran = ticks(&calls);
    let (first, last) = (ran[0], *ran.last().unwrap());
    let mut unaccounted = Vec::new();
    let mut at = first;
    while at <= last {
        let skip = skipped.iter().any(|s| s.first <= at && at <= s.last);
        if !ran.contains(&at) && !skip {
            unaccounted.push(at);
        }
        at += chrono::TimeDelta::seconds(1);
    }
    assert!(unaccounted.is_empty(), "ticks lost: {unaccounted:?}");
    let tick_after_freeze = frozen_at + chrono::TimeDelta::milliseconds(100);
    let tick_after_freeze = DateTime::from_timestamp(tick_after_freeze.timestamp(), 0).unwrap();
    assert!(
        ran.contains(&tick_after_freeze),
        "the tick whose claim got no answer ran ({tick_after_freeze}); ran {ran:?}"
    );
}

#[tokio::test]
async fn two_daemons_through_a_redis_outage_run_no_tick_twice() {
    let mut server = RedisServer::start();
    let calls = Calls::default();
    let a = daemon(&server, every_second_jobs(), &calls).await;
    let b = daemon(&server, every_second_jobs(), &calls).await;
    // both know each other before the outage
    both_see_two_peers(&a, &b).await;
    server.stop();
    wait_mode(&a, Mode::Offline, Duration::from_secs(3)).await;
    wait_mode(&b, Mode::Offline, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart();
    wait_mode(&a, Mode::Online, Duration::from_secs(3)).await;
    wait_mode(&b, Mode::Online, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(calls.max_per_tick(), 1, "a tick ran twice");
    assert_eq!(calls.distinct_jobs(), 6, "every job kept running");
}

/// Sleeps until the first instant from now that is `ms` milliseconds
/// past a whole second (negative: before one).
async fn until_past_second(ms: i64) {
    let now = Utc::now();
    let offset = chrono::TimeDelta::milliseconds(ms);
    let mut at = DateTime::from_timestamp(now.timestamp(), 0).unwrap() + offset;
    while at <= now {
        at += chrono::TimeDelta::seconds(1);
    }
    tokio::time::sleep((at - now).to_std().unwrap_or_default()).await;
}

fn every_second_jobs() -> Vec<JobSpec> {
    (0..6)
        .map(|i| coded(&format!("job-{i}"), "* * * * * *", "count"))
        .collect()
}

async fn both_see_two_peers(a: &Herald, b: &Herald) {
    wait_for(
        "both daemons see two peers",
        Duration::from_secs(5),
        || async {
            (a.health().borrow().peers.len() == 2 && b.health().borrow().peers.len() == 2)
                .then_some(())
        },
    )
    .await;
}

/// The ids of the jobs of [`every_second_jobs`] that `daemon` owns while
/// offline, of the two daemons [`two_behind_relays`] starts.
fn owned_offline_by(daemon: &str) -> Vec<String> {
    let peers = ["daemon-a", "daemon-b"].map(String::from).into();
    every_second_jobs()
        .into_iter()
        .map(|j| j.id.to_string())
        .filter(|j| herald_actors::health::owner(j, &peers) == Some(daemon))
        .collect()
}

/// Cuts both relays and waits until both daemons are offline.
async fn cut_both(pair: &[(Herald, Relay); 2]) {
    for (_, relay) in pair {
        relay.cut();
    }
    for (herald, _) in pair {
        wait_mode(herald, Mode::Offline, Duration::from_secs(3)).await;
    }
}

/// Two daemons, each reaching Redis through a relay of its own (so that
/// one can be cut off, or come back, apart from the other), once both
/// have seen each other.
async fn two_behind_relays(server: &RedisServer, calls: &Calls) -> [(Herald, Relay); 2] {
    let relay_a = Relay::start(server.port()).await;
    let relay_b = Relay::start(server.port()).await;
    // Named, so that which jobs each owns offline is known (see
    // `two_behind_relays_share_the_jobs`).
    let a = daemon_at(relay_a.url(), Some("daemon-a"), every_second_jobs(), calls).await;
    let b = daemon_at(relay_b.url(), Some("daemon-b"), every_second_jobs(), calls).await;
    both_see_two_peers(&a, &b).await;
    [(a, relay_a), (b, relay_b)]
}

/// From the first run of each job to `until`, every tick ran or was
/// recorded skipped (overlap: the run before was not seen to end, which
/// across daemons and an outage can happen; offline: lost with a dead
/// owner).
async fn every_tick_ran_or_was_skipped(server: &RedisServer, calls: &Calls, until: DateTime<Utc>) {
    let skipped = redis(server).skipped(None, 10_000).await.unwrap();
    let ran = calls.0.lock().unwrap().clone();
    for job in every_second_jobs() {
        let job = job.id.to_string();
        let mut at = ran
            .keys()
            .filter(|(j, _)| *j == job)
            .map(|(_, at)| *at)
            .min()
            .unwrap();
        while at <= until {
            let accounted = ran.contains_key(&(job.clone(), at))
                || skipped
                    .iter()
                    .any(|s| s.job_id == job && s.first <= at && at <= s.last);
            assert!(accounted, "{job}'s tick {at} neither ran nor was skipped");
            at += chrono::TimeDelta::seconds(1);
        }
    }
}

#[test]
fn two_behind_relays_share_the_jobs() {
    // The outage tests need each daemon to own some jobs offline.
    let (a, b) = (owned_offline_by("daemon-a"), owned_offline_by("daemon-b"));
    assert!(!a.is_empty() && !b.is_empty(), "a owns {a:?}, b owns {b:?}");
    assert_eq!(a.len() + b.len(), every_second_jobs().len());
}

#[tokio::test]
async fn a_daemon_back_from_an_outage_leaves_a_later_peer_its_ticks() {
    // `a` sees Redis again two seconds or more before `b`. Until it does, `b`
    // runs the ticks of the jobs it owns offline; `a`, online, must leave
    // those to it rather than claim and run them too, and must not take
    // `b`'s last heartbeat from before the outage for a sign it is back.
    let server = RedisServer::start();
    let calls = Calls::default();
    let pair = two_behind_relays(&server, &calls).await;
    cut_both(&pair).await;
    let [(a, relay_a), (b, relay_b)] = pair;
    // Both offline together: each runs only its own jobs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay_a.open();
    wait_mode(&a, Mode::Online, Duration::from_secs(3)).await;
    // An operator saves one of `b`'s jobs, unchanged, through `a`: it
    // stays `b`'s (only a job new or enabled from disabled fires here).
    let b_job = &owned_offline_by("daemon-b")[0];
    a.scheduler
        .upsert_job(coded(b_job, "* * * * * *", "count"))
        .await
        .unwrap();
    // Two ticks or more pass while `a` is back and `b` is not; the last
    // comes after `a`'s resync would have come without waiting for `b`
    // (a second after `a`'s return).
    for _ in 0..3 {
        until_past_second(300).await;
    }
    relay_b.open();
    wait_mode(&b, Mode::Online, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Ticks up to here have had a second to start.
    let checked_until = Utc::now() - chrono::TimeDelta::seconds(1);
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(calls.max_per_tick(), 1, "a tick ran on both daemons");
    every_tick_ran_or_was_skipped(&server, &calls, checked_until).await;
}

#[tokio::test]
async fn a_daemon_back_from_an_outage_takes_over_the_jobs_of_a_peer_that_died_in_it() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let b_owns = owned_offline_by("daemon-b");
    let pair = two_behind_relays(&server, &calls).await;
    cut_both(&pair).await;
    let [(a, relay_a), (b, _)] = pair;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // `b` dies offline: what it ran never reaches Redis.
    b.shutdown().await;
    relay_a.open();
    wait_mode(&a, Mode::Online, Duration::from_secs(3)).await;
    let back = Utc::now();
    // `a` waits for `b` for the heartbeat TTL, then runs its jobs too.
    wait_for(
        "b's jobs to run on a again",
        Duration::from_secs(15),
        || async {
            let ran = calls.0.lock().unwrap();
            b_owns
                .iter()
                .all(|job| {
                    ran.keys()
                        .any(|(j, at)| j == job && *at > back + chrono::TimeDelta::seconds(6))
                })
                .then_some(())
        },
    )
    .await;
    let checked_until = Utc::now() - chrono::TimeDelta::seconds(1);
    a.shutdown().await;
    assert_eq!(calls.max_per_tick(), 1, "a tick ran twice");
    every_tick_ran_or_was_skipped(&server, &calls, checked_until).await;
}

#[tokio::test]
async fn operator_edits_survive_a_restart_and_orphans_are_not_run() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let first = daemon(
        &server,
        vec![
            coded("edited", "0 0 1 1 *", "count"),
            coded("dropped", "0 0 1 1 *", "count"),
        ],
        &calls,
    )
    .await;
    let mut edit = coded("edited", "0 12 * * *", "count");
    edit.enabled = false;
    first.scheduler.upsert_job(edit).await.unwrap();
    first.shutdown().await;

    // restart with the same definition of "edited" and without "dropped"
    let second = daemon(&server, vec![coded("edited", "0 0 1 1 *", "count")], &calls).await;
    let views = second.scheduler.jobs().await.unwrap();
    assert_eq!(views.len(), 1, "the orphaned job is not scheduled");
    assert_eq!(views[0].spec.schedule.expr().source(), "0 12 * * *");
    assert!(!views[0].spec.enabled);
    let stored = redis(&server).jobs().await.unwrap();
    let dropped = stored
        .iter()
        .find(|j| j.definition.id == "dropped")
        .expect("kept in redis");
    assert!(dropped.orphaned);
    second.shutdown().await;
}

#[tokio::test]
async fn retries_wait_in_redis_and_the_queue_empties_when_runs_settle() {
    let server = RedisServer::start();
    let mut registry = herald_actors::handler::Registry::new();
    registry.register(
        "flaky",
        |ctx: herald_actors::handler::RunContext| async move {
            if ctx.attempt < 3 {
                Err(herald_actors::handler::JobError::new(format!(
                    "attempt {} failed",
                    ctx.attempt
                )))
            } else {
                Ok(herald_actors::record::Counts::default())
            }
        },
    );
    let mut job = coded("flaky", "* * * * * *", "flaky");
    job.retry = support::quick_retry(3);
    job.overlap = herald_actors::job::OverlapPolicy::Skip;
    let config = TreeConfig {
        redis: Some(RedisSettings::new(server.url(), "herald")),
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, vec![job], registry, Arc::new(DryRun))
        .await
        .unwrap();
    let direct = redis(&server);
    let done = wait_for(
        "a run to succeed on its third attempt",
        Duration::from_secs(15),
        || {
            let direct = direct.clone();
            async move {
                let recs = direct
                    .query(&RecordQuery {
                        status: Some(RunStatus::Success),
                        limit: 10,
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                recs.into_iter().find(|r| r.attempt == 3)
            }
        },
    )
    .await;
    assert_eq!(done.error, None);
    herald
        .scheduler
        .set_enabled("flaky".into(), false)
        .await
        .unwrap();
    wait_for("the queue to empty", Duration::from_secs(15), || {
        let direct = direct.clone();
        async move { (direct.queue_depth().await.ok()? == (0, 0, 0)).then_some(()) }
    })
    .await;
    // A settled run also leaves its job's in-flight set (the set itself,
    // not the count, which passes over members whose record is final).
    let url = server.url();
    wait_for("the in-flight set to empty", Duration::from_secs(5), || {
        let url = url.clone();
        async move {
            let mut conn = deadpool_redis::redis::Client::open(url)
                .ok()?
                .get_multiplexed_async_connection()
                .await
                .ok()?;
            let members: u64 = deadpool_redis::redis::cmd("SCARD")
                .arg("herald:inflight:flaky")
                .query_async(&mut conn)
                .await
                .ok()?;
            (members == 0).then_some(())
        }
    })
    .await;
    herald.shutdown().await;
}

/// Daemon A enqueues runs that daemon B executes; A's memory still holds
/// them as PENDING. When A's pool restarts it must leave queued runs to the
/// queue, not run them again from its stale memory.
#[tokio::test]
async fn a_restarted_pool_does_not_rerun_queued_runs_another_daemon_ran() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let a = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    let b = daemon(
        &server,
        vec![coded("every-second", "* * * * * *", "count")],
        &calls,
    )
    .await;
    wait_for("runs on both daemons", Duration::from_secs(15), || async {
        (calls.total() >= 6).then_some(())
    })
    .await;
    a.kill(herald_actors::supervisor::Child::WorkerPool);
    let before = calls.total();
    wait_for(
        "runs after the restart",
        Duration::from_secs(10),
        || async { (calls.total() >= before + 3).then_some(()) },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(calls.max_per_tick(), 1, "a run ran twice");
}

#[tokio::test]
async fn the_overlap_policy_holds_across_daemons() {
    let server = RedisServer::start();
    let slow = || {
        let mut r = herald_actors::handler::Registry::new();
        r.register("slow", |_ctx: herald_actors::handler::RunContext| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(herald_actors::record::Counts::default())
        });
        r
    };
    let config = || TreeConfig {
        redis: Some(RedisSettings::new(server.url(), "herald")),
        ..TreeConfig::default()
    };
    // overlap = skip (the default)
    let job = || vec![coded("slow", "* * * * * *", "slow")];
    let a = spawn_tree(config(), job(), slow(), Arc::new(DryRun))
        .await
        .unwrap();
    let b = spawn_tree(config(), job(), slow(), Arc::new(DryRun))
        .await
        .unwrap();
    let direct = redis(&server);
    let done = wait_for("four finished runs", Duration::from_secs(20), || {
        let direct = direct.clone();
        async move {
            let recs = direct
                .query(&RecordQuery {
                    status: Some(RunStatus::Success),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .ok()?;
            (recs.len() >= 4).then_some(recs)
        }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    let mut spans: Vec<_> = done
        .iter()
        .filter_map(|r| {
            Some((
                r.started_at?,
                r.finished_at?,
                r.daemon.clone(),
                r.run_id.0.clone(),
            ))
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "runs overlapped: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let daemons: std::collections::BTreeSet<_> = spans.iter().map(|s| s.2.clone()).collect();
    eprintln!("runs by daemon: {daemons:?}");
}

/// An edit made through one daemon (create, change, disable, delete)
/// reaches another daemon on the same Redis within about a second: every
/// job write raises `{p}:jobs:version`, which each daemon's heartbeat reads.
#[tokio::test]
async fn an_edit_through_one_daemon_reaches_the_other_within_a_second() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let a = daemon(&server, Vec::new(), &calls).await;
    let b = daemon(&server, Vec::new(), &calls).await;
    let job_on_b = |id: &'static str| {
        let b = &b;
        move || async move {
            b.scheduler
                .jobs()
                .await
                .ok()?
                .into_iter()
                .find(|j| &*j.spec.id == id)
                .map(|j| j.spec)
        }
    };
    let custom: herald_actors::custom_jobs::CustomJob = serde_json::from_value(serde_json::json!({
        "id": "shared",
        "schedule": "0 9 * * *",
        "template": "hi",
    }))
    .unwrap();
    let started = Instant::now();
    a.custom_jobs.create(custom.clone()).await.unwrap();
    wait_for(
        "b sees the new job",
        Duration::from_secs(3),
        job_on_b("shared"),
    )
    .await;
    // About a heartbeat (200 ms) plus a resync; the bound is loose for a
    // loaded CI machine.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");

    let mut edited = custom.clone();
    edited.schedule = "30 18 * * *".into();
    a.custom_jobs.update("shared", edited).await.unwrap();
    wait_for(
        "b sees the new schedule",
        Duration::from_secs(3),
        || async {
            job_on_b("shared")()
                .await
                .filter(|s| s.schedule.expr().to_string() == "30 18 * * *")
        },
    )
    .await;
    let next = b
        .scheduler
        .jobs()
        .await
        .unwrap()
        .into_iter()
        .find(|j| &*j.spec.id == "shared")
        .and_then(|j| j.next_fire)
        .unwrap();
    assert_eq!(
        next.format("%H:%M").to_string(),
        "18:30",
        "b re-armed its timer"
    );

    a.custom_jobs.set_enabled("shared", false).await.unwrap();
    wait_for("b sees it disabled", Duration::from_secs(3), || async {
        job_on_b("shared")().await.filter(|s| !s.enabled)
    })
    .await;

    a.custom_jobs.delete("shared").await.unwrap();
    wait_for("b drops it", Duration::from_secs(3), || async {
        job_on_b("shared")().await.is_none().then_some(())
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Prefetching is for short runs only: with long runs, one daemon does not
/// take entries off the queue that another, idle, daemon could run.
#[tokio::test]
async fn long_queued_runs_spread_over_daemons() {
    use herald_actors::handler::{Registry, RunContext};
    use herald_actors::job::JobKind;
    use herald_actors::record::{Counts, ExecutionRecord, RunId, Trigger};
    use herald_actors::schedule::Schedule;

    let server = RedisServer::start();
    let store = redis(&server);
    store.ensure_queue().await.unwrap();
    let daemon_with_one_worker = || async {
        let mut registry = Registry::new();
        registry.register("slow", |_ctx: RunContext| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Counts::default())
        });
        let job = JobSpec::new(
            "slow",
            Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
            JobKind::Coded {
                handler: "slow".into(),
            },
        );
        let config = TreeConfig {
            workers: 1,
            redis: Some(RedisSettings::new(server.url(), "herald")),
            ..TreeConfig::default()
        };
        spawn_tree(config, vec![job], registry, Arc::new(DryRun))
            .await
            .expect("daemon starts")
    };
    let a = daemon_with_one_worker().await;
    let b = daemon_with_one_worker().await;
    let base = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let records: Vec<ExecutionRecord> = (0..10)
        .map(|i| {
            let at = base + chrono::TimeDelta::seconds(i);
            ExecutionRecord::pending(
                RunId::for_tick("slow", at),
                "slow",
                Trigger::Schedule,
                at,
                1,
                Utc::now(),
            )
        })
        .collect();
    store.enqueue(&records, "test", None).await.unwrap();
    let finished = wait_for("all 10 runs", Duration::from_secs(20), || async {
        let mut done = Vec::new();
        for r in &records {
            let rec = store.record(&r.run_id).await.ok()??;
            if !rec.status.is_terminal() {
                return None;
            }
            done.push(rec);
        }
        Some(done)
    })
    .await;
    let a_daemon = a.daemon_id().to_string();
    a.shutdown().await;
    b.shutdown().await;
    let on_a = finished
        .iter()
        .filter(|r| r.daemon.as_deref() == Some(a_daemon.as_str()))
        .count();
    assert!(
        (3..=7).contains(&on_a),
        "{on_a} of 10 runs on one daemon: {:?}",
        finished.iter().map(|r| &r.daemon).collect::<Vec<_>>()
    );
}

/// A job with overlap `allow` is claimed and queued ahead of its tick
/// (its PENDING record is in Redis before the tick), and its run starts on
/// the tick, never before it.
#[tokio::test]
async fn an_allow_job_is_queued_ahead_and_starts_on_its_tick() {
    use herald_actors::record::RunId;

    let server = RedisServer::start();
    let store = redis(&server);
    let calls = Calls::default();
    let (job, tick) = allow_job_ticking_once_soon();
    let herald = daemon(&server, vec![job], &calls).await;
    let run = RunId::for_tick("ahead", tick);
    // 300 ms before the tick, the run waits, queued and claimed
    let before = tick - chrono::TimeDelta::milliseconds(300);
    tokio::time::sleep((before - Utc::now()).to_std().unwrap()).await;
    let pending = store.record(&run).await.unwrap().expect("queued ahead");
    assert_eq!(pending.status, RunStatus::Pending);
    assert_eq!(calls.total(), 0, "started before its tick");
    let done = support::finished(&herald, &run).await;
    herald.shutdown().await;
    assert_eq!(done.status, RunStatus::Success);
    let started = done.started_at.unwrap();
    assert!(
        started >= tick,
        "started at {started}, before its tick {tick}"
    );
    assert_eq!(calls.total(), 1);
}

/// A daemon shutting down hands the runs it holds for an upcoming tick
/// back to the queue: another daemon runs them on time, not a visibility
/// timeout later.
#[tokio::test]
async fn runs_held_by_a_stopping_daemon_run_on_time_elsewhere() {
    use herald_actors::record::RunId;

    let server = RedisServer::start();
    let store = redis(&server);
    let calls = Calls::default();
    let (job, tick) = allow_job_ticking_once_soon();
    let a = daemon(&server, vec![job.clone()], &calls).await;
    let run = RunId::for_tick("ahead", tick);
    // A has queued and read the run ahead of its tick
    wait_for(
        "the run to be queued ahead",
        Duration::from_secs(5),
        || async {
            let (_, pending, _) = store.queue_depth().await.ok()?;
            (pending == 1).then_some(())
        },
    )
    .await;
    assert!(Utc::now() < tick - chrono::TimeDelta::milliseconds(200));
    let b = daemon(&server, vec![job], &calls).await;
    let a_id = a.daemon_id().to_string();
    a.shutdown().await;
    let done = support::finished_within(&b, &run, Duration::from_secs(10)).await;
    b.shutdown().await;
    assert_eq!(done.status, RunStatus::Success);
    assert_ne!(done.daemon.as_deref(), Some(a_id.as_str()));
    let late = done.started_at.unwrap() - tick;
    assert!(
        late < chrono::TimeDelta::seconds(2),
        "started {late} after its tick: it waited for the visibility timeout"
    );
    assert_eq!(calls.total(), 1);
}

/// Twenty thousand jobs sync within the default response timeout (written
/// and read in slices, not one pipeline), come up online, and a restart
/// with the same definitions writes none of them again.
#[tokio::test]
async fn many_jobs_sync_online_and_a_restart_rewrites_none() {
    let server = RedisServer::start();
    let store = redis(&server);
    let calls = Calls::default();
    let jobs: Vec<JobSpec> = (0..20_000)
        .map(|i| {
            coded(
                &format!("daily-{i}"),
                &format!("{} {} * * *", i % 60, (i / 60) % 24),
                "count",
            )
        })
        .collect();
    let first = daemon(&server, jobs.clone(), &calls).await;
    assert_eq!(first.mode(), Mode::Online);
    assert_eq!(store.jobs().await.unwrap().len(), 20_000);
    let version = store.jobs_version().await.unwrap();
    assert!(version > 0);
    first.shutdown().await;
    let second = daemon(&server, jobs, &calls).await;
    assert_eq!(second.mode(), Mode::Online);
    assert_eq!(
        store.jobs_version().await.unwrap(),
        version,
        "a restart rewrote job definitions"
    );
    second.shutdown().await;
}

/// A job with overlap `allow` whose only tick is a whole second 3 s from
/// now (time to fire it ahead and look before the tick).
fn allow_job_ticking_once_soon() -> (JobSpec, DateTime<Utc>) {
    let tick = DateTime::from_timestamp(Utc::now().timestamp() + 3, 0).unwrap();
    let mut job = coded(
        "ahead",
        &tick.format("%S %M %H %d %m *").to_string(),
        "count",
    );
    job.overlap = herald_actors::job::OverlapPolicy::Allow;
    (job, tick)
}

#[tokio::test]
async fn a_graceful_stop_flushes_every_pending_write_not_just_one_slice() {
    let server = RedisServer::start();
    let calls = Calls::default();
    let herald = daemon(&server, Vec::new(), &calls).await;
    // More than one flush slice (10 batches of 1,000) pending at the stop.
    let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let ids: Vec<JobId> = (0..25_000).map(|i| format!("job-{i}").into()).collect();
    for id in &ids {
        herald.store.set_last_tick(id.clone(), at);
    }
    herald.shutdown().await;
    let ticks = redis(&server).last_ticks(&ids).await.unwrap();
    assert_eq!(ticks.len(), ids.len(), "last ticks in redis after the stop");
    assert!(ticks.values().all(|t| *t == at));
}

/// Runs due at the same instant start earliest deadline first: with one
/// worker, a per-second job's run goes before twenty runs of jobs whose
/// next tick is a year away, though it was fired after them (its id sorts
/// last and it is defined last).
#[tokio::test]
async fn runs_due_together_start_earliest_deadline_first() {
    per_second_runs_start_before_yearly(20, 1, TreeConfig::default().max_queued).await;
}

/// More runs due at one instant than the pool's queue holds (1,500 yearly
/// and 500 per-second runs, the queue bound 1,500): every run fired ahead
/// is still read and held for its tick, so all 500 per-second runs start
/// before any yearly one. (Entries left in Redis past the bound would be
/// read only once due, and queue behind the yearly runs.)
#[tokio::test]
async fn runs_due_together_beyond_the_queue_bound_still_start_earliest_deadline_first() {
    per_second_runs_start_before_yearly(1_500, 500, 1_500).await;
}

/// One worker; `yearly` jobs whose only tick is a few seconds ahead and
/// `per_second` jobs (ids sorting, and defined, after the yearly ones):
/// every per-second run of that tick must start before any yearly one.
async fn per_second_runs_start_before_yearly(yearly: usize, per_second: usize, max_queued: usize) {
    use herald_actors::job::OverlapPolicy;
    use herald_actors::record::RunId;

    let server = RedisServer::start();
    let calls = Calls::default();
    let tick = DateTime::from_timestamp(Utc::now().timestamp() + 4, 0).unwrap();
    let once = tick.format("%S %M %H %d %m *").to_string();
    let yearly_ids: Vec<String> = (0..yearly).map(|i| format!("yearly-{i:04}")).collect();
    let per_second_ids: Vec<String> = (0..per_second)
        .map(|i| format!("z-second-{i:03}"))
        .collect();
    let mut jobs: Vec<JobSpec> = yearly_ids
        .iter()
        .map(|id| coded(id, &once, "count"))
        .collect();
    jobs.extend(
        per_second_ids
            .iter()
            .map(|id| coded(id, "* * * * * *", "count")),
    );
    for job in &mut jobs {
        job.overlap = OverlapPolicy::Allow;
    }
    let config = TreeConfig {
        redis: Some(RedisSettings::new(server.url(), "herald")),
        workers: 1,
        max_queued,
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, jobs, counting(&calls), Arc::new(DryRun))
        .await
        .expect("daemon starts");
    let starts = |ids: Vec<String>| {
        let herald = &herald;
        async move {
            let mut starts = Vec::new();
            for id in ids {
                let record = support::finished(herald, &RunId::for_tick(&id, tick)).await;
                starts.push(record.started_at.expect("started"));
            }
            starts
        }
    };
    let per_second_starts = starts(per_second_ids).await;
    let yearly_starts = starts(yearly_ids).await;
    herald.shutdown().await;
    let last_per_second = per_second_starts
        .into_iter()
        .max()
        .expect("per-second runs");
    let first_yearly = yearly_starts.into_iter().min().expect("yearly runs");
    assert!(
        last_per_second < first_yearly,
        "a per-second run started at {last_per_second}, after a yearly run at {first_yearly}"
    );
    assert!(last_per_second >= tick && first_yearly >= tick);
}
