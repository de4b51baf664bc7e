//! Redis reachability: one watcher decides online/offline for the whole
//! daemon, and keeps the set of daemons alive (heartbeats) for offline
//! ownership of ticks.
//!
//! The watcher pings Redis on a connection of its own (so a pool exhausted
//! by stuck commands cannot hide a healthy server, or the reverse) every
//! [`PING_EVERY`], each ping bounded by [`PING_TIMEOUT`]: a refused port is
//! seen at the next ping, a silent one at the timeout, both well inside a
//! second. On a change it logs, and tells every actor through `on_change`.
//!
//! # Leases
//!
//! Each heartbeat also renews this daemon's lease, `{p}:daemon_lease:{daemon}`, a
//! key with a TTL of [`LeaseTiming::ttl`], and reads the peers' leases.
//! Offline, a daemon that has peers fires the jobs it owns only while its
//! own lease is alive by its own monotonic clock ([`LeaseClock`]); its
//! peers, online, leave those jobs alone from the moment its lease stops
//! being renewed until it has expired, by their own reading, plus a
//! margin for clocks. So a daemon cut off alone and its online peers
//! never both run a job's tick (see [`LeaseTiming`] for the exact rule).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::{self, AsyncConnectionConfig, aio::MultiplexedConnection};
use tokio::sync::watch;

use crate::redis_backend::Keys;
use crate::telemetry;

pub const PING_EVERY: Duration = Duration::from_millis(200);
pub const PING_TIMEOUT: Duration = Duration::from_millis(400);
/// Back from an outage, a peer not heard from for this long since is
/// presumed dead (once its lease is over too).
pub const PEER_TTL: Duration = Duration::from_secs(5);
/// A peer whose lease was renewed within this long is online: it claims
/// its ticks, so every daemon may fire its jobs too (claims decide).
pub const LEASE_FRESH: Duration = Duration::from_secs(1);
/// The longest a command sent to Redis may take to get there (a renewal
/// that timed out here may still land that much later).
pub const NETWORK_DELAY: Duration = Duration::from_secs(1);
/// How far ahead of its tick a run may be claimed (overlap `allow`).
pub const FIRE_AHEAD: Duration = Duration::from_millis(1_500);
/// Heartbeat entries older than this are trimmed (past any lease).
const BEAT_KEPT: Duration = Duration::from_secs(300);

/// The lease's timing, the same on every daemon sharing a Redis.
///
/// The guarantee: while a peer P is online, its lease is renewed every
/// [`PING_EVERY`]. An online daemon D fires (claims) the ticks of a job
/// P owns only while P's lease was renewed within [`LEASE_FRESH`]; from
/// then on D leaves them to P until P's lease has expired (by the expiry
/// D last read, on D's monotonic clock) plus [`LeaseTiming::margin`], and
/// then takes the job over. P, offline, counts from the start of its last
/// renewal that succeeded: ticks within [`LeaseTiming::uncertain`] of it
/// may have been claimed by a peer, so P fires none of them but keeps
/// them and claims them when Redis is back (run then, late, if no one
/// else did); ticks after that and before its lease ends ([`LeaseTiming::ttl`])
/// it runs offline; later ones it leaves to the peer that takes over.
/// This holds as long as the daemons' wall clocks agree within
/// `clock_skew`, their monotonic clocks run at the same rate within 1%,
/// and no daemon stalls for longer than the margin between deciding to
/// run a tick and starting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: Duration,
    pub clock_skew: Duration,
}

pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(1);

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: DEFAULT_LEASE_TTL,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

impl LeaseTiming {
    /// After a daemon's last renewal, how long a peer may still fire (and
    /// claim) its jobs' ticks: the peer may read the lease up to
    /// [`LEASE_FRESH`] after the renewal (which itself may land up to
    /// [`NETWORK_DELAY`] after it was sent), claims `allow` runs
    /// [`FIRE_AHEAD`] of their tick, and the two wall clocks may differ
    /// by the skew either way.
    pub fn uncertain(&self) -> Duration {
        LEASE_FRESH + NETWORK_DELAY + FIRE_AHEAD + 2 * self.clock_skew
    }

    /// How long past a peer's lease expiry a daemon waits before taking
    /// its jobs over: the two wall clocks (tick times) may differ by the
    /// skew either way, the monotonic clocks' rates by 1% of the TTL.
    pub fn margin(&self) -> Duration {
        2 * self.clock_skew + self.ttl / 100 + Duration::from_millis(500)
    }
}

