//! Several real daemons on one Redis, under the default job settings
//! (misfire `skip`, overlap `skip`): what one daemon alone never shows.
//!
//! Each test starts two `herald run` processes on a `redis-server` of its
//! own and the fake Bot API, and judges them only by what an operator can
//! read afterwards: the records and skipped-tick entries in Redis, and the
//! messages the Bot API received.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use herald_actors::memory::{RecordQuery, StoreLimits};
use herald_actors::record::{ExecutionRecord, RunId, RunStatus, SkippedTicks, Trigger};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_testkit::telegram::{FakeTelegram, Fault};
use herald_testkit::{RedisServer, free_port, log_tail};
use support::{Daemon, DaemonConfig, ceil_second};

const TOKEN: &str = "daemons-test-admin-token";
/// The first of the every-second jobs; job `tick-{j}` messages chat
/// `CHAT + j`.
const JOB: &str = "tick-0";
const CHAT: i64 = 4242;

fn job_id(j: usize) -> String {
    format!("tick-{j}")
}

fn config(redis: &str, telegram: &str, http: u16, jobs: usize) -> DaemonConfig {
    (0..jobs).fold(
        DaemonConfig::new(redis, telegram, http, "DAEMONS").admin_token(TOKEN),
        |c, j| c.every_second_job(&job_id(j), &[CHAT + j as i64], &[]),
    )
}

