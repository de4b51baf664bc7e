//! The Lua scripts herald runs in Redis, each atomic.
//!
//! They are sent by `EVALSHA` (a 40-byte hash instead of the source on
//! every call). Redis forgets scripts when it restarts: a `NOSCRIPT` reply
//! makes [`RedisStore::query_scripted`] load them all and send the request
//! once more, which is safe because every write herald sends is idempotent.

use std::sync::LazyLock;

use deadpool_redis::redis::{self, ErrorKind, FromRedisValue, Pipeline, Script, ServerErrorKind};

use super::store::{BackendError, RedisStore};

/// Writes a record only if it moves the run forward: (attempt, phase) with
/// PENDING < RUNNING < final, as `ExecutionRecord::progress` and the
/// in-memory store do. A PENDING flushed after another daemon's RUNNING,
/// or a RUNNING after the final record, is dropped. Fencing: within one
/// attempt, once a daemon has run it (RUNNING or final), another daemon's write
/// is dropped unless it takes the run over from that very daemon (its
/// `taken_over_from` names it). So a daemon that was paused past the
/// visibility timeout, whose run another daemon took over meanwhile,
/// cannot finish (or overwrite) that run when it wakes. A new record also joins
/// the job's history (capped, TTL) and the recent index; updates do not
/// touch the indexes.
const PUT_RECORD_FN: &str = r#"
local function progress_of(current)
  -- Read off the text: the record's own "status" and "attempt" keys are
  -- the first of their names (the fields before them hold no objects, and
  -- a quote inside a string value is escaped, so no value matches), and
  -- decoding the whole record costs Redis more than the rest of the write.
  -- Plain searches (memchr) find them: a pattern is tried at every byte
  -- and cost Redis more per record than its GET and SET together.
  local status, attempt
  local s = string.find(current, '"status":"', 1, true)
  if s then status = string.match(current, '^[%u_]+', s + 10) end
  local a = string.find(current, '"attempt":', 1, true)
  if a then attempt = string.match(current, '^%d+', a + 10) end
  if not (status and attempt) then
    local ok, old = pcall(cjson.decode, current)
    if not (ok and type(old) == 'table') then return nil end
    status, attempt = old['status'], old['attempt']
  end
  local phase = 2
  if status == 'PENDING' then phase = 0 elseif status == 'RUNNING' then phase = 1 end
  return tonumber(attempt) or 0, phase
end

-- The daemon that wrote a record (its "daemon" key, the first of its
-- name for the reason above), or nil.
local function daemon_of(current)
  local d = string.find(current, '"daemon":"', 1, true)
  if not d then return nil end
  return string.match(current, '^[^"]*', d + 10)
end

local function put_record(rkey, hkey, recent, json, ttl, attempt, phase, id, score, cap, daemon, from)
  local current = redis.call('GET', rkey)
  if current then
    local old_attempt, old_phase = progress_of(current)
    if old_attempt then
      local a, p = tonumber(attempt), tonumber(phase)
      if a < old_attempt or (a == old_attempt and p < old_phase) then
        return 0
      end
      if a == old_attempt and old_phase > 0 and daemon ~= '' then
        local holder = daemon_of(current)
        if holder and holder ~= daemon and holder ~= from then
          return 0
        end
      end
    end
  end
  redis.call('SET', rkey, json, 'EX', ttl)
  if not current then
    redis.call('ZADD', hkey, score, id)
    redis.call('ZREMRANGEBYRANK', hkey, 0, -(tonumber(cap) + 1))
    redis.call('EXPIRE', hkey, ttl)
    redis.call('ZADD', recent, score, id)
  end
  return 1
end
"#;

/// The claim fence: a claim script refuses, with the error code
/// `HERALDEPOCH`, when Redis holds another epoch than the daemon last saw
/// (or none). Redis that lost its data may still hold a claim a peer wrote
/// after the loss, but not the claims from before it: a daemon that has not
/// seen the new epoch yet (up to a heartbeat) would take a tick again that a
/// peer claimed, and perhaps ran, before the loss. Refused, it keeps the
/// runs and claims them once it has seen the new epoch and written back what
/// it knew. An empty expected epoch (tools, benchmarks) claims unfenced.
const EPOCH_FENCE_FN: &str = r"
local function fence(key, expected)
  if expected ~= '' and redis.call('GET', key) ~= expected then
    return redis.error_reply('HERALDEPOCH redis holds another epoch than this daemon last saw')
  end
  return nil