/// This daemon's own lease, by its own monotonic clock: when the last
/// renewal that succeeded was sent, and when the last one was sent at all
/// (one that timed out may still land in Redis, later, and show peers a
/// fresh lease).
#[derive(Debug)]
pub struct LeaseClock {
    timing: LeaseTiming,
    base: tokio::time::Instant,
    /// Nanoseconds after `base` of the last successful renewal's start,
    /// plus one (0: never renewed).
    renewed: AtomicU64,
    /// The same for the last renewal sent, answered or not.
    sent: AtomicU64,
}

/// Where this daemon stands on its own lease, offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A peer may have claimed ticks since the last renewal.
    Uncertain,
    /// Alive: this daemon's owned ticks are its own to run.
    Leased,
    /// Over (or never taken): peers take the jobs over.
    Expired,
}

impl LeaseClock {
    pub fn new(timing: LeaseTiming) -> Arc<LeaseClock> {
        Arc::new(LeaseClock {
            timing,
            base: tokio::time::Instant::now(),
            renewed: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        })
    }

    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    fn stamp(&self, at: tokio::time::Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn renewed_at(&self, at: tokio::time::Instant) {
        self.renewed.store(self.stamp(at), Ordering::Release);
    }

    fn sent_at(&self, at: tokio::time::Instant) {
        self.sent.store(self.stamp(at), Ordering::Release);
    }

    /// Forgets the lease (released on a graceful stop).
    pub fn released(&self) {
        self.renewed.store(0, Ordering::Release);
    }

    fn since(&self, stamp: &AtomicU64) -> Option<Duration> {
        let nanos = stamp.load(Ordering::Acquire);
        (nanos > 0).then(|| (self.base + Duration::from_nanos(nanos - 1)).elapsed())
    }

    /// How long ago the last renewal that succeeded was sent.
    pub fn age(&self) -> Option<Duration> {
        self.since(&self.renewed)
    }

    /// Ticks (wall clock) before this may have been claimed by a peer that
    /// still saw this lease fresh: [`LeaseTiming::uncertain`] after the last
    /// renewal sent (now, if none was).
    pub fn uncertain_until(&self) -> chrono::DateTime<Utc> {
        let now = Utc::now();
        let sent = self.since(&self.sent).unwrap_or_default();
        let since = chrono::TimeDelta::from_std(sent).unwrap_or(chrono::TimeDelta::MAX);
        let uncertain =
            chrono::TimeDelta::from_std(self.timing.uncertain()).unwrap_or(chrono::TimeDelta::MAX);
        now.checked_sub_signed(since)
            .and_then(|t| t.checked_add_signed(uncertain))
            .unwrap_or(now)
    }

    /// Uncertain within [`LeaseTiming::uncertain`] of the last renewal
    /// sent (it may have landed); leased until the TTL after the last that
    /// succeeded (a later one that landed only makes the lease in Redis
    /// longer, and peers wait for that).
    pub fn standing(&self) -> Standing {
        let Some(age) = self.age() else {
            return Standing::Expired;
        };
        if age >= self.timing.ttl {
            return Standing::Expired;
        }
        let sent = self.since(&self.sent).unwrap_or(age);
        if sent < self.timing.uncertain() {
            Standing::Uncertain
        } else {
            Standing::Leased
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Online,
    Offline,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Offline => "offline",
        }
    }
}

/// FNV-1a, 64 bit, then MurmurHash3's finaliser: a hash every daemon
/// computes identically, whatever its build (std's hasher makes no such
/// promise across Rust versions). FNV-1a alone mixes too little for
/// rendezvous hashing: two daemon ids that share a prefix (`host-pid-…`)
/// compare the same way for most jobs (of `job-0` to `job-5`, one daemon
/// owned all six for 999 random pairs of such ids in 1,000).
fn rendezvous_score(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Rendezvous (highest random weight) hashing: the daemon that owns a job
/// while Redis is unreachable. Every daemon with the same set of peers
/// picks the same owner; when a peer leaves the set only its jobs move.
pub fn owner<'a>(job_id: &str, daemons: &'a BTreeSet<String>) -> Option<&'a str> {
    daemons
        .iter()
        .max_by_key(|d| (rendezvous_score(&[d.as_str(), job_id]), d.as_str()))
        .map(String::as_str)
}

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub mode: Mode,
    /// Daemons whose lease was alive (or over for less than the margin)
    /// at the last successful heartbeat, this one included. Kept unchanged
    /// while offline.
    pub peers: BTreeSet<String>,
    /// Peers whose lease is not being renewed (stale, or over within the
    /// margin): they may be running their jobs offline, so this daemon
    /// leaves those jobs to them.
    pub stale: BTreeSet<String>,
    /// `{p}:jobs:version` at the last heartbeat: it changes whenever any
    /// daemon writes a job, so an edit made through one daemon reaches the
    /// others within a heartbeat. Kept unchanged while offline.
    pub jobs_version: u64,
    /// `{p}:epoch` at the last heartbeat (None before the first): a new
    /// one means Redis lost its data. Kept unchanged while offline.
    pub epoch: Option<String>,
}