/// Two daemons, A and B, on one Redis, both online and seeing each other.
struct Two {
    redis: RedisServer,
    fake: FakeTelegram,
    daemons: Vec<Daemon>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Two {
    /// With `jobs` every-second message jobs.
    async fn start(jobs: usize) -> Two {
        let redis = RedisServer::start_persistent();
        let fake = FakeTelegram::start().await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an http client");
        let mut daemons: Vec<Daemon> = ["A", "B"]
            .into_iter()
            .map(|name| {
                let http = free_port();
                let text = config(&redis.url(), &fake.api_url(), http, jobs).text();
                Daemon::new(name, dir.path(), &text, http)
            })
            .collect();
        for d in &mut daemons {
            d.spawn();
        }
        for d in &mut daemons {
            d.wait_for_mode(&client, "online", Duration::from_secs(20))
                .await;
            d.wait_for_peers(&client, 2, Duration::from_secs(10)).await;
        }
        Two {
            redis,
            fake,
            daemons,
            client,
            _dir: dir,
        }
    }

    fn store(&self) -> RedisStore {
        RedisStore::new(
            connect(&RedisSettings::new(self.redis.url(), "herald")).expect("a Redis pool"),
            "herald",
            StoreLimits::default(),
        )
    }

    /// How often each text reached each chat.
    fn delivered(&self) -> HashMap<(i64, String), usize> {
        let mut delivered = HashMap::new();
        for r in self.fake.sent() {
            if let (Some(chat), Some(text)) = (r.chat_id, r.text) {
                *delivered.entry((chat, text)).or_default() += 1;
            }
        }
        delivered
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.name, log_tail(&d.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to both; each must exit 0.
    async fn stop(mut self) {
        for d in &mut self.daemons {
            let code = d.terminate().await;
            assert_eq!(code, Some(0), "{} exit on SIGTERM", d.name);
        }
    }
}

/// Every whole second from `from` to `to`, both included.
fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut at = ceil_second(from);
    while at <= to {
        out.push(at);
        at += TimeDelta::seconds(1);
    }
    out
}

fn text_of(job: &str, tick: DateTime<Utc>) -> String {
    format!("tick {}", RunId::for_tick(job, tick).0)
}

/// Does this skip entry stand for the tick (an every-second job's)?
fn covers(skip: &SkippedTicks, tick: DateTime<Utc>) -> bool {
    skip.first <= tick && tick <= skip.last
}

/// Issue: with two daemons, a tick that ran was also recorded as an
/// `overlap` skip by the daemon that lost its claim (it counted the
/// winner's run of that very tick as in flight). Each tick is decided once
/// for both daemons: it runs, or it is skipped, never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_that_ran_is_never_also_recorded_as_skipped() {
    let two = Two::start(1).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to = Utc::now() - TimeDelta::seconds(2);
    let store = two.store();
    let skips = store.skipped(Some(JOB), 10_000).await.expect("skips");
    let delivered = two.delivered();
    let mut ran = 0;
    let mut false_skips = Vec::new();
    for tick in seconds(from, to) {
        let record = store
            .record(&RunId::for_tick(JOB, tick))
            .await
            .expect("a record read");
        let sent = delivered.get(&(CHAT, text_of(JOB, tick))).copied();
        assert!(
            sent.is_none_or(|n| n == 1),
            "tick {tick} sent {sent:?} times"
        );
        let skipped: Vec<&SkippedTicks> = skips.iter().filter(|s| covers(s, tick)).collect();
        match record {
            Some(r) => {
                assert_eq!(r.status, RunStatus::Success, "tick {tick}: {r:?}");
                ran += 1;
                if !skipped.is_empty() {
                    false_skips.push((tick, skipped[0].reason));
                }
            }
            None => assert!(
                !skipped.is_empty(),
                "tick {tick} neither ran nor was skipped\n{}",
                two.logs()
            ),
        }
    }
    assert!(
        false_skips.is_empty(),
        "{} of {ran} ticks that ran were also recorded skipped: {false_skips:?}",
        false_skips.len()
    );
    assert!(ran >= 7, "only {ran} ticks ran in 10 s");
    two.stop().await;
}

/// Issue: with two daemons sharing Redis, the job's offline owner recorded
/// every outage tick as an `overlap` skip and sent nothing (a peer's run,
/// counted in flight just before the outage, never ended as far as it
/// could tell). Through a Redis outage every tick still runs, once.
///
/// Which daemon last counted a peer's run before the outage is a race, so
/// the test makes it certain: a run of each job that a third daemon holds
/// (its RUNNING record and in-flight membership) is in Redis when the
/// outage begins, and both daemons have counted it (their ticks are
/// skipped for it, rightly, while it runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_keep_firing_through_a_redis_outage() {
    const JOBS: usize = 2;
    let mut two = Two::start(JOBS).await;
    // Past the heartbeat window, so both agree who owns the job offline.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let store = two.store();
    for j in 0..JOBS {
        let id = job_id(j);
        let run = RunId(format!("{id}@held-by-a-third-daemon"));
        let mut record =
            ExecutionRecord::pending(run.clone(), &id, Trigger::Manual, Utc::now(), 1, Utc::now());
        record.status = RunStatus::Running;
        store
            .put_records(&[record])
            .await
            .expect("a record written");
        let key = format!("herald:inflight:{id}");
        let added = std::process::Command::new("redis-cli")
            .args(["-p", &two.redis.port().to_string(), "SADD", &key, &run.0])
            .output()
            .expect("redis-cli runs");
        assert!(added.status.success(), "SADD {key}");
    }
    // Counted by both at their next ticks.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let outage_from = Utc::now();
    two.redis.shut_down();
    for d in &mut two.daemons {
        d.wait_for_mode(&two.client, "offline", Duration::from_secs(5))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    two.redis.start_again();
    let outage_to = Utc::now();
    for d in &mut two.daemons {
        d.wait_for_mode(&two.client, "online", Duration::from_secs(10))
            .await;
    }
    // Seconds well inside the outage: both daemons surely offline. The
    // first seconds of it are run once Redis is back (a peer might have
    // claimed them), the rest offline; all to one chat per job, which
    // Telegram allows a message a second.
    let inside = seconds(
        outage_from + TimeDelta::seconds(2),
        outage_to - TimeDelta::seconds(1),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let (delivered, missing) = loop {
        let delivered = two.delivered();
        let mut missing = Vec::new();
        for j in 0..JOBS {
            for t in &inside {
                let chat = CHAT + j as i64;
                if !delivered.contains_key(&(chat, text_of(&job_id(j), *t))) {
                    missing.push(format!("{}@{}", job_id(j), t.format("%H:%M:%S")));
                }
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break (delivered, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "{} of {} outage ticks sent nothing: {missing:?}\n{}",
        missing.len(),
        inside.len() * JOBS,
        two.logs()
    );
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    two.stop().await;
}

/// Issue: a job created through daemon A had its first run queued before
/// daemon B knew the job; B read the entry and failed the run ("not
/// defined on this daemon"), never retried. B now takes the definition
/// from Redis. Six new jobs, three with overlap `allow` (queued 1.5 s
/// ahead) and three with the default `skip`: every run of each succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_through_one_daemon_runs_from_its_first_tick_on_any() {
    let two = Two::start(0).await;
    let a = &two.daemons[0];
    let url = format!("http://127.0.0.1:{}/api/jobs", a.http);
    let ids: Vec<String> = (0..6).map(|i| format!("new-{i}")).collect();
    let mut first_ticks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let overlap = if i < 3 { "allow" } else { "skip" };
        let created = Utc::now();
        let response = two
            .client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({
                "id": id,
                "schedule": "* * * * * *",
                "template": "new {{ run_id }}",
                "include": [5000 + i as i64],
                "overlap": overlap,
            }))
            .send()
            .await
            .expect("the API answers");
        assert!(
            response.status().is_success(),
            "create {id}: {}",
            response.status()
        );
        // The first fire is the first whole second after the creation.
        let first = DateTime::from_timestamp(created.timestamp() + 1, 0).expect("an instant");
        first_ticks.push((id.clone(), first));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let store = two.store();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (id, first) in &first_ticks {
        // The first three ticks of each job (the creation's own second
        // may be its first, or already past: the fourth is a margin).
        for tick in seconds(
            *first + TimeDelta::seconds(1),
            *first + TimeDelta::seconds(3),
        ) {
            let run = RunId::for_tick(id, tick);
            let record = loop {
                let record = store.record(&run).await.expect("a record read");
                match record {
                    Some(r) if r.status.is_terminal() => break r,
                    _ if Instant::now() > deadline => {
                        panic!("{}: no final record: {record:?}\n{}", run.0, two.logs())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            assert_eq!(
                record.status,
                RunStatus::Success,
                "{}: {:?}\n{}",
                run.0,
                record.error,
                two.logs()
            );
        }
        let failed: Vec<_> = store
            .query(&RecordQuery {
                job_id: Some(id.clone()),
                limit: 100,
                ..RecordQuery::default()
            })
            .await
            .expect("records")
            .into_iter()
            .filter(|r| r.status == RunStatus::Failed || r.status == RunStatus::Cancelled)
            .map(|r| (r.run_id.0, r.error))
            .collect();
        assert!(failed.is_empty(), "{id}: runs that failed: {failed:?}");
    }
    two.stop().await;
}

/// A daemon paused (SIGSTOP) mid-run for longer than the visibility
/// timeout: the other daemon takes the run over and finishes it. When the
/// paused one wakes (SIGCONT) it cannot finish or overwrite the run it
/// lost (its writes for the attempt are fenced off), and no recipient is
/// messaged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_daemon_does_not_finish_a_run_taken_over_while_it_slept() {
    use chrono::{Datelike, Timelike};
    const RECIPIENTS: i64 = 8;
    let redis = RedisServer::start_persistent();
    let fake = FakeTelegram::start().await;
    // Half the recipients are answered "retry after 8 s" once: the run
    // lasts that long, and the pause lands in the middle of its fan-out.
    for i in 0..RECIPIENTS / 2 {
        fake.fail_next(7000 + i, Fault::RetryAfter(8));
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an http client");
    let tick = ceil_second(Utc::now() + TimeDelta::seconds(12));
    let include: Vec<i64> = (0..RECIPIENTS).map(|i| 7000 + i).collect();
    let mut daemons: Vec<Daemon> = ["A", "B"]
        .into_iter()
        .map(|name| {
            let http = free_port();
            let schedule = format!(
                "{} {} {} {} {} *",
                tick.second(),
                tick.minute(),
                tick.hour(),
                tick.day(),
                tick.month()
            );
            let text = config(&redis.url(), &fake.api_url(), http, 0)
                .redis("visibility_timeout = \"3s\"")
                .job(
                    "slow",
                    &schedule,
                    "slow {{ run_id }}",
                    &include,
                    &["timeout = \"60s\""],
                )
                .text();
            Daemon::new(name, dir.path(), &text, http)
        })
        .collect();
    for d in &mut daemons {
        d.spawn();
    }
    for d in &mut daemons {
        d.wait_for_mode(&client, "online", Duration::from_secs(20))
            .await;
        d.wait_for_peers(&client, 2, Duration::from_secs(10)).await;
    }
    let store = RedisStore::new(
        connect(&RedisSettings::new(redis.url(), "herald")).expect("a Redis pool"),
        "herald",
        StoreLimits::default(),
    );
    let run = RunId::for_tick("slow", tick);
    // Who runs it?
    let deadline = Instant::now() + Duration::from_secs(30);
    let runner = loop {
        if let Ok(Some(r)) = store.record(&run).await
            && r.status == RunStatus::Running
            && let Some(d) = r.daemon
        {
            break d;
        }
        assert!(Instant::now() < deadline, "the run did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids = Vec::new();
    for d in &daemons {
        ids.push(d.id(&client).await);
    }
    let paused = ids.iter().position(|id| *id == runner).expect("a runner");
    let other = &ids[1 - paused];
    // Half the messages out, pause it for well over the visibility timeout.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    daemons[paused].pause();
    let taken = loop {
        if let Ok(Some(r)) = store.record(&run).await
            && r.daemon.as_deref() == Some(other.as_str())
        {
            break r;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "the run was not taken over: {:?}\n{}",
            store.record(&run).await,
            log_tail(&daemons[1 - paused].log())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken.taken_over_from.as_deref(), Some(runner.as_str()));
    // Let the taker finish, then wake the sleeper and give it time to
    // try to finish too.
    let finished = loop {
        if let Ok(Some(r)) = store.record(&run).await
            && r.status.is_terminal()
        {
            break r;
        }
        assert!(Instant::now() < deadline + Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    daemons[paused].resume();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let last = store.record(&run).await.expect("read").expect("a record");
    assert_eq!(last.status, RunStatus::Success, "{last:?}");
    assert_eq!(
        last.daemon.as_deref(),
        Some(other.as_str()),
        "the woken daemon overwrote the run it lost: {last:?}\nits log:\n{}",
        log_tail(&daemons[paused].log())
    );
    assert_eq!(
        last, finished,
        "the record changed after the taker finished"
    );
    let mut delivered: HashMap<i64, usize> = HashMap::new();
    for r in fake.sent() {
        if let Some(chat) = r.chat_id {
            *delivered.entry(chat).or_default() += 1;
        }
    }
    assert!(
        delivered.values().all(|n| *n == 1),
        "someone messaged twice: {delivered:?}"
    );
    // Every recipient messaged, or counted of unknown outcome (the one
    // whose send the sleeper had under way).
    let missing = RECIPIENTS as u64 - delivered.len() as u64;
    assert!(
        missing <= last.counts.skipped,
        "{missing} recipients not messaged, {} counted unknown: {last:?}",
        last.counts.skipped
    );
    for d in &mut daemons {
        assert_eq!(d.terminate().await, Some(0), "{} exit on SIGTERM", d.name);
    }
}