end
";

/// Many record writes in one call (one script start and one command for
/// Redis to parse instead of one per record), each only if it moves
/// its run forward (see `PUT_RECORD_FN`).
/// KEYS: recent, then per record its record and history keys. ARGV: ttl,
/// history cap, then per record json, attempt, phase, run id, score,
/// writing daemon (or ''), daemon it takes the run over from (or '').
/// Returns how many were written (the rest were behind what Redis had).
pub(super) static PUT_RECORDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PUT_RECORD_FN}
local written = 0
for i = 0, (#KEYS - 1) / 2 - 1 do
  local a = 3 + i * 7
  written = written + put_record(KEYS[2 + 2 * i], KEYS[3 + 2 * i], KEYS[1], ARGV[a], ARGV[1],
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[2], ARGV[a + 5], ARGV[a + 6])
end
return written"
    ))
});

/// Puts one claimed tick's run on the queue, once: its PENDING record, its
/// membership of the job's in-flight set and its stream entry, then marks
/// the claim `<daemon>:queued`. Sent again after a reply was lost, it finds
/// the mark and does nothing, so an enqueue can be retried until it is
/// known to have happened. A claim gone (Redis lost its data) is taken
/// again; a claim another daemon holds means that daemon runs the tick.
/// Fenced by epoch (see `EPOCH_FENCE_FN`).
/// KEYS: claim, record, history, recent, in-flight set, run stream, epoch.
/// ARGV: daemon, json, ttl, attempt, phase, run id, score, history cap,
/// in-flight ttl, claim ttl, expected epoch (or ''). Returns 1 queued, 0
/// already queued, -1 the tick is another daemon's.
pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{PUT_RECORD_FN}{EPOCH_FENCE_FN}
local fenced = fence(KEYS[7], ARGV[11])
if fenced then return fenced end
local claim = redis.call('GET', KEYS[1])
if claim == ARGV[1] .. ':queued' then return 0 end
if claim and claim ~= ARGV[1] then return -1 end
put_record(KEYS[2], KEYS[3], KEYS[4], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], '', '')
redis.call('SADD', KEYS[5], ARGV[6])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('XADD', KEYS[6], '*', 'record', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':queued', 'EX', ARGV[10])
return 1"
    ))
});

/// Raises a job's last tick only if the new one is later, atomically, so
/// two daemons (or a late write) never move it backwards.
pub(super) static RAISE_LAST_RUN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0",
    )
});

/// Claims a tick, idempotently: 1 if this daemon holds the claim (it just
/// took it, or took it earlier and the reply was lost), 0 if another does
/// (or this daemon already queued the tick).
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0",
    )
});

/// Claims the ticks of one skipped-tick entry and records the stretches
/// won, in one step: a daemon killed between a skip's claims and its
/// record would otherwise leave ticks claimed `{daemon}:skipped` that no
/// entry records (lost to every checker). Each tick is claimed like a run
/// (`SET NX`, or already this mark); each run of consecutive ticks won
/// becomes an entry (id `job|reason|first|last`, as `SkippedTicks::dedup_id`;
/// added once), then the index is trimmed to the cap. Returns 1/0 per tick.
/// Fenced by epoch (see `EPOCH_FENCE_FN`).
/// KEYS: skips index, skips data, epoch, then each tick's claim key. ARGV:
/// mark, claim TTL (s), cap, score (ms), job id (JSON string), job id,
/// reason, recorded at (RFC 3339), expected epoch (or ''), then per tick
/// its unix seconds and RFC 3339.
pub(super) static CLAIM_AND_SKIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            EPOCH_FENCE_FN,
            r#"
