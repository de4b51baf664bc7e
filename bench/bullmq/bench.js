#!/usr/bin/env node
// BullMQ half of the herald vs BullMQ benchmark.
//
//   node bench/bullmq/bench.js <scenario> --redis redis://127.0.0.1:PORT [options]
//
// Scenarios: drain, max-rate, latency, precision, footprint (see README.md).
// Prints exactly one JSON object on stdout per run; diagnostics go to stderr.
// Exit codes: 0 ok, 1 failed (error or a check on the observed work did not
// hold), 2 usage, 3 hard timeout hit, 4 did not exit after closing.
//
// The scenario never flushes Redis (the harness does FLUSHALL between runs);
// it refuses to start if its queue already holds jobs or schedulers.
'use strict';

const path = require('path');
const { fork } = require('child_process');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const BULLMQ_VERSION = require('bullmq/package.json').version;
const IOREDIS_VERSION = require('ioredis/package.json').version;

// ---------------------------------------------------------------- arguments

const USAGE = `usage: node bench.js <scenario> --redis redis://127.0.0.1:PORT [options]
  drain      --jobs 100000 --concurrency 1
  max-rate   --seconds 30 [--warmup 2] [--max-in-flight 1000] [--add-concurrency 100] [--concurrency 100]
  latency    --rate 1000 --seconds 30 --concurrency 100 [--grace 30]
  precision  --schedules 1000 --seconds 120 --burst 10000 [--mode every|cron]
             [--concurrency 100] [--lead 5] [--burst-at 5] [--grace 10]
  footprint  --schedules 100000 [--idle 10]
common: --queue NAME  --remove-on-complete keep|true|N (default keep: BullMQ's default)
        --timeout SECONDS (hard limit; exits 3)`;

function usage(msg) {
  if (msg) process.stderr.write(`bench.js: ${msg}\n`);
  process.stderr.write(USAGE + '\n');
  process.exit(2);
}

function parseArgs(argv) {
  const scenario = argv[0];
  const opts = {};
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) usage(`unexpected argument ${a}`);
    const key = a.slice(2);
    const val = argv[i + 1];
    if (val === undefined || val.startsWith('--')) usage(`option --${key} needs a value`);
    opts[key] = val;
    i++;
  }
  return { scenario, opts };
}

function num(opts, key, dflt, { min = 0, integer = true } = {}) {
  const raw = opts[key];
  if (raw === undefined) return dflt;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) {
    usage(`--${key} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${raw}`);
  }
  return v;
}

function str(opts, key, dflt, allowed) {
  const v = opts[key] === undefined ? dflt : opts[key];
  if (allowed && !allowed.includes(v)) usage(`--${key} must be one of ${allowed.join(', ')}`);
  return v;
}

function parseRedisUrl(url) {
  if (!url) usage('--redis redis://127.0.0.1:PORT is required');
  let u;
  try {
    u = new URL(url);
  } catch (e) {
    usage(`bad --redis URL ${url}`);
  }
  if (u.protocol !== 'redis:') usage('--redis must be a redis:// URL');
  const host = u.hostname || '127.0.0.1';
  const port = Number(u.port || 6379);
  const db = u.pathname && u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  // Plain connection options: BullMQ builds its own ioredis clients from
  // these (ioredis defaults plus BullMQ's retryStrategy).
  return { host, port, db };
}

// --remove-on-complete: 'keep' = BullMQ default (completed jobs kept forever),
// 'true' = removed on completion, N = keep the last N completed jobs.
function parseRemoveOnComplete(opts) {
  const v = opts['remove-on-complete'] === undefined ? 'keep' : opts['remove-on-complete'];
  if (v === 'keep') return { label: 'keep', jobOpts: {} };
  if (v === 'true') return { label: 'true', jobOpts: { removeOnComplete: true } };
  const n = Number(v);
  if (Number.isInteger(n) && n >= 0) return { label: `count:${n}`, jobOpts: { removeOnComplete: { count: n } } };
  usage('--remove-on-complete must be keep, true or a count');
}

// ---------------------------------------------------------------- helpers

// Monotonic milliseconds (CLOCK_MONOTONIC, sub-ms precision). Only compared
// within one process.
const monoMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const round = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toFixed(d)));

function cpuSeconds(delta) {
  return (delta.user + delta.system) / 1e6;
}

