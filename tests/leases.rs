//! Leases: a daemon that loses Redis while its peers keep it, and a daemon
//! that dies, with two real `herald run` processes on one `redis-server`
//! and the default job settings (overlap `skip`, misfire `skip`) and the
//! default lease (10 s TTL, 1 s clock skew).
//!
//! Judged by what an operator sees afterwards: the messages the fake Bot
//! API received (each names its run, so a tick sent twice shows) and the
//! skipped-tick entries in Redis. Over the whole stretch every tick of
//! every job ran once or was recorded skipped: never both, never twice,
//! never neither.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use herald_actors::health::owner;
use herald_actors::memory::StoreLimits;
use herald_actors::record::{RunId, RunStatus, SkipReason};
use herald_actors::redis_backend::{RedisSettings, RedisStore, connect};
use herald_testkit::relay::{Link, Relay};
use herald_testkit::telegram::FakeTelegram;
use herald_testkit::{RedisServer, free_port};
use support::{Daemon, DaemonConfig, judge};

const JOBS: usize = 8;

/// One test at a time: each runs two or three daemons whose timing (a run
/// in flight at a kill, a cut just before a tick) the others' load on a
/// small machine would blur.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CHAT: i64 = 5100;
/// How long the judge waits for ticks not yet sent before calling them
/// lost.
const LATE_DELIVERY: Duration = Duration::from_secs(30);

fn job_id(j: usize) -> String {
    format!("lease-{j}")
}

fn jobs() -> Vec<String> {
    (0..JOBS).map(job_id).collect()
}

fn config(redis: &str, telegram: &str, http: u16) -> String {
    (0..JOBS)
        .fold(
            DaemonConfig::new(redis, telegram, http, "LEASES"),
            |c, j| c.every_second_job(&job_id(j), &[CHAT + j as i64], &[]),
        )
        .text()
}

struct Cluster {
    redis: RedisServer,
    fake: FakeTelegram,
    daemons: Vec<Daemon>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Daemons A and B; A reaches Redis through `relay` if given.
    async fn start(redis: RedisServer, relay: Option<&Relay>) -> Cluster {
        let urls = [
            relay.map(Relay::redis_url).unwrap_or_else(|| redis.url()),
            redis.url(),
        ];
        Cluster::start_on(redis, &urls).await
    }

