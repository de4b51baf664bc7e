//! Redis reachability: one watcher decides online/offline for the whole
//! daemon, and keeps the set of daemons alive (heartbeats) for offline
//! ownership of ticks.
//!
//! The watcher pings Redis on a connection of its own (so a pool exhausted
//! by stuck commands cannot hide a healthy server, or the reverse) every
//! [`PING_EVERY`], each ping bounded by [`PING_TIMEOUT`]: a refused port is
//! seen at the next ping, a silent one at the timeout, both well inside a
//! second. On a change it logs, and tells every actor through `on_change`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::{self, AsyncConnectionConfig, aio::MultiplexedConnection};
use tokio::sync::watch;

use crate::redis_backend::Keys;
use crate::telemetry;

pub const PING_EVERY: Duration = Duration::from_millis(200);
pub const PING_TIMEOUT: Duration = Duration::from_millis(400);
/// A daemon whose heartbeat is older than this is presumed dead.
pub const PEER_TTL: Duration = Duration::from_secs(5);

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
    /// Daemons seen alive at the last successful heartbeat, this one
    /// included. Kept unchanged while offline.
    pub peers: BTreeSet<String>,
    /// `{p}:jobs:version` at the last heartbeat: it changes whenever any
    /// daemon writes a job, so an edit made through one daemon reaches the
    /// others within a heartbeat. Kept unchanged while offline.
    pub jobs_version: u64,
}

/// Runs until `stop` flips: pings, writes this daemon's heartbeat, reads
/// the peers, and calls `on_change` whenever mode or peers change.
pub async fn watch_redis(
    url: String,
    keys: Keys,
    daemon_id: String,
    initial: Health,
    status: watch::Sender<Health>,
    mut on_change: impl FnMut(&Health) + Send,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut current = initial;
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
        let beat =
            tokio::time::timeout(PING_TIMEOUT, heartbeat(&url, &mut conn, &keys, &daemon_id)).await;
        telemetry::redis_round_trip("heartbeat", started.elapsed(), matches!(beat, Ok(Ok(_))));
        let next = match beat {
            Ok(Ok((peers, jobs_version))) => Health {
                mode: Mode::Online,
                peers,
                jobs_version,
            },
            Ok(Err(_)) | Err(_) => {
                conn = None;
                Health {
                    mode: Mode::Offline,
                    peers: current.peers.clone(),
                    jobs_version: current.jobs_version,
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

/// One heartbeat: record this daemon as alive, drop stale peers, return the
/// live ones and the jobs' version. A single round trip.
async fn heartbeat(
    url: &str,
    conn: &mut Option<MultiplexedConnection>,
    keys: &Keys,
    daemon_id: &str,
) -> redis::RedisResult<(BTreeSet<String>, u64)> {
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
    let Some(c) = conn.as_mut() else {
        return Ok((BTreeSet::new(), 0));
    };
    let now = Utc::now().timestamp_millis();
    let stale_before = now - PEER_TTL.as_millis() as i64;
    let daemons = keys.daemons();
    let (_, _, peers, version): ((), (), Vec<String>, Option<u64>) = redis::pipe()
        .zadd(&daemons, daemon_id, now)
        .cmd("ZREMRANGEBYSCORE")
        .arg(&daemons)
        .arg("-inf")
        .arg(format!("({stale_before}"))
        .cmd("ZRANGE")
        .arg(&daemons)
        .arg(0)
        .arg(-1)
        .get(keys.jobs_version())
        .query_async(c)
        .await?;
    Ok((peers.into_iter().collect(), version.unwrap_or(0)))
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