local fenced = fence(KEYS[3], ARGV[9])
if fenced then return fenced end
local mark, ttl = ARGV[1], ARGV[2]
local won = {}
for i = 4, #KEYS do
  local ok = redis.call('SET', KEYS[i], mark, 'NX', 'EX', ttl)
  if ok or redis.call('GET', KEYS[i]) == mark then
    won[#won + 1] = 1
  else
    won[#won + 1] = 0
  end
end
local function record(first, last, count)
  local ts1, at1 = ARGV[10 + 2 * (first - 1)], ARGV[11 + 2 * (first - 1)]
  local ts2, at2 = ARGV[10 + 2 * (last - 1)], ARGV[11 + 2 * (last - 1)]
  local id = ARGV[6] .. '|' .. ARGV[7] .. '|' .. ts1 .. '|' .. ts2
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[4], id) == 1 then
    redis.call('HSET', KEYS[2], id, '{"job_id":' .. ARGV[5] .. ',"reason":"' .. ARGV[7]
      .. '","first":"' .. at1 .. '","last":"' .. at2 .. '","count":' .. count
      .. ',"recorded_at":"' .. ARGV[8] .. '"}')
  end
end
local start = nil
for i = 1, #won + 1 do
  if won[i] == 1 then
    if not start then start = i end
  elseif start then
    record(start, i - 1, i - start)
    start = nil
  end
end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('HDEL', KEYS[2], old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
return won"#,
        ]
        .concat(),
    )
});

/// Claims a tick this daemon ran offline, written on its return. Free, or
/// already its own: claimed. Held by a peer's skip (`{daemon}:skipped`):
/// the peer took this daemon's jobs over when its lease ran out and
/// recorded the tick skipped, not knowing it ran; the claim becomes this
/// daemon's and that one-tick skip entry is withdrawn (returns 2). Held
/// by a run elsewhere: 0, nothing changed.
/// KEYS: claim, skips index, skips data. ARGV: daemon, claim TTL (s), the
/// one-tick `offline` skip entry's id.
pub(super) static CLAIM_RAN_OFFLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if string.sub(v, -8) == ':skipped' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
  return 2
end
return 0",
    )
});

/// Records skipped ticks once: the entry's id names the job, reason and
/// window, so a replayed write, or a second daemon deciding the same skip,
/// adds nothing. The oldest entries past the cap are dropped.
/// KEYS: index (sorted set by time), data (hash id -> JSON).
/// ARGV: id, score (ms), json, cap.
pub(super) static PUT_SKIPPED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('HDEL', KEYS[2], old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
return 1",
    )
});

/// Moves due retries onto the run queue, atomically (no retry is lost or
/// doubled if two daemons run this at once).
pub(super) static PROMOTE_RETRIES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, run in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'record', run)
  redis.call('ZREM', KEYS[1], run)
end
return #due",
    )
});

/// Hands queue entries this consumer read but did not start back to the
/// queue, for any daemon to read at once (rather than after the visibility
/// timeout): each still held here is acknowledged, deleted and added again
/// with the same record. KEYS[1]: the run stream. ARGV: group, then pairs
/// of entry id and record JSON. Returns how many were handed back.
pub(super) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    redis.call('XADD', KEYS[1], '*', 'record', ARGV[i + 1])
    n = n + 1
  end
end
return n",
    )
});

/// How many runs of each job are in flight: members of the job's
/// in-flight set whose record is still PENDING or RUNNING. Members whose
/// record is final or gone are dropped, so a lost removal heals itself.
/// KEYS: in-flight sets; ARGV[1]: the execution-record key prefix.
pub(super) static INFLIGHT_COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i, key in ipairs(KEYS) do
  for _, run in ipairs(redis.call('SMEMBERS', key)) do
    local live = false
    local rec = redis.call('GET', ARGV[1] .. run)
    if rec then
      local ok, r = pcall(cjson.decode, rec)
      if ok and type(r) == 'table' and (r['status'] == 'PENDING' or r['status'] == 'RUNNING') then
        live = true
      end
    end
    if not live then
      redis.call('SREM', key, run)
    end
  end
  out[i] = redis.call('SCARD', key)