    /// Daemons A, B (and C), one per Redis URL.
    async fn start_on(redis: RedisServer, urls: &[String]) -> Cluster {
        let fake = FakeTelegram::start().await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an http client");
        let mut daemons: Vec<Daemon> = ["A", "B", "C"]
            .into_iter()
            .zip(urls)
            .map(|(name, url)| {
                let http = free_port();
                Daemon::new(name, dir.path(), &config(url, &fake.api_url(), http), http)
            })
            .collect();
        for d in &mut daemons {
            d.spawn();
        }
        for d in &mut daemons {
            d.wait_for_mode(&client, "online", Duration::from_secs(20))
                .await;
            d.wait_for_peers(&client, urls.len(), Duration::from_secs(10))
                .await;
        }
        Cluster {
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

    /// The jobs A owns (rendezvous over A and B).
    async fn owned_by_a(&self) -> Vec<String> {
        let a = self.daemons[0].id(&self.client).await;
        let b = self.daemons[1].id(&self.client).await;
        let both = BTreeSet::from([a.clone(), b]);
        jobs()
            .into_iter()
            .filter(|j| owner(j, &both) == Some(a.as_str()))
            .collect()
    }

    /// How often each tick's message reached its job's chat.
    fn sent(&self) -> HashMap<(String, i64), usize> {
        let mut sent = HashMap::new();
        for r in self.fake.sent() {
            let (Some(chat), Some(text)) = (r.chat_id, r.text) else {
                continue;
            };
            let Some(run) = text.strip_prefix("tick ") else {
                continue;
            };
            let Some((job, at)) = run.split_once('@') else {
                continue;
            };
            let j = (chat - CHAT) as usize;
            if job == job_id(j)
                && let Ok(at) = at.parse::<i64>()
            {
                *sent.entry((job.to_string(), at)).or_default() += 1;
            }
        }
        sent
    }

    /// `LEASES_DUMP=1`: the daemons' logs copied to `/tmp/leases-<name>.log`.
    fn dump_logs(&self) {
        if std::env::var_os("LEASES_DUMP").is_some() {
            for d in &self.daemons {
                let _ = std::fs::copy(d.log(), format!("/tmp/leases-{}.log", d.name));
            }
        }
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("--- {} ---\n{}", d.name, herald_testkit::log_tail(&d.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Judges `[from, to]`; panics with the logs on any fault.
    async fn assert_every_tick_once(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Verdicts {
        self.assert_ticks_once(&jobs(), from, to).await
    }

    /// Judges these jobs over `[from, to]`; panics with the logs on any
    /// fault.
    async fn assert_ticks_once(
        &self,
        jobs: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Verdicts {
        let store = self.store();
        // A tick is lost only if it never goes: runs taken over from a
        // killed daemon wait on the queue, and the bot's limit of a
        // message a second a chat sends a backlog late. Waiting longer
        // can only add sends, so a tick sent twice is still caught.
        let drained_by = Instant::now() + LATE_DELIVERY;
        let mut first_lost = Vec::new();
        let (skips, sent, verdict) = loop {
            let skips = store.skipped(None, 100_000).await.expect("skips read");
            let sent = self.sent();
            let verdict = judge(
                jobs,
                from,
                to,
                |job, at| {
                    sent.get(&(job.to_string(), at.timestamp()))
                        .copied()
                        .unwrap_or(0)
                },
                &skips,
            );
            if verdict.lost.is_empty() || Instant::now() >= drained_by {
                break (skips, sent, verdict);
            }
            if first_lost.is_empty() {
                first_lost.clone_from(&verdict.lost);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if !first_lost.is_empty() {
            eprintln!("judge: waited for ticks sent late: {first_lost:?}");
        }
        self.dump_logs();
        assert!(verdict.is_clean(), "{verdict:?}\n{}", self.logs());
        let offline = skips
            .iter()
            .filter(|s| s.reason == SkipReason::Offline && s.first >= from && s.last <= to)
            .map(|s| s.count)
            .sum();
        Verdicts {
            ran: verdict.ran,
            skipped: verdict.skipped,
            offline,
            sent,
        }
    }
}

struct Verdicts {
    ran: usize,
    skipped: usize,
    offline: u64,
    sent: HashMap<(String, i64), usize>,
}

/// Three daemons, each behind a relay of its own, and a job: K owns it
/// among all three, X among the two left when K is gone.
struct Heirs {
    cluster: Cluster,
    relays: Vec<Relay>,
    job: String,
    k: usize,
    x: usize,
}

impl Heirs {
    async fn start() -> Heirs {
        let redis = RedisServer::start_persistent();
        let mut relays = Vec::new();
        for _ in 0..3 {
            relays.push(Relay::start(redis.port()).await);
        }
        let urls: Vec<String> = relays.iter().map(Relay::redis_url).collect();
        let cluster = Cluster::start_on(redis, &urls).await;
        let mut ids = Vec::new();
        for d in &cluster.daemons {
            ids.push(d.id(&cluster.client).await);
        }
        let all: BTreeSet<String> = ids.iter().cloned().collect();
        let job = job_id(0);
        let index = |id: Option<&str>| {
            ids.iter()
                .position(|i| Some(i.as_str()) == id)
                .expect("an owner among the daemons")
        };
        let k = index(owner(&job, &all));
        let rest: BTreeSet<String> = all.iter().filter(|i| **i != ids[k]).cloned().collect();
        let x = index(owner(&job, &rest));
        Heirs {
            cluster,
            relays,
            job,
            k,
            x,
        }
    }
}

/// Waits until `pred` holds for A's `/readyz` mode.
async fn wait_online(cluster: &mut Cluster, i: usize) {
    let client = cluster.client.clone();
    cluster.daemons[i]
        .wait_for_mode(&client, "online", Duration::from_secs(20))
        .await;
}

/// Sets every daemon's link to Redis at once (Redis cut from all, or
/// back for all).
fn set_links(relays: &[Relay], link: Link) {
    for r in relays {
        r.set(link);
    }
}

/// Cuts Redis from every daemon for `outage`, then waits for the daemons
/// `alive` to be online again; returns when the links opened.
async fn cut_redis_from_all(
    cluster: &mut Cluster,
    relays: &[Relay],
    outage: Duration,
    alive: impl IntoIterator<Item = usize>,
) -> DateTime<Utc> {
    set_links(relays, Link::BlackHole);
    tokio::time::sleep(outage).await;
    set_links(relays, Link::Open);
    let healed_at = Utc::now();
    for i in alive {
        wait_online(cluster, i).await;
    }
    healed_at
}

impl Cluster {
    /// Stops every daemon but `dead` (killed earlier) with SIGTERM; each
    /// must exit cleanly.
    async fn terminate_all_but(&mut self, dead: Option<usize>) {
        for (i, d) in self.daemons.iter_mut().enumerate() {
            if Some(i) != dead {
                assert_eq!(d.terminate().await, Some(0), "{} exit on SIGTERM", d.name);
            }
        }
    }
}

/// A loses Redis (its packets black-holed) for 16 s while B keeps it:
/// past A's lease (10 s) and the margin. A runs its own jobs' ticks
/// offline while its lease lasts, B leaves them to it and takes them over
/// after; nothing runs twice, and each tick nobody ran is recorded skipped
/// (a tick B recorded skipped that A ran offline is withdrawn when A is
/// back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_cut_off_alone_and_its_peer_never_both_run_a_tick() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let relay = Relay::start(redis.port()).await;
    let mut cluster = Cluster::start(redis, Some(&relay)).await;
    let of_a = cluster.owned_by_a().await;
    assert!(!of_a.is_empty(), "A owns none of {JOBS} jobs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    let cut_at = Utc::now();
    relay.set(Link::BlackHole);
    let client = cluster.client.clone();
    cluster.daemons[0]
        .wait_for_mode(&client, "offline", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(16)).await;
    relay.set(Link::Open);
    let healed_at = Utc::now();
    wait_online(&mut cluster, 0).await;
    // A's return: its offline writes flushed, its kept ticks claimed, the
    // peers settled; then a few seconds of both running.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to = Utc::now() - TimeDelta::seconds(3);
    let v = cluster.assert_every_tick_once(from, to).await;
    // A ran its jobs offline while its lease lasted: in the middle of
    // it, only A can have sent them (B leaves them to A).
    let by_a_offline = of_a
        .iter()
        .flat_map(|job| {
            (6..9).map(move |s| (job.clone(), (cut_at + TimeDelta::seconds(s)).timestamp()))
        })
        .filter(|k| v.sent.contains_key(k))
        .count();
    assert!(
        by_a_offline > 0,
        "A sent none of its jobs' ticks 6-9 s into its outage\n{}",
        cluster.logs()
    );
    // B took A's jobs over after the lease: ticks left to A that A did not
    // run are recorded skipped as `offline`.
    assert!(
        v.offline > 0,
        "no tick recorded skipped while A's jobs were left to it\n{}",
        cluster.logs()
    );
    // After the heal, both run every job again.
    let idle: Vec<String> = jobs()
        .into_iter()
        .filter(|job| {
            !(4..8).any(|s| {
                let t = (healed_at + TimeDelta::seconds(s)).timestamp();
                v.sent.contains_key(&(job.clone(), t))
            })
        })
        .collect();
    if !idle.is_empty() {
        let store = cluster.store();
        let mut held = Vec::new();
        for job in &idle {
            let members = std::process::Command::new("redis-cli")
                .args(["-p", &cluster.redis.port().to_string(), "SMEMBERS"])
                .arg(format!("herald:inflight:{job}"))
                .output()
                .expect("redis-cli runs");
            for run in String::from_utf8_lossy(&members.stdout).lines() {
                held.push((run.to_string(), store.record(&RunId(run.to_string())).await));
            }
        }
        panic!(
            "not run 4-8 s after the heal: {idle:?}; in flight: {held:?}\n{}",
            cluster.logs()
        );
    }
    eprintln!(
        "partition: {} ticks ran, {} skipped ({} offline), {} of A's sent by A offline",
        v.ran, v.skipped, v.offline, by_a_offline
    );
    cluster.terminate_all_but(None).await;
}

/// Redis loses its data (restarted without it) while A is cut off from
/// it, holding ticks B may have run (B claims A's ticks while A's lease
/// still looks fresh). Back, A finds the claims gone: it waits until B
/// has written back the claims it won, so no tick B ran runs again on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_a_peer_ran_before_redis_lost_its_data_do_not_run_again() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let relay = Relay::start(redis.port()).await;
    let mut cluster = Cluster::start(redis, Some(&relay)).await;
    // (From before the cut: the ticks at risk are B's runs of A's jobs
    // right after it.)
    let from = Utc::now() + TimeDelta::seconds(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.set(Link::BlackHole);
    let client = cluster.client.clone();
    cluster.daemons[0]
        .wait_for_mode(&client, "offline", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Skip entries recorded so far go with the data: read them first.
    let mut skips = cluster
        .store()
        .skipped(None, 100_000)
        .await
        .expect("skips read");
    let restarted_at = Utc::now();
    cluster.redis.restart_empty();
    cluster.daemons[1]
        .wait_for_mode(&client, "online", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.set(Link::Open);
    wait_online(&mut cluster, 0).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to = Utc::now() - TimeDelta::seconds(3);
    skips.extend(
        cluster
            .store()
            .skipped(None, 100_000)
            .await
            .expect("skips read"),
    );
    let sent = cluster.sent();
    let verdict = judge(
        &jobs(),
        from,
        to,
        |job, at| {
            sent.get(&(job.to_string(), at.timestamp()))
                .copied()
                .unwrap_or(0)
        },
        &skips,
    );
    cluster.dump_logs();
    // Runs queued but not yet read when the data went are lost with it.
    let near_restart = |name: &String| {
        name.rsplit_once('@')
            .and_then(|(_, hms)| chrono::NaiveTime::parse_from_str(hms, "%H:%M:%S").ok())
            .is_some_and(|t| {
                let at = restarted_at.date_naive().and_time(t).and_utc();
                (at - restarted_at).num_seconds().abs() <= 2
            })
    };
    let lost: Vec<&String> = verdict.lost.iter().filter(|n| !near_restart(n)).collect();
    assert!(
        verdict.twice.is_empty() && verdict.ran_and_skipped.is_empty() && lost.is_empty(),
        "{verdict:?}\n{}",
        cluster.logs()
    );
    for d in &cluster.daemons {
        let log = std::fs::read_to_string(d.log()).unwrap_or_default();
        assert!(
            log.contains("redis lost its data"),
            "{} did not notice the data loss\n{}",
            d.name,
            cluster.logs()
        );
    }
    eprintln!(
        "data loss: {} ticks, {} ran, {} skipped, {} lost near the restart",
        verdict.ticks,
        verdict.ran,
        verdict.skipped,
        verdict.lost.len()
    );
    cluster.terminate_all_but(None).await;
}

/// A is SIGKILLed mid-run: B leaves A's jobs to it until A's lease is
/// over (10 s and the margin), then takes them over, records the ticks
/// between as skipped (`offline`) and finishes the runs A left (so that,
/// under overlap `skip`, they do not hold the jobs back). A started again
/// and stopped with SIGTERM gives its lease up: B takes over at once,
/// nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_daemons_jobs_wait_out_its_lease_and_a_stopped_ones_do_not() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let mut cluster = Cluster::start(redis, None).await;
    let of_a = cluster.owned_by_a().await;
    assert!(!of_a.is_empty(), "A owns none of {JOBS} jobs");
    let a_id = cluster.daemons[0].id(&cluster.client).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Kill A while its runs of one tick wait for Telegram's answer. Online,
    // either daemon may win a tick's claim: try ticks until A has won one
    // of its jobs' (Redis shows the run started: its store writes in
    // batches, and a loaded machine starts runs late).
    let store = cluster.store();
    let mut left = Vec::new();
    for _ in 0..5 {
        let in_flight = support::ceil_second(Utc::now() + TimeDelta::milliseconds(500));
        let until = |ms: i64| {
            (in_flight + TimeDelta::milliseconds(ms) - Utc::now())
                .to_std()
                .unwrap_or_default()
        };
        // (Set just before the tick: a run of the tick before that waits
        // too would hold this tick back, overlap `skip`.)
        tokio::time::sleep(until(-200)).await;
        cluster.fake.set_latency(Duration::from_secs(3));
        while left.is_empty() && Utc::now() < in_flight + TimeDelta::milliseconds(2_000) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            for job in &of_a {
                let id = RunId::for_tick(job, in_flight);
                if let Ok(Some(r)) = store.record(&id).await
                    && r.status == RunStatus::Running
                    && r.daemon.as_deref() == Some(a_id.as_str())
                {
                    left.push(id);
                }
            }
        }
        if !left.is_empty() {
            break;
        }
        // B won them all: let its slow runs end, then try again.
        cluster.fake.set_latency(Duration::ZERO);
        tokio::time::sleep(until(4_000)).await;
    }
    let from = Utc::now() + TimeDelta::seconds(1);
    let killed_at = Utc::now();
    cluster.daemons[0].kill();
    cluster.fake.set_latency(Duration::ZERO);
    assert!(
        !left.is_empty(),
        "no run of A's in flight when it was killed\n{}",
        cluster.logs()
    );
    tokio::time::sleep(Duration::from_secs(17)).await;
    let to = Utc::now() - TimeDelta::seconds(2);
    let v = cluster.assert_every_tick_once(from, to).await;
    for id in &left {
        let r = store.record(id).await.expect("a record read");
        let r = r.expect("a record");
        assert!(
            r.status.is_terminal() && r.taken_over_from.as_deref() == Some(a_id.as_str()),
            "{id}, left running by the dead daemon, not finished by B: {r:?}\n{}",
            cluster.logs()
        );
    }
    assert!(
        v.offline > 0,
        "no tick of the dead daemon's jobs recorded skipped\n{}",
        cluster.logs()
    );
    assert!(
        v.offline as usize <= of_a.len() * 16,
        "{} ticks skipped for {} jobs in 17 s",
        v.offline,
        of_a.len()
    );
    // 15 s after the kill, A's jobs run on B.
    let t = (killed_at + TimeDelta::seconds(15)).timestamp();
    for job in &of_a {
        assert!(
            v.sent.contains_key(&(job.clone(), t)),
            "{job} not run 15 s after its owner died\n{}",
            cluster.logs()
        );
    }
    // A again, then a graceful stop.
    cluster.daemons[0].spawn();
    wait_online(&mut cluster, 0).await;
    let client = cluster.client.clone();
    cluster.daemons[0]
        .wait_for_peers(&client, 2, Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now();
    assert_eq!(
        cluster.daemons[0].terminate().await,
        Some(0),
        "A exit on SIGTERM"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let to = Utc::now() - TimeDelta::seconds(2);
    let v = cluster.assert_every_tick_once(from, to).await;
    assert_eq!(
        v.skipped,
        0,
        "ticks skipped around a graceful stop\n{}",
        cluster.logs()
    );
    let id = RunId::for_tick(&of_a[0], to);
    assert!(
        v.sent.contains_key(&(of_a[0].clone(), to.timestamp())),
        "{id} did not run"
    );
    assert_eq!(
        cluster.daemons[1].terminate().await,
        Some(0),
        "B exit on SIGTERM"
    );
}

/// Three daemons. K owns a job among all three, X among the two left. K
/// dies; X is cut off before K's lease is over, so by the peers X saw
/// last the job is K's, and X leaves its ticks to K. O, online, sees K's
/// lease end and the job become X's, and leaves its ticks to silent X.
/// X is back before its own lease ends: the ticks between were run by
/// nobody, and X, finding K's lease over, records them skipped
/// (`offline`), not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_a_cut_off_daemon_left_to_a_dead_owner_are_recorded() {
    let _serial = SERIAL.lock().await;
    let Heirs {
        mut cluster,
        relays,
        job,
        k,
        x,
    } = Heirs::start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    let killed_at = Utc::now();
    cluster.daemons[k].kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    relays[x].set(Link::BlackHole);
    let client = cluster.client.clone();
    cluster.daemons[x]
        .wait_for_mode(&client, "offline", Duration::from_secs(5))
        .await;
    // Back 13.5 s after the kill: K's lease (10 s) is over, X's (renewed
    // until 4 s) is not.
    let back = (killed_at + TimeDelta::milliseconds(13_500) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(back).await;
    relays[x].set(Link::Open);
    let healed_at = Utc::now();
    wait_online(&mut cluster, x).await;
    // X's runs of the ticks it kept (a peer may have claimed them) run
    // late, one message a second per chat: judged once they are out.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let to = healed_at + TimeDelta::seconds(3);
    let v = cluster.assert_every_tick_once(from, to).await;
    // The ticks between K's lease end (as O saw it) and X's return.
    let gap = ((killed_at + TimeDelta::seconds(12)).timestamp()..healed_at.timestamp())
        .filter(|t| !v.sent.contains_key(&(job.clone(), *t)))
        .count();
    assert!(
        gap > 0,
        "{job} ran between its owner's lease end and the return of its heir\n{}",
        cluster.logs()
    );
    cluster.terminate_all_but(Some(k)).await;
}

/// As above, K dies and X, cut off while K's lease lasted, comes back
/// counting K among the peers of before its outage. Then Redis is cut
/// from every daemon for a moment, after K's lease is over. Back from
/// that, O hands K's job to X (by the peers O saw last), and X, still back
/// from its first outage, must not leave it to K: a peer whose lease is
/// over fires nothing. Every tick of the job runs or is recorded skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_back_from_an_outage_leaves_no_job_to_a_peer_whose_lease_is_over() {
    let _serial = SERIAL.lock().await;
    let Heirs {
        mut cluster,
        relays,
        job,
        k,
        x,
    } = Heirs::start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    let killed_at = Utc::now();
    cluster.daemons[k].kill();
    let at = |ms: i64| {
        (killed_at + TimeDelta::milliseconds(ms) - Utc::now())
            .to_std()
            .unwrap_or_default()
    };
    tokio::time::sleep(at(4_000)).await;
    relays[x].set(Link::BlackHole);
    tokio::time::sleep(at(11_000)).await;
    relays[x].set(Link::Open);
    // K's lease is over for everyone 12.6 s after the kill.
    tokio::time::sleep(at(13_500)).await;
    let healed_at = cut_redis_from_all(
        &mut cluster,
        &relays,
        at(16_000),
        (0..3).filter(|i| *i != k),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let to = healed_at + TimeDelta::seconds(6);
    let v = cluster.assert_every_tick_once(from, to).await;
    // Once back, the job runs again (on X or O).
    let ran_after = ((healed_at + TimeDelta::seconds(2)).timestamp()..to.timestamp())
        .filter(|t| v.sent.contains_key(&(job.clone(), *t)))
        .count();
    assert!(
        ran_after > 0,
        "{job} did not run after the return\n{}",
        cluster.logs()
    );
    cluster.terminate_all_but(Some(k)).await;
}

/// Redis cut from both daemons (black-holed) for 14 s, past their leases
/// (10 s): each runs its own jobs offline while its lease lasts, then
/// stops. Back, the ticks nobody ran go to the misfire policy (default
/// `skip`): every tick ran or is recorded skipped, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_past_every_lease_in_an_outage_are_recorded_skipped() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let relays = [
        Relay::start(redis.port()).await,
        Relay::start(redis.port()).await,
    ];
    let urls = [relays[0].redis_url(), relays[1].redis_url()];
    let mut cluster = Cluster::start_on(redis, &urls).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    let cut_at = Utc::now();
    let healed_at = cut_redis_from_all(&mut cluster, &relays, Duration::from_secs(14), 0..2).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let to = healed_at + TimeDelta::seconds(4);
    let v = cluster.assert_every_tick_once(from, to).await;
    // Past the leases nothing ran: those ticks are the skipped ones.
    let past_leases = (cut_at + TimeDelta::seconds(11)).timestamp();
    assert!(
        !v.sent.keys().any(|(_, t)| *t == past_leases),
        "a tick ran past every lease\n{}",
        cluster.logs()
    );
    cluster.terminate_all_but(None).await;
}

/// A job added on A while Redis was away from it a second time (back
/// from a first outage, before its resync) fires on A offline: B, its
/// owner, online all along, does not know it. Once A is back the job is
/// written and B learns it and runs it; Redis then goes from A again,
/// before A's resync after the outage. The job is B's, known there: A
/// must not fire it offline too (it did, and the Jepsen run found the
/// tick sent twice). Every tick of the job ran once or is recorded
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_added_while_redis_was_away_again_is_left_to_its_owner_once_written() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let relay = Relay::start(redis.port()).await;
    let mut cluster = Cluster::start(redis, Some(&relay)).await;
    let client = cluster.client.clone();
    let a = cluster.daemons[0].id(&client).await;
    let b = cluster.daemons[1].id(&client).await;
    let both = BTreeSet::from([a, b.clone()]);
    // A job B owns, messaging its own chat (as the config jobs do).
    let j = (JOBS..JOBS + 64)
        .find(|j| owner(&job_id(*j), &both) == Some(b.as_str()))
        .expect("a job id B owns");
    let job = job_id(j);
    // Redis away from A and back: A is back from an outage, its resync
    // due a second or so later; Redis goes from it again before that.
    relay.set(Link::BlackHole);
    cluster.daemons[0]
        .wait_for_mode(&client, "offline", Duration::from_secs(5))
        .await;
    relay.set(Link::Open);
    wait_online(&mut cluster, 0).await;
    relay.set(Link::BlackHole);
    cluster.daemons[0]
        .wait_for_mode(&client, "offline", Duration::from_secs(5))
        .await;
    // A adds the job meanwhile: it fires there. The scheduler may be
    // inside a Redis call that went out just before the cut, so the
    // answer can wait out Redis's timeouts (pool wait 1 s, response
    // 0.5 s, the store's flush as well): more than the client's 2 s on a
    // loaded machine.
    let created = client
        .post(format!(
            "http://127.0.0.1:{}/api/jobs",
            cluster.daemons[0].http
        ))
        .json(&serde_json::json!({
            "id": job,
            "schedule": "* * * * * *",
            "template": "tick {{ run_id }}",
            "include": [CHAT + j as i64],
        }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the API answers");
    assert!(
        created.status().is_success(),
        "job created: {}",
        created.status()
    );
    let from = Utc::now() + TimeDelta::seconds(1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Back: once B knows the job, Redis goes from A again, before A's
    // resync after the outage.
    relay.set(Link::Open);
    wait_online(&mut cluster, 0).await;
    let url = format!(
        "http://127.0.0.1:{}/api/jobs/{job}",
        cluster.daemons[1].http
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let known = client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if known {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never learned {job}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 8 s: past the ticks B may have claimed while it saw A's lease fresh
    // (A keeps those to claim once back) and within A's lease (10 s),
    // so A fires offline what it judges its own.
    relay.set(Link::BlackHole);
    tokio::time::sleep(Duration::from_secs(8)).await;
    relay.set(Link::Open);
    let healed_at = Utc::now();
    wait_online(&mut cluster, 0).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let to = healed_at + TimeDelta::seconds(3);
    cluster
        .assert_ticks_once(std::slice::from_ref(&job), from, to)
        .await;
    cluster.terminate_all_but(None).await;
}

/// A is back from an outage, and B, which owns half the jobs, stops
/// (SIGSTOP) at that very moment, its lease still alive. Until its resync
/// A judges ownership over the peers it saw before the outage and leaves
/// B's jobs to B, which fires nothing; once B's lease is over, A takes
/// them over and records every tick B never ran, those of A's return
/// included (the Jepsen run lost one tick that way: `custom-2@11:39:01`,
/// its owner paused a second before A and B came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_left_to_an_owner_that_stopped_as_a_daemon_came_back_are_recorded() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let relay = Relay::start(redis.port()).await;
    let mut cluster = Cluster::start(redis, Some(&relay)).await;
    let client = cluster.client.clone();
    let of_a = cluster.owned_by_a().await;
    let of_b: Vec<String> = jobs().into_iter().filter(|j| !of_a.contains(j)).collect();
    assert!(!of_b.is_empty(), "B owns none of {JOBS} jobs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    relay.set(Link::BlackHole);
    cluster.daemons[0]
        .wait_for_mode(&client, "offline", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.set(Link::Open);
    let paused_at = Utc::now();
    cluster.daemons[1].pause();
    wait_online(&mut cluster, 0).await;
    // B's lease (10 s from its last renewal) and the margin are over.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let to = Utc::now() - TimeDelta::seconds(1);
    cluster.daemons[1].resume();
    wait_online(&mut cluster, 1).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let v = cluster.assert_ticks_once(&of_b, from, to).await;
    // B's jobs ran on neither daemon from the pause to B's lease end.
    let ran_while_paused = of_b
        .iter()
        .flat_map(|j| {
            let (from, to) = (paused_at.timestamp() + 3, paused_at.timestamp() + 9);
            (from..to).map(move |t| (j.clone(), t))
        })
        .filter(|k| v.sent.contains_key(k))
        .count();
    assert_eq!(
        ran_while_paused,
        0,
        "a job of the paused B ran within its lease\n{}",
        cluster.logs()
    );
    assert!(
        v.offline > 0,
        "nothing recorded offline\n{}",
        cluster.logs()
    );
    cluster.terminate_all_but(None).await;
}

/// Redis is cut from both daemons for 12 s, past their leases, then
/// back; B is killed half a second after its return, before its resync.
/// B kept back the first ticks of the outage (a peer may have claimed
/// them while it still saw B's lease fresh), to claim at the resync, and
/// left those past its lease to record then: killed, it does neither. A
/// saw B renew after the return, so it leaves B's jobs to B; but it
/// holds B's ticks until B has renewed long enough to have resynced, and
/// once B's lease is over it records them (the Jepsen run lost 11 ticks
/// of a daemon killed 2 s after such a return).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_a_peer_killed_before_its_resync_kept_back_are_recorded() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let relays = [
        Relay::start(redis.port()).await,
        Relay::start(redis.port()).await,
    ];
    let urls: Vec<String> = relays.iter().map(Relay::redis_url).collect();
    let mut cluster = Cluster::start_on(redis, &urls).await;
    let client = cluster.client.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    set_links(&relays, Link::BlackHole);
    tokio::time::sleep(Duration::from_secs(12)).await;
    set_links(&relays, Link::Open);
    cluster.daemons[1]
        .wait_for_mode(&client, "online", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.daemons[1].kill();
    wait_online(&mut cluster, 0).await;
    // B's lease (10 s), the margin, and a few ticks of A alone.
    tokio::time::sleep(Duration::from_secs(18)).await;
    let to = Utc::now() - TimeDelta::seconds(2);
    let v = cluster.assert_every_tick_once(from, to).await;
    assert!(
        v.offline > 0,
        "nothing recorded offline\n{}",
        cluster.logs()
    );
    cluster.terminate_all_but(Some(1)).await;
}

/// Redis is cut from three daemons; C is killed meanwhile. Back, A and B
/// wait for C's lease to end before their resync (C may be firing its
/// jobs offline), and C starts again, a new daemon, which judges
/// ownership over A, B and itself. Redis is cut from all again before
/// A's and B's resync: each must count the new C too, or a job the new C
/// owns runs on it and on its old owner (the Jepsen run sent two jobs'
/// ticks twice that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_between_two_outages_shares_the_jobs_with_the_returning_ones() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start_persistent();
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(Relay::start(redis.port()).await);
    }
    let urls: Vec<String> = relays.iter().map(Relay::redis_url).collect();
    let mut cluster = Cluster::start_on(redis, &urls).await;
    let client = cluster.client.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = Utc::now() + TimeDelta::seconds(1);
    let old_c = cluster.daemons[2].id(&client).await;
    set_links(&relays, Link::BlackHole);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.daemons[2].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_links(&relays, Link::Open);
    for i in 0..2 {
        wait_online(&mut cluster, i).await;
    }
    let a = cluster.daemons[0].id(&client).await;
    let b = cluster.daemons[1].id(&client).await;
    // What A and B judged by before the fix: the peers of before the
    // outage.
    let before = BTreeSet::from([a.clone(), b.clone(), old_c]);
    // The new C, started again until it owns a job that A or B owned
    // with the old C (each start draws a new daemon id).
    let mut c = String::new();
    for attempt in 0.. {
        cluster.daemons[2].spawn();
        wait_online(&mut cluster, 2).await;
        c = cluster.daemons[2].id(&client).await;
        let mut now = before.clone();
        now.insert(c.clone());
        let moved = jobs().iter().any(|j| {
            owner(j, &now) == Some(c.as_str())
                && owner(j, &before).is_some_and(|o| o == a || o == b)
        });
        if moved || attempt == 5 {
            break;
        }
        cluster.daemons[2].kill();
    }
    // A and B see the new C.
    for i in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ready = cluster.daemons[i].ready(&client).await;
            let sees = ready
                .as_ref()
                .and_then(|r| r["peers"].as_array())
                .is_some_and(|p| p.iter().any(|d| d.as_str() == Some(c.as_str())));
            if sees {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw the new C\n{}",
                cluster.daemons[i].name,
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // 9 s: past the ticks a peer may have claimed (5.5 s), within the
    // leases, so each daemon runs offline the jobs it judges its own.
    let healed_at = cut_redis_from_all(&mut cluster, &relays, Duration::from_secs(9), 0..3).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let to = healed_at + TimeDelta::seconds(3);
    cluster.assert_every_tick_once(from, to).await;
    cluster.terminate_all_but(None).await;
}