/// Runs until `stop` flips: pings, writes this daemon's heartbeat, reads
/// the peers, and calls `on_change` whenever mode or peers change.
#[allow(clippy::too_many_arguments)]
pub async fn watch_redis(
    url: String,
    keys: Keys,
    daemon_id: String,
    lease: Arc<LeaseClock>,
    initial: Health,
    status: watch::Sender<Health>,
    mut on_change: impl FnMut(&Health) + Send,
    mut stop: watch::Receiver<bool>,
    mut leases: PeerLeases,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut current = initial;
    let timing = lease.timing();
    // Time spent offline, counted in whole seconds; the rest waits here.
    let mut offline_carry = Duration::ZERO;
    let mut last_beat = tokio::time::Instant::now();
    telemetry::mode_is_online(current.mode == Mode::Online);
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let started = tokio::time::Instant::now();
        if current.mode == Mode::Offline {
            offline_carry += started - last_beat;
            let whole = Duration::from_secs(offline_carry.as_secs());
            telemetry::offline_for(whole);
            offline_carry -= whole;
        }
        last_beat = started;
        // Offline, only a PING until Redis answers: a renewal sent now
        // might land late and show peers a fresh lease while this daemon
        // fires offline (see `LeaseClock`).
        let reachable = current.mode == Mode::Online
            || tokio::time::timeout(PING_TIMEOUT, ping(&url, &mut conn))
                .await
                .is_ok_and(|r| r.is_ok());
        let sent = tokio::time::Instant::now();
        let beat = if reachable {
            lease.sent_at(sent);
            tokio::time::timeout(
                PING_TIMEOUT,
                heartbeat(&url, &mut conn, &keys, &daemon_id, timing.ttl),
            )
            .await
            .ok()
        } else {
            None
        };
        telemetry::redis_round_trip("heartbeat", started.elapsed(), matches!(beat, Some(Ok(_))));
        let next = match beat {
            Some(Ok(Beat {
                leases: read,
                jobs_version,
                epoch,
            })) => {
                lease.renewed_at(sent);
                let (peers, stale) =
                    leases.update(&daemon_id, &read, tokio::time::Instant::now(), timing);
                if current.epoch.as_ref().is_some_and(|e| *e != epoch) {
                    tracing::warn!(
                        "redis lost its data (restarted without it, or flushed): writing back what this daemon knows"
                    );
                    telemetry::redis_data_lost();
                }
                Health {
                    mode: Mode::Online,
                    peers,
                    stale,
                    jobs_version,
                    epoch: Some(epoch),
                }
            }
            Some(Err(_)) | None => {
                conn = None;
                Health {
                    mode: Mode::Offline,
                    peers: current.peers.clone(),
                    stale: current.stale.clone(),
                    jobs_version: current.jobs_version,
                    epoch: current.epoch.clone(),
                }
            }
        };
        if next != current {
            if next.mode != current.mode {
                match next.mode {
                    Mode::Online => {
                        tracing::info!(peers = next.peers.len(), "redis reachable: online")
                    }
                    Mode::Offline => {
                        tracing::warn!("redis unreachable: offline (running from memory)")
                    }
                }
            }
            current = next;
            telemetry::mode_is_online(current.mode == Mode::Online);
            status.send_replace(current.clone());
            on_change(&current);
        }
    }
}

/// One daemon's lease as a heartbeat read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseRead {
    /// Held, with this much of its TTL left.
    Held(Duration),
    /// Given up on a graceful stop.
    Released,
    /// No lease key.
    Gone,
}

