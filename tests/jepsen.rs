//! A Jepsen-style test: three real `herald run` daemons on one
//! `redis-server`, each reaching Redis through a TCP relay of its own, under
//! a nemesis that injects one fault after another, while a workload of
//! every-second jobs runs and jobs are created, edited and disabled
//! through the admin API. A checker then reads every message the fake Bot
//! API received, every skipped-tick entry (polled from Redis all along, so
//! a Redis that loses its data does not hide what was recorded before)
//! and every record.
//!
//! Faults (seeded; the seed is printed, `HERALD_JEPSEN_SEED` replays one):
//! a daemon's link black-holed, cut, delayed or flapping; Redis
//! black-holed from every daemon; a daemon paused (SIGSTOP, at times
//! past its lease) and resumed; a daemon SIGKILLed and started again;
//! Redis restarted with its data, and without it.
//!
//! The checker asserts, over each job's checked window: no tick ran twice
//! (no recipient got its message twice); every tick ran or was recorded
//! skipped (the misfire policy's `skip`, a dead or cut-off owner's
//! `offline`, an overlap); no tick both ran and was recorded skipped.
//! Ticks a Redis restarted without data can lose are exempt from "lost"
//! only: runs queued in it and not yet read (±3 s around the restart), and
//! runs a daemon killed up to 40 s before held, waiting on the queue for
//! its lease: those read off the queue at the kill (XPENDING, so late
//! claims after an outage count too), and ticks from 5 s before the kill
//! to 2 s after (queued ahead, not yet read).
//!
//! A tick whose message a SIGKILLed daemon had claimed and not reported
//! is "in doubt", not lost, when its record says so (the run that took it
//! over counted the message's outcome unknown and did not send it again:
//! at most once for messages): counted and listed apart.
//!
//! The short run (70 s, at least 8 faults) is part of the suite
//! (`scripts/test`); the full one (10 minutes, at least 50 faults) is
//! `bash scripts/chaos`, its figures in BENCHMARKS.md.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use herald_actors::memory::StoreLimits;
use herald_actors::record::{RunId, SkippedTicks};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_testkit::relay::{Link, Relay};
use herald_testkit::telegram::FakeTelegram;
use herald_testkit::{RedisServer, free_port, log_tail};
use support::{Daemon, DaemonConfig, judge};

const TOKEN: &str = "jepsen-admin-token";

/// A run on the queue: its job and tick (unix seconds).
type HeldRun = (String, i64);

struct Plan {
    run_for: Duration,
    min_faults: usize,
    /// Longest single fault.
    longest: u64,
}

const SHORT: Plan = Plan {
    run_for: Duration::from_secs(70),
    min_faults: 8,
    longest: 8,
};

const FULL: Plan = Plan {
    run_for: Duration::from_secs(600),
    min_faults: 50,
    longest: 16,
};

/// The config jobs: (id, overlap, recipients).
const JOBS: &[(&str, &str, i64)] = &[
    ("skip-1", "skip", 1),
    ("skip-3", "skip", 3),
    ("allow-1", "allow", 1),
    ("allow-3", "allow", 3),
    ("queue-1", "queue_one", 1),
    ("queue-3", "queue_one", 3),
];

/// The chats a job messages: its own, so a message names one tick.
fn chats(job_index: usize, recipients: i64) -> Vec<i64> {
    (0..recipients)
        .map(|r| 20_000 + 100 * job_index as i64 + r)
        .collect()
}

fn config(redis: &str, telegram: &str, http: u16) -> String {
    let base = DaemonConfig::new(redis, telegram, http, "JEPSEN")
        .admin_token(TOKEN)
        .redis("visibility_timeout = \"3s\"");
    JOBS.iter()
        .enumerate()
        .fold(base, |c, (i, (id, overlap, n))| {
            c.every_second_job(id, &chats(i, *n), &[&format!("overlap = \"{overlap}\"")])
        })
        .text()
}

/// xorshift64*: a seeded sequence, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn secs(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from * 1000 + self.below((to - from) * 1000 + 1))
    }
}