// Nearest-rank percentile of an ascending sorted typed array.
function pct(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

function summary(values) {
  const a = Float64Array.from(values).sort();
  return {
    n: a.length,
    min: a.length ? a[0] : null,
    p50: pct(a, 50),
    p99: pct(a, 99),
    max: a.length ? a[a.length - 1] : null,
  };
}

let hardTimer = null;
function armHardTimeout(seconds, what) {
  hardTimer = setTimeout(() => {
    process.stderr.write(`bench.js: hard timeout of ${seconds} s hit in ${what}; giving up\n`);
    process.exit(3);
  }, seconds * 1000);
}

class Fail extends Error {}

// A separate plain ioredis connection used only for INFO / checks, so the
// measurement does not share BullMQ's connections.
function statsConnection(conn) {
  return new IORedis({ ...conn, lazyConnect: false, connectionName: 'bench-stats' });
}

// One INFO call with several sections (Redis >= 7). Returns CPU seconds,
// total calls over all commands except INFO itself (the measurement's own
// commands), per-command calls, used_memory.
//
// Note: since Redis 7, commands executed by Lua scripts (redis.call inside
// EVALSHA, which is how BullMQ does almost everything) are counted in
// commandstats too, in addition to the EVALSHA itself. herald's figures in
// BENCHMARKS.md are counted the same way.
async function redisSnapshot(stats) {
  const text = await stats.call('INFO', 'cpu', 'commandstats', 'memory', 'server');
  const out = { cpu: 0, calls: 0, byCmd: {}, usedMemory: null, version: null };
  for (const line of text.split('\r\n')) {
    if (line.startsWith('used_cpu_sys:') || line.startsWith('used_cpu_user:')) {
      out.cpu += Number(line.split(':')[1]);
    } else if (line.startsWith('cmdstat_')) {
      const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
      if (m && m[1] !== 'info') {
        out.byCmd[m[1]] = Number(m[2]);
        out.calls += Number(m[2]);
      }
    } else if (line.startsWith('used_memory:')) {
      out.usedMemory = Number(line.split(':')[1]);
    } else if (line.startsWith('redis_version:')) {
      out.version = line.split(':')[1];
    }
  }
  return out;
}

function redisDelta(a, b, perUnit) {
  const byCmd = {};
  for (const [k, v] of Object.entries(b.byCmd)) {
    const d = v - (a.byCmd[k] || 0);
    if (d > 0) byCmd[k] = perUnit ? round(d / perUnit, 3) : d;
  }
  return { cpu: b.cpu - a.cpu, calls: b.calls - a.calls, byCmd };
}

async function assertQueueEmpty(queue) {
  const counts = await queue.getJobCounts();
  const total = Object.values(counts).reduce((s, x) => s + x, 0);
  const schedulers = await queue.getJobSchedulersCount();
  if (total !== 0 || schedulers !== 0) {
    throw new Fail(
      `queue ${queue.name} is not empty (${JSON.stringify(counts)}, ${schedulers} schedulers); ` +
        'the harness must FLUSHALL before each run',
    );
  }
}

// Track errors emitted by BullMQ objects instead of crashing; they are
// reported in the output.
function trackErrors(emitter, label, sink) {
  emitter.on('error', (err) => {
    sink.count++;
    if (sink.count <= 5) process.stderr.write(`bench.js: ${label} error: ${err && err.message}\n`);
  });
}

function common(scenario, ctx) {
  return {
    scenario,
    system: 'bullmq',
    bullmq_version: BULLMQ_VERSION,
    ioredis_version: IOREDIS_VERSION,
    node_version: process.version,
    redis_version: ctx.redisVersion,
  };
}

// Wait until cond() is true, checking every `everyMs`; false on deadline.
async function waitFor(cond, deadlineMono, everyMs = 20) {
  while (!cond()) {
    if (monoMs() >= deadlineMono) return false;
    await sleep(everyMs);
  }
  return true;
}

// ---------------------------------------------------------------- drain

async function drain(o, ctx) {
  const N = num(o, 'jobs', 100000, { min: 1 });
  const C = num(o, 'concurrency', 1, { min: 1 });
  const chunk = num(o, 'chunk', 1000, { min: 1 });
  const roc = parseRemoveOnComplete(o);
  const { conn, stats, errors } = ctx;
  const name = str(o, 'queue', 'bench-drain');

  const queue = new Queue(name, { connection: conn, defaultJobOptions: roc.jobOpts });
  trackErrors(queue, 'queue', errors);
  await queue.waitUntilReady();
  await assertQueueEmpty(queue);

  // Pre-load (not timed).
  const tl0 = monoMs();
  for (let i = 0; i < N; i += chunk) {
    const n = Math.min(chunk, N - i);
    const batch = new Array(n);
    for (let j = 0; j < n; j++) batch[j] = { name: 'noop', data: {} };
    await queue.addBulk(batch);
  }
  const loadSeconds = (monoMs() - tl0) / 1000;
  const loaded = (await queue.getJobCounts('waiting')).waiting;
  if (loaded !== N) throw new Fail(`loaded ${loaded} waiting jobs, expected ${N}`);

  let completed = 0;
  let failed = 0;
  let resolveDone;
  const done = new Promise((r) => (resolveDone = r));
  const worker = new Worker(name, async () => undefined, {
    connection: { ...conn, maxRetriesPerRequest: null },
    concurrency: C,
    autorun: false,
  });
  trackErrors(worker, 'worker', errors);
  worker.on('completed', () => {
    completed++;
    if (completed + failed === N) resolveDone();
  });
  worker.on('failed', () => {
    failed++;
    if (completed + failed === N) resolveDone();
  });
  await worker.waitUntilReady();

  // Timed part: from worker.run() to the N-th 'completed' event (emitted by
  // the worker after the job's moveToFinished script returned).
  const r0 = await redisSnapshot(stats);
  const c0 = process.cpuUsage();
  const t0 = monoMs();
  const running = worker.run();
  await done;
  const t1 = monoMs();
  const c1 = process.cpuUsage(c0);
  const r1 = await redisSnapshot(stats);

  await worker.close();
  await running;
  const after = await queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed');
  await queue.close();
  if (failed > 0) throw new Fail(`${failed} of ${N} no-op jobs failed`);
  if (after.waiting + after.active + after.delayed !== 0) {
    throw new Fail(`queue not empty after drain: ${JSON.stringify(after)}`);
  }

  const seconds = (t1 - t0) / 1000;
  const rd = redisDelta(r0, r1);
  return {
    ...common('drain', ctx),
    jobs: N,
    concurrency: C,
    remove_on_complete: roc.label,
    seconds: round(seconds, 4),
    jobs_per_second: round(completed / seconds, 1),
    worker_cpu_seconds: round(cpuSeconds(c1), 4),
    redis_cpu_seconds: round(rd.cpu, 4),
    redis_commands: rd.calls,
    worker_cpu_us_per_job: round((cpuSeconds(c1) * 1e6) / N, 2),
    redis_cpu_us_per_job: round((rd.cpu * 1e6) / N, 2),
    redis_commands_per_job: round(rd.calls / N, 3),
    redis_commands_per_job_by_name: redisDelta(r0, r1, N).byCmd,
    completed,
    completed_kept_in_redis: after.completed,
    load_seconds: round(loadSeconds, 3),
    errors: errors.count,
  };
}

// ---------------------------------------------------------------- max-rate

async function maxRate(o, ctx) {
  const S = num(o, 'seconds', 30, { min: 1, integer: false });
  const warmup = num(o, 'warmup', 2, { min: 0, integer: false });
  const maxInFlight = num(o, 'max-in-flight', 1000, { min: 1 });
  const addConc = num(o, 'add-concurrency', 100, { min: 1 });
  const C = num(o, 'concurrency', 100, { min: 1 });
  const roc = parseRemoveOnComplete(o);
  const { conn, stats, errors } = ctx;
  const name = str(o, 'queue', 'bench-max-rate');

  const queue = new Queue(name, { connection: conn, defaultJobOptions: roc.jobOpts });
  trackErrors(queue, 'queue', errors);
  await queue.waitUntilReady();
  await assertQueueEmpty(queue);

  let completed = 0;
  let failed = 0;
  let waiters = [];
  const wakeAll = () => {
    if (waiters.length) {
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    }
  };
  const worker = new Worker(name, async () => undefined, {
    connection: { ...conn, maxRetriesPerRequest: null },
    concurrency: C,
  });
  trackErrors(worker, 'worker', errors);
  worker.on('completed', () => {
    completed++;
    wakeAll();
  });
  worker.on('failed', () => {
    failed++;
    wakeAll();
  });
  await worker.waitUntilReady();

  // Producer: addConc concurrent lanes, each awaiting its queue.add, all
  // together keeping at most maxInFlight jobs added-but-not-finished.
  let added = 0; // add calls issued
  let addErrors = 0;
  let stop = false;
  const lane = async () => {
    while (!stop) {
      if (added - completed - failed - addErrors >= maxInFlight) {
        await new Promise((r) => waiters.push(r));
        continue;
      }
      added++;
      try {
        await queue.add('noop', {});
      } catch (e) {
        addErrors++;
        if (addErrors <= 5) process.stderr.write(`bench.js: add failed: ${e.message}\n`);
      }
    }
  };

  const t0 = monoMs();
  const lanes = [];
  for (let i = 0; i < addConc; i++) lanes.push(lane());

  // Measurement window [t0 + warmup, t0 + warmup + S], sampled by timers;
  // the actual sample instants are used for the rate.
  await sleep(t0 + warmup * 1000 - monoMs());
  const wA = { t: monoMs(), done: completed, added, cpu: process.cpuUsage(), r: await redisSnapshot(stats) };
  await sleep(wA.t + S * 1000 - monoMs());
  const wB = { t: monoMs(), done: completed, added, cpu: process.cpuUsage(wA.cpu), r: await redisSnapshot(stats) };
  stop = true;
  wakeAll();
  await Promise.all(lanes);
  await worker.close();
  await queue.close();
  if (failed > 0) throw new Fail(`${failed} no-op jobs failed`);

  const seconds = (wB.t - wA.t) / 1000;
  const processed = wB.done - wA.done;
  if (processed <= 0) throw new Fail('no job completed in the measurement window');
  const rd = redisDelta(wA.r, wB.r);
  return {
    ...common('max-rate', ctx),
    seconds: round(seconds, 3),
    warmup_seconds: warmup,
    concurrency: C,
    max_in_flight: maxInFlight,
    add_concurrency: addConc,
    remove_on_complete: roc.label,
    jobs_per_second: round(processed / seconds, 1),
    processed_in_window: processed,
    added_in_window: wB.added - wA.added,
    process_cpu_seconds: round(cpuSeconds(wB.cpu), 4),
    redis_cpu_seconds: round(rd.cpu, 4),
    redis_commands: rd.calls,
    process_cpu_us_per_job: round((cpuSeconds(wB.cpu) * 1e6) / processed, 2),
    redis_cpu_us_per_job: round((rd.cpu * 1e6) / processed, 2),
    redis_commands_per_job: round(rd.calls / processed, 3),
    add_errors: addErrors,
    errors: errors.count,
  };
}

// ---------------------------------------------------------------- latency

async function latency(o, ctx) {
  const R = num(o, 'rate', 1000, { min: 1, integer: false });
  const S = num(o, 'seconds', 30, { min: 1, integer: false });
  const C = num(o, 'concurrency', 100, { min: 1 });
  const grace = num(o, 'grace', 30, { min: 0, integer: false });
  const roc = parseRemoveOnComplete(o);
  const { conn, stats, errors } = ctx;
  const name = str(o, 'queue', 'bench-latency');

  const queue = new Queue(name, { connection: conn, defaultJobOptions: roc.jobOpts });
  trackErrors(queue, 'queue', errors);
  await queue.waitUntilReady();
  await assertQueueEmpty(queue);

  const total = Math.floor(R * S);
  const fromSend = new Float64Array(total); // worker start - actual add call
  const fromIntended = new Float64Array(total); // worker start - intended send time
  const seen = new Uint8Array(total);
  let started = 0;
  let duplicates = 0;
  let failed = 0;
  const worker = new Worker(
    name,
    async (job) => {
      const now = monoMs();
      const i = job.data.i;
      if (seen[i]) {
        duplicates++;
        return;
      }
      seen[i] = 1;
      fromSend[started] = now - job.data.sent;
      fromIntended[started] = now - job.data.due;
      started++;
    },
    { connection: { ...conn, maxRetriesPerRequest: null }, concurrency: C },
  );
  trackErrors(worker, 'worker', errors);
  worker.on('failed', () => failed++);
  await worker.waitUntilReady();

  // Open-loop producer: job i is due at t0 + i*1000/R; every due job is sent
  // (queue.add, not awaited) as soon as the clock passes its instant, so
  // sends never wait for earlier sends or jobs. Catch-up: when the timer
  // fires late, all overdue jobs go out at once.
  let sent = 0;
  let acked = 0;
  let addErrors = 0;
  let maxLag = 0;
  const r0 = await redisSnapshot(stats);
  const c0 = process.cpuUsage();
  const t0 = monoMs() + 10;
  const intervalMs = 1000 / R;
  while (sent < total) {
    const now = monoMs();
    while (sent < total && t0 + sent * intervalMs <= now) {
      const due = t0 + sent * intervalMs;
      const sentAt = monoMs();
      if (sentAt - due > maxLag) maxLag = sentAt - due;
      queue.add('noop', { i: sent, due, sent: sentAt }).then(
        () => acked++,
        (e) => {
          addErrors++;
          if (addErrors <= 5) process.stderr.write(`bench.js: add failed: ${e.message}\n`);
        },
      );
      sent++;
    }
    if (sent >= total) break;
    // Sleep until the next send is due (timers have ~1 ms granularity and
    // fire late under load; the catch-up loop above absorbs that). Only a
    // sub-millisecond wait yields with setImmediate, so the producer does
    // not busy-spin and steal the worker's (same) event loop.
    const wait = t0 + sent * intervalMs - monoMs();
    if (wait >= 1) await sleep(wait);
    else await new Promise((r) => setImmediate(r));
  }
  const tSendEnd = monoMs();
  // Wait (bounded by --grace) until every sent job has started.
  const allStarted = await waitFor(() => started + addErrors >= sent, tSendEnd + grace * 1000);
  const c1 = process.cpuUsage(c0);
  const r1 = await redisSnapshot(stats);
  await worker.close();
  await queue.close();

  const sS = summary(fromSend.subarray(0, started));
  const sI = summary(fromIntended.subarray(0, started));
  const rd = redisDelta(r0, r1);
  const out = {
    ...common('latency', ctx),
    rate: R,
    seconds: S,
    concurrency: C,
    remove_on_complete: roc.label,
    p50_ms: round(sS.p50),
    p99_ms: round(sS.p99),
    max_ms: round(sS.max),
    sent,
    started,
    acked,
    not_started: sent - addErrors - started,
    add_errors: addErrors,
    duplicates,
    failed,
    achieved_send_rate: round(sent / ((tSendEnd - t0) / 1000), 1),
    producer_max_lag_ms: round(maxLag),
    from_intended_p50_ms: round(sI.p50),
    from_intended_p99_ms: round(sI.p99),
    from_intended_max_ms: round(sI.max),
    process_cpu_seconds: round(cpuSeconds(c1), 4),
    redis_cpu_seconds: round(rd.cpu, 4),
    redis_commands: rd.calls,
    errors: errors.count,
  };
  if (!allStarted) {
    process.stdout.write(JSON.stringify(out) + '\n');
    throw new Fail(`${sent - addErrors - started} sent jobs had not started ${grace} s after the last send`);
  }
  return out;
}

// ---------------------------------------------------------------- precision

async function precision(o, ctx) {
  const K = num(o, 'schedules', 1000, { min: 1 });
  const S = num(o, 'seconds', 120, { min: 1 });
  const B = num(o, 'burst', 10000, { min: 0 });
  const C = num(o, 'concurrency', 100, { min: 1 });
  const lead = num(o, 'lead', 5, { min: 1, integer: false });
  const burstAt = num(o, 'burst-at', 5, { min: 1 });
  const grace = num(o, 'grace', 10, { min: 0, integer: false });
  const mode = str(o, 'mode', 'every', ['every', 'cron']);
  const roc = parseRemoveOnComplete(o);
  const { conn, stats, errors } = ctx;
  const name = str(o, 'queue', 'bench-precision');
  if (burstAt > S) usage('--burst-at must be within --seconds');

  const queue = new Queue(name, { connection: conn, defaultJobOptions: roc.jobOpts });
  trackErrors(queue, 'queue', errors);
  await queue.waitUntilReady();
  await assertQueueEmpty(queue);

  // Wall-clock (Date.now(), the clock BullMQ itself uses) grid: T0 is a
  // whole second `lead` seconds ahead; the window's ticks are T0 + k*1000
  // for k = 1..S; the burst is due at T0 + burstAt*1000 (on a tick).
  const T0 = Math.ceil((Date.now() + lead * 1000) / 1000) * 1000;
  const burstDue = T0 + burstAt * 1000;
  const windowEnd = T0 + S * 1000;

  const tickLate = []; // lateness of first run per (schedule, tick)
  const seenTick = new Set();
  let duplicates = 0;
  let offGrid = 0;
  let outside = 0;
  let idMismatch = 0;
  let dueBeforeScheduled = 0;
  const burstLate = [];
  let burstStarted = 0;
  let burstDuplicates = 0;
  const burstSeen = new Uint8Array(B);
  let failed = 0;
  let sample = null;

  const worker = new Worker(
    name,
    async (job) => {
      const start = Date.now();
      if (job.name === 'burst') {
        const i = job.data.i;
        if (burstSeen[i]) {
          burstDuplicates++;
          return;
        }
        burstSeen[i] = 1;
        burstStarted++;
        burstLate.push(start - job.data.due);
        return;
      }
      // Scheduler-produced job. Its id is "repeat:<schedulerId>:<millis>"
      // where <millis> is the scheduled instant computed by BullMQ's Lua
      // (updateJobScheduler / addJobScheduler). job.opts.prevMillis is
      // set only from the JS-side computation, which for `every` is
      // undefined, so the id is the authoritative field (see README).
      const m = /^repeat:(.+):(\d+)$/.exec(job.id);
      if (!m || m[1] !== job.repeatJobKey) {
        idMismatch++;
        return;
      }
      const sched = Number(m[2]);
      // Cross-check: job.timestamp + job.delay is the due time BullMQ used
      // for the delayed set (equals sched unless the job was created after
      // its instant, delay clamped to 0).
      if (job.timestamp + job.delay < sched) dueBeforeScheduled++;
      if (sample === null && sched > T0 + 1000) {
        sample = {
          id: job.id,
          scheduled: sched,
          timestamp: job.timestamp,
          delay: job.delay,
          prevMillis: job.opts.prevMillis === undefined ? null : job.opts.prevMillis,
          start,
        };
      }
      const k = Math.round((sched - T0) / 1000);
      if (sched !== T0 + k * 1000) offGrid++;
      if (k < 1 || k > S) {
        outside++;
        return;
      }
      const key = `${m[1]}|${k}`;
      if (seenTick.has(key)) {
        duplicates++;
        return;
      }
      seenTick.add(key);
      tickLate.push(start - sched);
    },
    { connection: { ...conn, maxRetriesPerRequest: null }, concurrency: C },
  );
  trackErrors(worker, 'worker', errors);
  worker.on('failed', () => failed++);
  await worker.waitUntilReady();

  // Register schedulers (chunks of 100 concurrent upserts) and the burst
  // (addBulk chunks of 1000), all before T0.
  const tmpl = { name: 'tick', data: {}, opts: roc.jobOpts };
  const repeatOpts =
    mode === 'every' ? { every: 1000, startDate: T0 } : { pattern: '* * * * * *', startDate: T0 };
  for (let i = 0; i < K; i += 100) {
    const ps = [];
    for (let j = i; j < Math.min(K, i + 100); j++) ps.push(queue.upsertJobScheduler(`tick-${j}`, repeatOpts, tmpl));
    await Promise.all(ps);
  }
  for (let i = 0; i < B; i += 1000) {
    const batch = [];
    for (let j = i; j < Math.min(B, i + 1000); j++) {
      const ts = Date.now();
      // timestamp + delay is exactly the due instant BullMQ puts in the
      // delayed set.
      batch.push({ name: 'burst', data: { i: j, due: burstDue }, opts: { timestamp: ts, delay: burstDue - ts } });
    }
    await queue.addBulk(batch);
  }
  const registeredAt = Date.now();
  if (registeredAt >= T0 - 200) {
    throw new Fail(`registration finished ${registeredAt - T0} ms after T0-200ms; raise --lead`);
  }
  const registered = await queue.getJobSchedulersCount();
  if (registered !== K) throw new Fail(`${registered} schedulers registered, expected ${K}`);

  const r0 = await redisSnapshot(stats);
  const c0 = process.cpuUsage();
  // Run until the window's last tick plus grace.
  await sleep(windowEnd + grace * 1000 - Date.now());
  const c1 = process.cpuUsage(c0);
  const r1 = await redisSnapshot(stats);
  await worker.close();
  await queue.close();

  const expected = K * S;
  const lt = summary(tickLate);
  const bl = summary(burstLate);
  const rd = redisDelta(r0, r1);
  return {
    ...common('precision', ctx),
    schedules: K,
    seconds: S,
    mode: mode === 'every' ? 'every:1000' : "pattern:'* * * * * *'",
    concurrency: C,
    remove_on_complete: roc.label,
    grace_seconds: grace,
    window_start: new Date(T0 + 1000).toISOString(),
    expected_runs: expected,
    observed_runs: seenTick.size,
    missed: expected - seenTick.size,
    duplicates,
    off_grid_runs: offGrid,
    runs_outside_window: outside,
    id_mismatches: idMismatch,
    due_before_scheduled: dueBeforeScheduled,
    lateness_p50_ms: lt.p50,
    lateness_p99_ms: lt.p99,
    lateness_max_ms: lt.max,
    lateness_min_ms: lt.min,
    burst: B,
    burst_due: new Date(burstDue).toISOString(),
    burst_started: burstStarted,
    burst_duplicates: burstDuplicates,
    burst_last_start_ms: bl.max,
    burst_first_start_ms: bl.min,
    burst_p50_ms: bl.p50,
    burst_p99_ms: bl.p99,
    failed,
    process_cpu_seconds: round(cpuSeconds(c1), 3),
    redis_cpu_seconds: round(rd.cpu, 3),
    redis_commands: rd.calls,
    sample_job: sample,
    errors: errors.count,
  };
}

// ---------------------------------------------------------------- footprint

async function footprint(o, ctx) {
  const K = num(o, 'schedules', 100000, { min: 1 });
  const idle = num(o, 'idle', 10, { min: 1, integer: false });
  const { conn, stats, errors } = ctx;
  const name = str(o, 'queue', 'bench-footprint');

  const queue = new Queue(name, { connection: conn });
  trackErrors(queue, 'queue', errors);
  await queue.waitUntilReady();
  await assertQueueEmpty(queue);
  const mem0 = (await redisSnapshot(stats)).usedMemory;

  // Distinct daily 5-field crons "m h * * *" over the 1440 minutes of the
  // day (so 100,000 schedulers reuse each minute ~70 times, each with its
  // own id). Minutes within the next 15 minutes are shifted 30 minutes on so
  // that nothing fires during the idle measurement.
  const nowMin = new Date().getUTCHours() * 60 + new Date().getUTCMinutes();
  const cronFor = (i) => {
    let mod = i % 1440;
    if ((mod - nowMin + 1440) % 1440 < 15) mod = (mod + 30) % 1440;
    return `${mod % 60} ${Math.floor(mod / 60)} * * *`;
  };
  const t0 = monoMs();
  for (let i = 0; i < K; i += 200) {
    const ps = [];
    for (let j = i; j < Math.min(K, i + 200); j++) {
      ps.push(queue.upsertJobScheduler(`daily-${j}`, { pattern: cronFor(j), tz: 'UTC' }, { name: 'daily', data: {} }));
    }
    await Promise.all(ps);
  }
  const registerSeconds = (monoMs() - t0) / 1000;
  const registered = await queue.getJobSchedulersCount();
  const delayed = (await queue.getJobCounts('delayed')).delayed;
  if (registered !== K) throw new Fail(`${registered} schedulers registered, expected ${K}`);
  const registrarRss = process.memoryUsage().rss;
  await queue.close();

  // The worker runs in its own process (a fresh node with only the Worker),
  // so its RSS is not inflated by the registration above.
  const r0 = await redisSnapshot(stats);
  const child = fork(__filename, ['footprint-worker', '--redis', ctx.url, '--queue', name, '--idle', String(idle)], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  let childOut = '';
  child.stdout.on('data', (d) => (childOut += d));
  const code = await new Promise((r) => child.on('exit', (c) => r(c)));
  const r1 = await redisSnapshot(stats);
  if (code !== 0) throw new Fail(`footprint worker process exited with ${code}`);
  const w = JSON.parse(childOut.trim());
  const rd = redisDelta(r0, r1);
  return {
    ...common('footprint', ctx),
    schedules: K,
    registered,
    delayed_jobs: delayed,
    register_seconds: round(registerSeconds, 2),
    idle_seconds: idle,
    worker_rss_bytes: w.rss,
    worker_rss_mb: round(w.rss / 1048576, 1),
    worker_heap_used_bytes: w.heapUsed,
    worker_idle_cpu_seconds: w.idle_cpu_seconds,
    worker_jobs_processed: w.processed,
    redis_used_memory_bytes: r1.usedMemory,
    redis_used_memory_mb: round(r1.usedMemory / 1048576, 1),
    redis_used_memory_before_bytes: mem0,
    redis_cpu_seconds_worker_lifetime: round(rd.cpu, 4),
    redis_commands_worker_lifetime: rd.calls,
    redis_commands_by_name_worker_lifetime: rd.byCmd,
    registrar_rss_bytes: registrarRss,
    errors: errors.count + w.errors,
  };
}

// Internal: the footprint scenario's worker process.
async function footprintWorker(o, ctx) {
  const idle = num(o, 'idle', 10, { min: 1, integer: false });
  const name = str(o, 'queue', 'bench-footprint');
  let processed = 0;
  const worker = new Worker(
    name,
    async () => {
      processed++;
    },
    { connection: { ...ctx.conn, maxRetriesPerRequest: null }, concurrency: 1 },
  );
  trackErrors(worker, 'footprint worker', ctx.errors);
  await worker.waitUntilReady();
  await sleep(500); // first fetch / block issued
  const c0 = process.cpuUsage();
  await sleep(idle * 1000);
  const c1 = process.cpuUsage(c0);
  const mem = process.memoryUsage();
  await worker.close();
  return {
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    idle_cpu_seconds: round(cpuSeconds(c1), 4),
    processed,
    errors: ctx.errors.count,
  };
}

// ---------------------------------------------------------------- main

const SCENARIOS = {
  drain: { run: drain, timeout: (o) => 900 },
  'max-rate': { run: maxRate, timeout: (o) => Number(o.seconds || 30) + Number(o.warmup || 2) + 120 },
  latency: { run: latency, timeout: (o) => Number(o.seconds || 30) + Number(o.grace || 30) + 120 },
  precision: {
    run: precision,
    timeout: (o) => Number(o.seconds || 120) + Number(o.lead || 5) + Number(o.grace || 10) + 120,
  },
  footprint: { run: footprint, timeout: (o) => 900 },
  'footprint-worker': { run: footprintWorker, timeout: (o) => Number(o.idle || 10) + 120, internal: true },
};

async function main() {
  const { scenario, opts } = parseArgs(process.argv.slice(2));
  if (!scenario || scenario === '--help' || scenario === '-h') usage();
  const sc = SCENARIOS[scenario];
  if (!sc) usage(`unknown scenario ${scenario}`);
  const timeout = opts.timeout !== undefined ? num(opts, 'timeout', 0, { min: 1, integer: false }) : sc.timeout(opts);
  armHardTimeout(timeout, scenario);

  const conn = parseRedisUrl(opts.redis);
  const errors = { count: 0 };
  const stats = statsConnection(conn);
  stats.on('error', (e) => process.stderr.write(`bench.js: stats connection error: ${e.message}\n`));
  const ctx = { conn, url: opts.redis, stats, errors, redisVersion: null };
  let result;
  let code = 0;
  try {
    ctx.redisVersion = (await redisSnapshot(stats)).version;
    result = await sc.run(opts, ctx);
  } catch (e) {
    process.stderr.write(`bench.js: ${scenario} failed: ${e instanceof Fail ? e.message : e.stack}\n`);
    code = 1;
  }
  await stats.quit().catch(() => stats.disconnect());
  clearTimeout(hardTimer);
  if (result !== undefined) process.stdout.write(JSON.stringify(result) + '\n');
  process.exitCode = code;
  // Everything is closed; the process should now exit by itself. If some
  // handle stays open, say so instead of hanging.
  setTimeout(() => {
    process.stderr.write('bench.js: process did not exit 10 s after closing its connections\n');
    process.exit(4);
  }, 10000).unref();
}

main();