/// The lease key's value while held, and once given up.
const LEASE_HELD: &str = "held";
const LEASE_RELEASED: &str = "released";
/// A released lease's key is kept this long (peers read it as released).
const RELEASED_KEPT: Duration = Duration::from_secs(60);

/// The first heartbeat, before the scheduler starts: its catch-up of
/// missed ticks must already leave a silent peer's jobs to it. Returns
/// the peers and the stale ones, or None without an answer.
pub async fn first_beat(
    url: &str,
    keys: &Keys,
    daemon_id: &str,
    lease: &LeaseClock,
    leases: &mut PeerLeases,
) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let mut conn = None;
    let started = tokio::time::Instant::now();
    lease.sent_at(started);
    let timing = lease.timing();
    let beat = tokio::time::timeout(
        PING_TIMEOUT,
        heartbeat(url, &mut conn, keys, daemon_id, timing.ttl),
    )
    .await;
    let Ok(Ok(Beat { leases: read, .. })) = beat else {
        return None;
    };
    lease.renewed_at(started);
    Some(leases.update(daemon_id, &read, tokio::time::Instant::now(), timing))
}

/// What a daemon knows of its peers' leases, by its own monotonic clock.
#[derive(Debug, Default)]
pub struct PeerLeases {
    /// Per peer, the latest its lease can end: read time plus the TTL
    /// left then. Kept when Redis forgets the key (a restart without its
    /// data), so a peer is never given up on before its lease is over.
    expires_by: HashMap<String, tokio::time::Instant>,
}

impl PeerLeases {
    /// From one heartbeat's read of each daemon's lease, the peers (this
    /// daemon included) and the stale ones.
    fn update(
        &mut self,
        me: &str,
        read: &[(String, LeaseRead)],
        now: tokio::time::Instant,
        timing: LeaseTiming,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let fresh_above = timing.ttl.saturating_sub(LEASE_FRESH);
        let mut fresh = BTreeSet::new();
        for (id, lease) in read {
            if id == me {
                continue;
            }
            match *lease {
                LeaseRead::Held(left) => {
                    let by = now + left;
                    let e = self.expires_by.entry(id.clone()).or_insert(by);
                    *e = by.max(*e);
                    if left > fresh_above {
                        fresh.insert(id.clone());
                    }
                }
                // Given up on a graceful stop: nothing fires there.
                LeaseRead::Released => {
                    self.expires_by.remove(id);
                }
                // Expired, or lost with Redis's data: over once the
                // expiry last read is.
                LeaseRead::Gone => {}
            }
        }
        let margin = timing.margin();
        self.expires_by.retain(|_, by| now < *by + margin);
        let mut peers: BTreeSet<String> = self.expires_by.keys().cloned().collect();
        let stale = peers.difference(&fresh).cloned().collect();
        peers.insert(me.to_string());
        (peers, stale)
    }
}

/// What one heartbeat read.
struct Beat {
    leases: Vec<(String, LeaseRead)>,
    jobs_version: u64,
    epoch: String,
}

/// One heartbeat: record this daemon as alive and renew its lease, drop
/// old heartbeat entries, set the epoch if Redis has none, return each
/// daemon's lease, the jobs' version and the epoch. Two round trips: the
/// daemons listed, then their leases.
async fn heartbeat(
    url: &str,
    conn: &mut Option<MultiplexedConnection>,
    keys: &Keys,
    daemon_id: &str,
    lease_ttl: Duration,
) -> redis::RedisResult<Beat> {
    let c = connection(url, conn).await?;
    let now = Utc::now().timestamp_millis();
    let stale_before = now - BEAT_KEPT.as_millis() as i64;
    let daemons = keys.daemons();
    let lease_ms = u64::try_from(lease_ttl.as_millis()).unwrap_or(u64::MAX);
    let epoch_key = keys.epoch();
    let (_, _, _, ids, version, epoch): ((), (), (), Vec<String>, Option<u64>, Option<String>) =
        redis::pipe()
            .zadd(&daemons, daemon_id, now)
            .cmd("SET")
            .arg(keys.daemon_lease(daemon_id))
            .arg(LEASE_HELD)
            .arg("PX")
            .arg(lease_ms)
            .cmd("ZREMRANGEBYSCORE")
            .arg(&daemons)
            .arg("-inf")
            .arg(format!("({stale_before}"))
            .cmd("ZRANGE")
            .arg(&daemons)
            .arg(0)
            .arg(-1)
            .get(keys.jobs_version())
            .cmd("SET")
            .arg(&epoch_key)
            .arg(format!("{daemon_id}-{now}"))
            .arg("NX")
            .ignore()
            .get(&epoch_key)
            .query_async(c)
            .await?;
    let mut p = redis::pipe();
    for id in &ids {
        let key = keys.daemon_lease(id);
        p.get(&key).cmd("PTTL").arg(&key);
    }
    let read: Vec<(Option<String>, i64)> = if ids.is_empty() {
        Vec::new()
    } else {
        p.query_async(c).await?
    };
    let leases = ids
        .into_iter()
        .zip(read)
        .map(|(id, (value, ttl_ms))| {
            let lease = match (value.as_deref(), u64::try_from(ttl_ms)) {
                (Some(LEASE_RELEASED), _) => LeaseRead::Released,
                (Some(_), Ok(ms)) => LeaseRead::Held(Duration::from_millis(ms)),
                _ => LeaseRead::Gone,
            };
            (id, lease)
        })
        .collect();
    Ok(Beat {
        leases,
        jobs_version: version.unwrap_or(0),
        epoch: epoch.unwrap_or_default(),
    })
}