/// A job created at run time, and the window in which it is surely
/// defined and enabled on every daemon.
struct CustomJob {
    id: String,
    chats: Vec<i64>,
    checked_from: DateTime<Utc>,
    checked_to: Option<DateTime<Utc>>,
    /// The create call failed or timed out: the job may or may not exist.
    unsure: bool,
}

struct World {
    redis: RedisServer,
    relays: Vec<Relay>,
    daemons: Vec<Daemon>,
    fake: FakeTelegram,
    client: reqwest::Client,
    /// Skip entries seen, by epoch (a restart without data starts one):
    /// the latest read of each epoch.
    skips_by_epoch: Vec<BTreeMap<String, SkippedTicks>>,
    /// Restarts without data: ticks near them may be lost.
    wipes: Vec<DateTime<Utc>>,
    /// SIGKILLs: the runs a killed daemon held wait on the queue for its
    /// lease, and go if Redis loses its data meanwhile.
    kills: Vec<DateTime<Utc>>,
    /// Per SIGKILL, the runs the killed daemon held on the queue (read,
    /// not acknowledged): (job, tick in unix seconds).
    held_at_kill: Vec<(DateTime<Utc>, HashSet<HeldRun>)>,
    faults: BTreeMap<&'static str, usize>,
    /// Each fault or job operation, with when it began and which daemon.
    timeline: Vec<String>,
    paused: Option<usize>,
    down: Option<usize>,
    custom: Vec<CustomJob>,
    _dir: tempfile::TempDir,
}

impl World {
    fn store(&self) -> RedisStore {
        RedisStore::new(
            connect(&RedisSettings::new(self.redis.url(), "herald")).expect("a Redis pool"),
            "herald",
            StoreLimits::default(),
        )
    }

    /// The runs `consumer` holds on the queue (read, not acknowledged),
    /// read without touching them (XPENDING, XRANGE): (job, unix s).
    async fn held_by(&self, consumer: &str) -> HashSet<HeldRun> {
        use deadpool_redis::redis;
        let read = async {
            let client = redis::Client::open(self.redis.url()).ok()?;
            let mut c = client.get_multiplexed_async_connection().await.ok()?;
            let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg("herald:runs")
                .arg("herald")
                .arg("-")
                .arg("+")
                .arg(10_000)
                .arg(consumer)
                .query_async(&mut c)
                .await
                .ok()?;
            let mut held = HashSet::new();
            for (entry, ..) in pending {
                let fields: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                    .arg("herald:runs")
                    .arg(&entry)
                    .arg(&entry)
                    .query_async(&mut c)
                    .await
                    .ok()?;
                for (_, f) in fields {
                    let run = f
                        .get("record")
                        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
                        .and_then(|r| r["run_id"].as_str().map(str::to_string));
                    if let Some((job, at)) = run.as_deref().and_then(|r| r.rsplit_once('@'))
                        && let Ok(at) = at.parse::<i64>()
                    {
                        held.insert((job.to_string(), at));
                    }
                }
            }
            Some(held)
        };
        tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Reads the skip entries now held in Redis into the current epoch.
    async fn poll_skips(&mut self) {
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            self.store().skipped(None, 1_000_000),
        )
        .await;
        if let Ok(Ok(skips)) = read {
            let epoch: BTreeMap<String, SkippedTicks> =
                skips.into_iter().map(|s| (s.dedup_id(), s)).collect();
            if let Some(last) = self.skips_by_epoch.last_mut() {
                *last = epoch;
            }
        }
    }

