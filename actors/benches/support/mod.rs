//! Shared by the benches.

/// CPU time (user + system) this process has used, from /proc (Linux), in
/// seconds, at the kernel's 10 ms tick resolution.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// Puts `n` PENDING runs of the no-op coded job `noop` on the run queue
/// (one per second from a fixed instant, `chunk` per pipeline), as a drain
/// starts from. Returns how many the queue refused (0 on an empty prefix).
// Not every bench that includes this module drains a queue.
#[allow(dead_code)]
pub async fn preload_noop_runs(
    store: &herald_actors::redis_backend::RedisStore,
    n: u64,
    chunk: usize,
) -> Result<usize, herald_actors::redis_backend::BackendError> {
    use herald_actors::record::{ExecutionRecord, RunId, Trigger};
    let base = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let now = chrono::Utc::now();
    let mut refused = 0;
    let mut i = 0u64;
    while i < n {
        let records: Vec<ExecutionRecord> = (i..n.min(i + chunk.max(1) as u64))
            .map(|k| {
                let at = base + chrono::TimeDelta::seconds(k as i64);
                ExecutionRecord::pending(
                    RunId::for_tick("noop", at),
                    "noop",
                    Trigger::Schedule,
                    at,
                    1,
                    now,
                )
            })
            .collect();
        refused += store
            .enqueue(&records, "bench-loader", None)
            .await?
            .iter()
            .filter(|q| !**q)
            .count();
        i += chunk.max(1) as u64;
    }
    Ok(refused)
}