end
return out",
    )
});

/// Claims the right to send one message part, once per (run, recipient,
/// part): 1 this daemon may send it (the key was free), 2 already sent,
/// 0 another daemon's send of it is (or was) in progress, 3 this daemon's
/// own claim holds it (a send task that outlived a restarted Notifier, or
/// a claim whose answer was lost: only the daemon knows which). A retry
/// after a definite failure finds the key free: the failure released it.
/// Fenced by epoch (see `EPOCH_FENCE_FN`): a Redis that lost its data
/// holds no `sent` marks until every daemon wrote back what it sent.
/// KEYS: the delivery key, epoch. ARGV: owner mark (`sending:<daemon>`),
/// ttl, expected epoch (or '').
pub(super) static CLAIM_DELIVERY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{EPOCH_FENCE_FN}
local fenced = fence(KEYS[2], ARGV[3])
if fenced then return fenced end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 1
end
local v = redis.call('GET', KEYS[1])
if v == 'sent' then return 2 end
if v == ARGV[1] then return 3 end
return 0"
    ))
});

/// Holds a lease: 1 if this owner holds it now (taken, or renewed).
/// KEYS: the lease. ARGV: owner, ttl (ms).
pub(super) static HOLD_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0",
    )
});

/// Gives a digest run its window (start, end] in unix ms, once: a run that
/// has one gets the same again (retry, reclaim); a new run starts where the
/// last window of its schedule ended and moves that mark forward. The end
/// is capped just below Redis's clock, so an item added after the claim
/// (its stream id is at least that clock) always falls in a later window.
/// KEYS: last_run, window. ARGV: wanted end (ms), window TTL (s).
/// Returns "start end"; start -1 means the inbox's beginning.
pub(super) static CLAIM_DIGEST_WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local owned = redis.call('GET', KEYS[2])
if owned then return owned end
local t = redis.call('TIME')
local clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stop = math.min(tonumber(ARGV[1]), clock - 1)
local last = redis.call('GET', KEYS[1])
local start = -1
if last then start = tonumber(last) end
if stop <= start then
  stop = start
else
  redis.call('SET', KEYS[1], stop)
end
local window = start .. ' ' .. stop
redis.call('SET', KEYS[2], window, 'EX', ARGV[2])
return window",
    )
});

fn all() -> [&'static Script; 13] {
    [
        &CLAIM_DIGEST_WINDOW,
        &HOLD_LEASE,
        &CLAIM_DELIVERY,
        &PUT_RECORDS,
        &ENQUEUE,
        &RAISE_LAST_RUN,
        &CLAIM,
        &PUT_SKIPPED,
        &CLAIM_RAN_OFFLINE,
        &CLAIM_AND_SKIP,
        &PROMOTE_RETRIES,
        &INFLIGHT_COUNTS,
        &REQUEUE,
    ]
}

/// Whether a reply (or any reply of a pipeline) is the claim fence's
/// refusal (see `EPOCH_FENCE_FN`).
pub(super) fn is_fenced(e: &redis::RedisError) -> bool {
    e.code() == Some(FENCE_CODE)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, s)| s.code() == FENCE_CODE))
}

/// The error code the claim fence replies with.
const FENCE_CODE: &str = "HERALDEPOCH";

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl RedisStore {
    /// Sends a pipeline that calls scripts by hash. If Redis does not know
    /// them (first use, or it restarted), loads every script and sends the
    /// pipeline once more: the writes that did apply the first time are
    /// idempotent, so applying them again changes nothing.
    pub(super) async fn query_scripted<T: FromRedisValue>(
        &self,
        c: &mut super::shared::Conn,
        p: &Pipeline,
    ) -> Result<T, BackendError> {
        match p.query_async::<T>(c).await {
            Err(e) if is_noscript(&e) => {
                self.count_round_trip();
                let mut load = redis::pipe();
                for script in all() {
                    load.load_script(script).ignore();
                }
                load.query_async::<()>(c).await?;
                self.count_round_trip();
                Ok(p.query_async::<T>(c).await?)
            }
            other => Ok(other?),
        }
    }
}