    /// Sleeps `d`, reading skip entries every second meanwhile.
    async fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            self.poll_skips().await;
        }
    }

    fn note(&mut self, fault: &'static str) {
        *self.faults.entry(fault).or_default() += 1;
        self.timeline
            .push(format!("{} {fault}", Utc::now().format("%H:%M:%S%.3f")));
    }

    /// A daemon that answers its API now.
    fn live_daemon(&mut self, rng: &mut Rng) -> usize {
        loop {
            let i = rng.below(3) as usize;
            if Some(i) != self.paused && Some(i) != self.down {
                return i;
            }
        }
    }

    async fn api(
        &self,
        daemon: usize,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> bool {
        let url = format!("http://127.0.0.1:{}/api{path}", self.daemons[daemon].http);
        matches!(
            self.client
                .request(method, &url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await,
            Ok(r) if r.status().is_success()
        )
    }

    /// One job operation: create a job, edit one (its overlap policy), or
    /// disable one, through a daemon that is up (maybe cut off).
    async fn job_op(&mut self, rng: &mut Rng) {
        let daemon = self.live_daemon(rng);
        let open: Vec<usize> = (0..self.custom.len())
            .filter(|i| self.custom[*i].checked_to.is_none())
            .collect();
        let op = if open.is_empty() || (open.len() < 4 && rng.below(2) == 0) {
            0
        } else {
            1 + rng.below(2)
        };
        let overlaps = ["skip", "allow", "queue_one"];
        match op {
            0 => {
                let n = self.custom.len();
                let id = format!("custom-{n}");
                let chats: Vec<i64> = (0..1 + rng.below(3) as i64)
                    .map(|r| 40_000 + 100 * n as i64 + r)
                    .collect();
                let overlap = overlaps[rng.below(3) as usize];
                let ok = self
                    .api(
                        daemon,
                        reqwest::Method::POST,
                        "/jobs",
                        serde_json::json!({
                            "id": id,
                            "schedule": "* * * * * *",
                            "template": "tick {{ run_id }}",
                            "include": chats,
                            "overlap": overlap,
                        }),
                    )
                    .await;
                self.note("job created");
                self.custom.push(CustomJob {
                    id,
                    chats,
                    // A daemon cut off learns of it only once back: up to
                    // a fault's length, plus a resync.
                    checked_from: Utc::now() + TimeDelta::seconds(30),
                    checked_to: None,
                    unsure: !ok,
                });
            }
            1 => {
                let j = open[rng.below(open.len() as u64) as usize];
                let overlap = overlaps[rng.below(3) as usize];
                let path = format!("/jobs/{}", self.custom[j].id);
                let ok = self
                    .api(
                        daemon,
                        reqwest::Method::PATCH,
                        &path,
                        serde_json::json!({ "overlap": overlap }),
                    )
                    .await;
                self.note("job edited");
                if !ok {
                    self.custom[j].unsure = true;
                }
            }
            _ => {
                let j = open[rng.below(open.len() as u64) as usize];
                let path = format!("/jobs/{}", self.custom[j].id);
                // Checked until just before the disable: after it, a
                // daemon cut off may still run it until it is back.
                self.custom[j].checked_to = Some(Utc::now() - TimeDelta::seconds(1));
                let _ = self
                    .api(
                        daemon,
                        reqwest::Method::PATCH,
                        &path,
                        serde_json::json!({ "enabled": false }),
                    )
                    .await;
                self.note("job disabled");
            }
        }
    }

    /// One fault, held for a while, then healed.
    async fn fault(&mut self, rng: &mut Rng, longest: u64) {
        let d = rng.below(3) as usize;
        let hold = rng.secs(2, longest);
        let kind = rng.below(10);
        self.timeline
            .push(format!("  (daemon {}, {hold:?})", self.daemons[d].name));
        match kind {
            0 | 1 => {
                self.note("link black-holed");
                self.relays[d].set(Link::BlackHole);
                self.wait(hold).await;
                self.relays[d].set(Link::Open);
            }
            2 => {
                self.note("link cut");
                self.relays[d].set(Link::Cut);
                self.wait(hold).await;
                self.relays[d].set(Link::Open);
            }
            3 => {
                self.note("link delayed");
                let delay = Duration::from_millis(100 + rng.below(600));
                self.relays[d].set(Link::Delay(delay));
                self.wait(hold).await;
                self.relays[d].set(Link::Open);
            }
            4 => {
                self.note("link flapping");
                let until = Instant::now() + hold;
                while Instant::now() < until {
                    let cut = rng.secs(0, 1);
                    self.relays[d].set(Link::Cut);
                    tokio::time::sleep(cut).await;
                    self.relays[d].set(Link::Open);
                    tokio::time::sleep(rng.secs(0, 2)).await;
                }
                self.relays[d].set(Link::Open);
                self.poll_skips().await;
            }
            5 => {
                self.note("redis cut from all");
                for r in &self.relays {
                    r.set(Link::BlackHole);
                }
                self.wait(hold).await;
                for r in &self.relays {
                    r.set(Link::Open);
                }
            }
            6 => {
                self.note("daemon paused");
                self.paused = Some(d);
                self.daemons[d].pause();
                tokio::time::sleep(hold.max(Duration::from_secs(4))).await;
                self.daemons[d].resume();
                self.paused = None;
                self.poll_skips().await;
            }
            7 => {
                self.note("daemon killed");
                self.down = Some(d);
                let id = self.daemons[d]
                    .ready(&self.client)
                    .await
                    .and_then(|r| r["daemon"].as_str().map(str::to_string));
                self.daemons[d].kill();
                let killed_at = Utc::now();
                self.kills.push(killed_at);
                if let Some(id) = id {
                    let held = self.held_by(&id).await;
                    self.held_at_kill.push((killed_at, held));
                }
                self.wait(rng.secs(0, 3)).await;
                self.daemons[d].spawn();
                let client = self.client.clone();
                self.daemons[d]
                    .wait_for_mode(&client, "online", Duration::from_secs(30))
                    .await;
                self.down = None;
            }
            8 => {
                self.note("redis restarted");
                self.poll_skips().await;
                self.redis.shut_down();
                self.wait(rng.secs(1, longest.min(8))).await;
                self.redis.start_again();
            }
            _ => {
                self.note("redis restarted empty");
                self.poll_skips().await;
                self.redis.restart_empty();
                self.wipes.push(Utc::now());
                self.skips_by_epoch.push(BTreeMap::new());
            }
        }
    }

    /// Every recipient's count of each run's message: (job, unix s) ->
    /// per chat.
    fn messages(&self) -> HashMap<(String, i64), HashMap<i64, usize>> {
        let mut out: HashMap<(String, i64), HashMap<i64, usize>> = HashMap::new();
        for r in self.fake.sent() {
            let (Some(chat), Some(text)) = (r.chat_id, r.text) else {
                continue;
            };
            let Some(run) = text.split_whitespace().nth(1) else {
                continue;
            };
            let Some((job, at)) = run.split_once('@') else {
                continue;
            };
            let Ok(at) = at.parse::<i64>() else {
                continue;
            };
            *out.entry((job.to_string(), at))
                .or_default()
                .entry(chat)
                .or_default() += 1;
        }
        out
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.name, log_tail(&d.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A job checked over a window: id, chats, from, to.
type Window = (String, Vec<i64>, DateTime<Utc>, DateTime<Utc>);

async fn jepsen(plan: &Plan) {
    let started = Instant::now();
    let seed = std::env::var("HERALD_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("jepsen: seed {seed} (HERALD_JEPSEN_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let redis = RedisServer::start_persistent();
    let fake = FakeTelegram::start().await;
    let mut dir = tempfile::tempdir().expect("a temp dir");
    if std::env::var_os("HERALD_JEPSEN_KEEP").is_some() {
        dir.disable_cleanup(true);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("an http client");
    let mut relays = Vec::new();
    let mut daemons = Vec::new();
    for name in ["A", "B", "C"] {
        let relay = Relay::start(redis.port()).await;
        let http = free_port();
        daemons.push(Daemon::new(
            name,
            dir.path(),
            &config(&relay.redis_url(), &fake.api_url(), http),
            http,
        ));
        relays.push(relay);
    }
    for d in &mut daemons {
        d.spawn();
    }
    for d in &mut daemons {
        d.wait_for_mode(&client, "online", Duration::from_secs(20))
            .await;
        d.wait_for_peers(&client, 3, Duration::from_secs(10)).await;
    }
    if std::env::var_os("HERALD_JEPSEN_KEEP").is_some() {
        println!("jepsen: logs kept in {}", dir.path().display());
    }
    let mut world = World {
        redis,
        relays,
        daemons,
        fake,
        client,
        skips_by_epoch: vec![BTreeMap::new()],
        wipes: Vec::new(),
        kills: Vec::new(),
        held_at_kill: Vec::new(),
        faults: BTreeMap::new(),
        timeline: Vec::new(),
        paused: None,
        down: None,
        custom: Vec::new(),
        _dir: dir,
    };
    let from = Utc::now() + TimeDelta::seconds(2);
    world.wait(Duration::from_secs(3)).await;
    let mut faults = 0;
    while started.elapsed() < plan.run_for || faults < plan.min_faults {
        if rng.below(3) == 0 {
            world.job_op(&mut rng).await;
        }
        world.fault(&mut rng, plan.longest).await;
        faults += 1;
        let calm = rng.secs(1, 4);
        world.wait(calm).await;
    }
    // Heal and settle: every daemon back, leases run out, returns done.
    for r in &world.relays {
        r.set(Link::Open);
    }
    let client = world.client.clone();
    for d in &mut world.daemons {
        d.wait_for_mode(&client, "online", Duration::from_secs(30))
            .await;
    }
    let to = Utc::now() - TimeDelta::seconds(1);
    world.wait(Duration::from_secs(20)).await;
    // Late runs (ticks kept back through an outage, runs taken over from
    // a killed daemon) go out at one message a second per chat: judged
    // once the queue has drained (at most a minute more).
    let store = world.store();
    let drained_by = Instant::now() + Duration::from_secs(60);
    while Instant::now() < drained_by {
        match store.queue_depth().await {
            Ok((0, _, 0)) => break,
            _ => world.wait(Duration::from_secs(1)).await,
        }
    }
    world.wait(Duration::from_secs(2)).await;

    // The checker.
    let skips: Vec<SkippedTicks> = world
        .skips_by_epoch
        .iter()
        .flat_map(|e| e.values().cloned())
        .collect();
    let messages = world.messages();
    // Lost with Redis's data: runs queued and not yet read (within 3 s of
    // the restart), and runs a killed daemon held (its ticks within a few
    // seconds of the kill, queued ahead or going) that wait on the queue
    // for its lease and any outage after it (up to 40 s).
    // The runs a killed daemon held are read off the queue at the kill
    // (its late claims after an outage hold ticks older than the kill).
    let near_wipe = |job: &str, at: DateTime<Utc>| {
        world.wipes.iter().any(|w| {
            let wiped_after = |k: &DateTime<Utc>| *k <= *w && (*w - *k).num_seconds() <= 40;
            (at - *w).num_seconds().abs() <= 3
                || world.kills.iter().any(|k| {
                    let held = (at - *k).num_seconds();
                    (-5..=2).contains(&held) && wiped_after(k)
                })
                || world.held_at_kill.iter().any(|(k, held)| {
                    wiped_after(k) && held.contains(&(job.to_string(), at.timestamp()))
                })
        })
    };
    let mut windows: Vec<Window> = JOBS
        .iter()
        .enumerate()
        .map(|(i, (id, _, n))| (id.to_string(), chats(i, *n), from, to))
        .collect();
    for c in &world.custom {
        let end = c.checked_to.unwrap_or(to).min(to);
        if !c.unsure && c.checked_from < end {
            windows.push((c.id.clone(), c.chats.clone(), c.checked_from, end));
        }
    }
    let mut verdict = support::Verdict::default();
    let mut exempt = 0;
    let mut unexplained = Vec::new();
    let mut partial = Vec::new();
    for (job, chats, from, to) in &windows {
        let v = judge(
            std::slice::from_ref(job),
            *from,
            *to,
            |job, at| {
                messages
                    .get(&(job.to_string(), at.timestamp()))
                    .map(|per_chat| per_chat.values().copied().max().unwrap_or(0))
                    .unwrap_or(0)
            },
            &skips,
        );
        verdict.ticks += v.ticks;
        verdict.ran += v.ran;
        verdict.skipped += v.skipped;
        verdict.twice.extend(v.twice);
        verdict.ran_and_skipped.extend(v.ran_and_skipped);
        for lost in v.lost {
            let at = lost
                .rsplit_once('@')
                .and_then(|(_, t)| chrono::NaiveTime::parse_from_str(t, "%H:%M:%S").ok());
            let wiped = at.is_some_and(|t| {
                let day = from.date_naive();
                near_wipe(job, day.and_time(t).and_utc())
            });
            if wiped {
                exempt += 1;
            } else {
                unexplained.push((job.clone(), at, lost));
            }
        }
        // A tick that ran reached every recipient (a message of unknown
        // outcome is counted skipped on its record; reported, not failed:
        // records a wipe took cannot be read).
        for ((j, at), per_chat) in &messages {
            if j == job && *at >= from.timestamp() && *at <= to.timestamp() {
                let missing = chats.iter().filter(|c| !per_chat.contains_key(c)).count();
                if missing > 0 {
                    partial.push(format!("{j}@{at}: {missing} of {}", chats.len()));
                }
            }
        }
    }
    // A tick that ran on a daemon SIGKILLed mid-send: its message was
    // claimed and its send's outcome never reported, so the run that
    // took it over counted it "outcome unknown" (skipped on the record)
    // rather than send it again: herald's documented at most once for
    // messages. Its record shows that; the tick is not lost, it is in
    // doubt, and counted apart.
    let mut in_doubt = Vec::new();
    for (job, at, lost) in unexplained {
        let at = at.map(|t| from.date_naive().and_time(t).and_utc());
        let killed_running = at.is_some_and(|at| {
            world
                .kills
                .iter()
                .any(|k| (-3..=15).contains(&(*k - at).num_seconds()))
        });
        let record = match at {
            Some(at) if killed_running => store
                .record(&RunId::for_tick(&job, at))
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let unknown_outcome = record
            .as_ref()
            .and_then(|r| r.deliveries.as_ref())
            .is_some_and(|d| {
                let t = d.totals();
                t.skipped > 0 && t.sent == 0
            });
        if unknown_outcome {
            in_doubt.push(lost);
        } else {
            verdict.lost.push(lost);
        }
    }
    // Messages twice outside the checked windows too.
    let twice_anywhere: Vec<String> = messages
        .iter()
        .filter(|(_, per_chat)| per_chat.values().any(|n| *n > 1))
        .map(|((j, at), _)| format!("{j}@{at}"))
        .collect();
    let distinct: HashSet<&str> = skips.iter().map(|s| s.reason.as_str()).collect();
    println!(
        "jepsen: {faults} faults {:?}; {} jobs checked ({} created at run time); \
         {} ticks: {} ran, {} skipped (reasons {:?}), {} twice, {} ran and skipped, {} lost, \
         {} exempt near {} restarts without data, {} in doubt at a kill {:?}, \
         {} ran short of recipients; \
         {} messages, {} twice anywhere; {:.0} s",
        world.faults,
        windows.len(),
        world.custom.len(),
        verdict.ticks,
        verdict.ran,
        verdict.skipped,
        distinct,
        verdict.twice.len(),
        verdict.ran_and_skipped.len(),
        verdict.lost.len(),
        exempt,
        world.wipes.len(),
        in_doubt.len(),
        in_doubt,
        partial.len(),
        world.fake.sent().len(),
        twice_anywhere.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        verdict.is_clean() && twice_anywhere.is_empty(),
        "seed {seed}: {verdict:?}\ntwice anywhere: {twice_anywhere:?}\ntimeline:\n{}\n{}",
        world.timeline.join("\n"),
        world.logs()
    );
    assert!(verdict.ran > 0, "nothing ran");
    for d in &mut world.daemons {
        let code = d.terminate().await;
        assert_eq!(code, Some(0), "{} exit on SIGTERM", d.name);
    }
}

/// In the suite: 70 s, at least 8 faults, a fresh seed each run (printed;
/// `HERALD_JEPSEN_SEED` replays one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_short() {
    jepsen(&SHORT).await;
}

/// The full run: `bash scripts/chaos`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the full Jepsen-style run (about 11 minutes): bash scripts/chaos"]
async fn jepsen_full() {
    jepsen(&FULL).await;
}