/// The watcher's own connection, made if there is none.
async fn connection<'a>(
    url: &str,
    conn: &'a mut Option<MultiplexedConnection>,
) -> redis::RedisResult<&'a mut MultiplexedConnection> {
    if conn.is_none() {
        let client = redis::Client::open(url)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(PING_TIMEOUT))
            .set_response_timeout(Some(PING_TIMEOUT));
        *conn = Some(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        );
    }
    conn.as_mut()
        .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no connection")))
}

/// PING on the watcher's connection; drops it on failure.
async fn ping(url: &str, conn: &mut Option<MultiplexedConnection>) -> redis::RedisResult<()> {
    let c = connection(url, conn).await?;
    let answer = redis::cmd("PING")
        .query_async::<String>(c)
        .await
        .map(|_| ());
    if answer.is_err() {
        *conn = None;
    }
    answer
}

/// Gives this daemon's lease up (a graceful stop): peers take its jobs
/// over at once instead of after the lease.
pub async fn release_lease(url: &str, keys: &Keys, daemon_id: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(PING_TIMEOUT))
        .set_response_timeout(Some(PING_TIMEOUT));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let kept = u64::try_from(RELEASED_KEPT.as_millis()).unwrap_or(u64::MAX);
    redis::cmd("SET")
        .arg(keys.daemon_lease(daemon_id))
        .arg(LEASE_RELEASED)
        .arg("PX")
        .arg(kept)
        .query_async::<()>(&mut c)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_daemon_agrees_on_the_owner_and_only_a_leavers_jobs_move() {
        let three = set(&["a", "b", "c"]);
        let jobs: Vec<String> = (0..300).map(|i| format!("job-{i}")).collect();
        let owners: Vec<&str> = jobs.iter().map(|j| owner(j, &three).unwrap()).collect();
        for d in ["a", "b", "c"] {
            let n = owners.iter().filter(|o| **o == d).count();
            assert!((60..=140).contains(&n), "{d} owns {n} of 300");
        }
        let two = set(&["a", "b"]);
        for (job, before) in jobs.iter().zip(&owners) {
            let after = owner(job, &two).unwrap();
            if *before != "c" {
                assert_eq!(after, *before, "{job} moved though its owner stayed");
            }
        }
        assert_eq!(owner("x", &BTreeSet::new()), None);
    }

    #[test]
    fn daemons_named_alike_share_the_jobs() {
        // Default daemon ids are `host-pid-hex`: alike but for a few
        // characters, as are job ids.
        let jobs: Vec<String> = (0..600).map(|i| format!("job-{i}")).collect();
        for pair in 0..50 {
            let ids = [
                format!("vm-{}-2a36", 1000 + pair),
                format!("vm-{}-cd26", 1000 + pair),
            ];
            let two = set(&[&ids[0], &ids[1]]);
            let first = jobs
                .iter()
                .filter(|j| owner(j, &two) == Some(&ids[0]))
                .count();
            assert!(
                (210..=390).contains(&first),
                "{ids:?}: the first owns {first} of 600"
            );
        }
    }
}
