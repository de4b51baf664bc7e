#!/usr/bin/env node
// herald vs BullMQ: the one-command harness (run it as `bench/run`).
//
//   bench/run [--runs 5] [--quick] [--only drain,latency,...] [--out DIR]
//
// One redis-server of its own (loopback, free port, no persistence) serves
// both systems. For each scenario: each system's warm-up run (discarded),
// then --runs measured runs, the systems taking turns (run 1 of each, run
// 2 of each, ...), FLUSHALL before every run; the
// median of every numeric field; herald/BullMQ ratios against the issue's
// targets. The latency scenario's rate is half of BullMQ's median
// max-rate, for both systems. Raw per-run JSON, the exact commands and the
// summary go to bench/results/<UTC timestamp>.json; a Markdown table goes
// to stdout, progress to stderr. Exit 0 when every run succeeded (targets
// met or not), 1 if some run failed, 2 on usage errors.
'use strict';

const fs = require('fs');
const os = require('os');
const net = require('net');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

const ROOT = path.resolve(__dirname, '..');
const BULLMQ_DIR = path.join(__dirname, 'bullmq');
const SCENARIOS = ['drain', 'max-rate', 'latency', 'precision', 'footprint'];

const USAGE = `usage: bench/run [options]
  --runs N             measured runs per scenario and system (default 5), after 1 warm-up
  --quick              smoke sizes: drain 2,000 jobs; max-rate and latency 5 s;
                       precision 50 schedules for 5 s + 200 burst; footprint 2,000
  --only LIST          comma-separated scenarios: ${SCENARIOS.join(',')}
  --rate R             latency rate (default: half of BullMQ's median max-rate)
  --no-warmup          skip the warm-up runs (smoke runs only)
  --out DIR            results directory (default bench/results)
  --herald-bin PATH    use this compare bench executable instead of building it
  --redis-server PATH  redis-server to start (default: redis-server on PATH)`;

function usage(msg) {
  if (msg) process.stderr.write(`bench/run: ${msg}\n`);
  process.stderr.write(USAGE + '\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { runs: 5, quick: false, only: SCENARIOS, warmup: true, out: path.join(__dirname, 'results') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${a} needs a value`);
      return v;
    };
    if (a === '--runs') {
      o.runs = Number(val());
      if (!Number.isInteger(o.runs) || o.runs < 1) usage('--runs must be an integer >= 1');
    } else if (a === '--quick') o.quick = true;
    else if (a === '--no-warmup') o.warmup = false;
    else if (a === '--only') {
      o.only = val().split(',').filter(Boolean);
      for (const s of o.only) if (!SCENARIOS.includes(s)) usage(`unknown scenario ${s}`);
    } else if (a === '--rate') {
      o.rate = Number(val());
      if (!(o.rate > 0)) usage('--rate must be > 0');
    } else if (a === '--out') o.out = path.resolve(val());
    else if (a === '--herald-bin') o.heraldBin = path.resolve(val());
    else if (a === '--redis-server') o.redisServer = val();
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown option ${a}`);
  }
  return o;
}

const log = (msg) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

// ---------------------------------------------------------------- setup

function ensureNodeModules() {
  if (fs.existsSync(path.join(BULLMQ_DIR, 'node_modules', 'bullmq'))) return;
  log('npm ci in bench/bullmq');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: BULLMQ_DIR, stdio: ['ignore', 2, 2] });
  if (r.status !== 0) throw new Error('npm ci failed in bench/bullmq');
}

let HERALD_BUILD = null;

// Builds the herald bench in release and returns its executable.
function buildHerald() {
  const env = { ...process.env };
  env.CARGO_TARGET_DIR = env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache', 'herald', 'target');
  const args = ['bench', '-p', 'herald-actors', '--bench', 'compare', '--no-run', '--message-format=json-render-diagnostics'];
  HERALD_BUILD = `CARGO_TARGET_DIR=${env.CARGO_TARGET_DIR} cargo ${args.join(' ')}`;
  log(`building: ${HERALD_BUILD}`);
  const r = spawnSync('cargo', args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 2], maxBuffer: 256 << 20 });
  if (r.status !== 0) throw new Error('cargo bench --no-run failed');
  let exe = null;
  for (const line of r.stdout.toString().split('\n')) {
    if (!line.startsWith('{')) continue;
    let m;
    try {
      m = JSON.parse(line);
    } catch (e) {
      continue;
    }
    if (m.reason === 'compiler-artifact' && m.target && m.target.name === 'compare' && m.executable) exe = m.executable;
  }
  if (!exe) throw new Error('cargo did not report the compare bench executable');
  return exe;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Minimal RESP client over one socket (FLUSHALL, PING, INFO): the harness
// needs nothing more and keeps no dependency of its own.
class Resp {
  constructor(port) {
    this.port = port;
    this.buf = Buffer.alloc(0);
    this.waiting = [];
  }
  connect() {
    return new Promise((resolve, reject) => {
      this.sock = net.createConnection({ host: '127.0.0.1', port: this.port }, resolve);
      this.sock.once('error', reject);
      this.sock.on('data', (d) => {
        this.buf = Buffer.concat([this.buf, d]);
        this.drain();
      });
    });
  }
  drain() {
    while (this.waiting.length) {
      const r = parseResp(this.buf, 0);
      if (!r) return;
      this.buf = this.buf.subarray(r.end);
      const w = this.waiting.shift();
      if (r.value instanceof Error) w.reject(r.value);
      else w.resolve(r.value);
    }
  }
  call(...args) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      let s = `*${args.length}\r\n`;
      for (const a of args) s += `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`;
      this.sock.write(s);
    });
  }
  close() {
    if (this.sock) this.sock.destroy();
  }
}

function parseResp(buf, at) {
  const nl = buf.indexOf('\r\n', at);
  if (nl < 0) return null;
  const type = String.fromCharCode(buf[at]);
  const line = buf.toString('utf8', at + 1, nl);
  if (type === '+') return { value: line, end: nl + 2 };
  if (type === '-') return { value: new Error(line), end: nl + 2 };
  if (type === ':') return { value: Number(line), end: nl + 2 };
  if (type === '$') {
    const n = Number(line);
    if (n < 0) return { value: null, end: nl + 2 };
    if (buf.length < nl + 2 + n + 2) return null;
    return { value: buf.toString('utf8', nl + 2, nl + 2 + n), end: nl + 2 + n + 2 };
  }
  if (type === '*') {
    const n = Number(line);
    const out = [];
    let end = nl + 2;
    for (let i = 0; i < n; i++) {
      const r = parseResp(buf, end);
      if (!r) return null;
      out.push(r.value);
      end = r.end;
    }
    return { value: out, end };
  }
  throw new Error(`unexpected RESP type ${type}`);
}

async function startRedis(bin) {
  const port = await freePort();
  const logFile = path.join(os.tmpdir(), `herald-bench-redis-${port}.log`);
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--logfile', logFile];
  const child = spawn(bin, args, { stdio: 'ignore' });
  let exited = false;
  child.on('exit', () => (exited = true));
  const client = new Resp(port);
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`redis-server exited at start (see ${logFile})`);
    try {
      await client.connect();
      await client.call('PING');
      break;
    } catch (e) {
      if (i > 100) throw new Error(`redis-server did not answer on port ${port}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const info = await client.call('INFO', 'server');
  const version = (/redis_version:(\S+)/.exec(info) || [])[1];
  return { port, url: `redis://127.0.0.1:${port}`, child, client, version, command: `${bin} ${args.map(shq).join(' ')}` };
}

function stopRedis(r) {
  if (!r) return Promise.resolve();
  r.client.close();
  if (r.child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => r.child.kill('SIGKILL'), 10000);
    r.child.on('exit', () => {
      clearTimeout(t);
      resolve();
    });
    r.child.kill('SIGTERM');
  });
}

function shq(s) {
  s = String(s);
  return /^[A-Za-z0-9_./:=,@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

// ---------------------------------------------------------------- runs

let current = null; // the scenario process running now

function runOnce(cmd, args, killAfterSeconds) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    current = child;
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => {
      err += d;
      process.stderr.write(d);
    });
    const timer = setTimeout(() => {
      log(`killing ${path.basename(cmd)} after ${killAfterSeconds} s`);
      child.kill('SIGKILL');
    }, killAfterSeconds * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      current = null;
      let json = null;
      const lines = out.trim().split('\n').filter(Boolean);
      try {
        if (lines.length) json = JSON.parse(lines[lines.length - 1]);
      } catch (e) {
        err += `\nbench/run: stdout was not JSON: ${out.slice(0, 200)}`;
      }
      resolve({ code: code === null ? `signal ${signal}` : code, json, stderr_tail: err.slice(-2000), wall_seconds: (Date.now() - t0) / 1000 });
    });
  });
}

function systemCommand(system, bins, args) {
  if (system === 'bullmq') return { cmd: process.execPath, args: [path.join(BULLMQ_DIR, 'bench.js'), ...args] };
  return { cmd: bins.herald, args: [...args] };
}

function median(xs) {
  const a = [...xs].sort((x, y) => x - y);
  if (!a.length) return null;
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

// Medians of every top-level numeric field over the successful runs;
// booleans become the fraction of runs where they held.
function medians(runs) {
  const ok = runs.filter((r) => r.code === 0 && r.json);
  const out = { runs_ok: ok.length, runs: runs.length };
  if (!ok.length) return out;
  const keys = new Set();
  for (const r of ok) for (const k of Object.keys(r.json)) keys.add(k);
  for (const k of keys) {
    const vals = ok.map((r) => r.json[k]);
    if (vals.every((v) => typeof v === 'number' && Number.isFinite(v))) out[k] = round(median(vals), 4);
    else if (vals.every((v) => typeof v === 'boolean')) out[k] = vals.filter(Boolean).length / vals.length;
  }
  return out;
}

// The largest value of a field over the successful runs (for counts that
// must be zero in every run).
function worst(runs, f) {
  const vals = runs.filter((r) => r.code === 0 && r.json).map((r) => f(r.json)).filter((v) => typeof v === 'number');
  return vals.length ? Math.max(...vals) : null;
}

const round = (x, d = 3) => (x === null || x === undefined || !Number.isFinite(x) ? null : Number(x.toFixed(d)));

function newResult(system, args, ctx) {
  const { cmd, args: full } = systemCommand(system, ctx.bins, [...args, '--redis', ctx.redis.url]);
  return { system, cmd, full, result: { system, command: [cmd, ...full].map(shq).join(' '), warmup: null, runs: [] } };
}

// One run of a system (warm-up or measured), FLUSHALL first.
async function runInto(label, r, warm, i, opts, ctx) {
  const killAfter = (opts.killAfter || 1000) + 120;
  await ctx.redis.client.call('FLUSHALL');
  const load = os.loadavg()[0];
  log(`${label} ${r.system} ${warm ? 'warm-up' : `run ${i}/${opts.runs}`} (load ${load.toFixed(2)})`);
  const out = await runOnce(r.cmd, r.full, killAfter);
  out.loadavg_1m_before = load;
  if (out.code !== 0) {
    log(`${label} ${r.system}: exit ${out.code}`);
    ctx.failures++;
  }
  if (warm) r.result.warmup = out;
  else r.result.runs.push(out);
}

async function measure(label, system, args, opts, ctx) {
  return (await measureInTurns(label, [[system, args]], opts, ctx))[system];
}

// The systems' runs alternate (each one's warm-up, then run 1 of each,
// run 2 of each, ...): the machine's speed drifts over minutes, and
// running one system's five runs before the other's puts that drift into
// the ratio.
async function measureInTurns(label, systems, opts, ctx) {
  const rs = systems.map(([system, args]) => newResult(system, args, ctx));
  if (opts.warmup) for (const r of rs) await runInto(label, r, true, 0, opts, ctx);
  for (let i = 1; i <= opts.runs; i++) for (const r of rs) await runInto(label, r, false, i, opts, ctx);
  const out = {};
  for (const r of rs) {
    r.result.median = medians(r.result.runs);
    out[r.system] = r.result;
  }
  return out;
}

// ---------------------------------------------------------------- scenarios

function sizes(quick) {
  return quick
    ? {
        drain: 2000,
        maxRate: ['--seconds', '5', '--warmup', '1'],
        latencySeconds: 5,
        precision: ['--schedules', '50', '--seconds', '5', '--burst', '200', '--burst-at', '3', '--grace', '3'],
        footprint: ['--schedules', '2000', '--idle', '2'],
      }
    : {
        drain: 100000,
        maxRate: ['--seconds', '30', '--warmup', '2'],
        latencySeconds: 30,
        precision: ['--schedules', '1000', '--seconds', '120', '--burst', '10000'],
        footprint: ['--schedules', '100000', '--idle', '10'],
      };
}

// Rows: [label, herald, bullmq, ratio, target, met]
function rowsFor(name, h, b, hRuns) {
  const rows = [];
  const hm = h ? h.median : {};
  const bm = b ? b.median : {};
  const ratio = (x, y) => (typeof x === 'number' && typeof y === 'number' && y !== 0 ? x / y : null);
  const add = (label, hv, bv, target, met) => rows.push({ label, herald: hv, bullmq: bv, ratio: ratio(hv, bv), target: target || '', met });
  const sum = (m, a, c) => (typeof m[a] === 'number' && typeof m[c] === 'number' ? m[a] + m[c] : null);
  if (name.startsWith('drain')) {
    const r = ratio(hm.jobs_per_second, bm.jobs_per_second);
    add('jobs/s', hm.jobs_per_second, bm.jobs_per_second, 'ratio >= 3', r === null ? null : r >= 3);
    add('CPU us/job, worker + redis', sum(hm, 'worker_cpu_us_per_job', 'redis_cpu_us_per_job'), sum(bm, 'worker_cpu_us_per_job', 'redis_cpu_us_per_job'));
    add('  worker CPU us/job', hm.worker_cpu_us_per_job, bm.worker_cpu_us_per_job);
    add('  redis CPU us/job', hm.redis_cpu_us_per_job, bm.redis_cpu_us_per_job);
    add('redis commands/job', hm.redis_commands_per_job, bm.redis_commands_per_job);
  } else if (name === 'max-rate') {
    add('jobs/s (100 workers, 100 producers)', hm.jobs_per_second, bm.jobs_per_second);
    add('CPU us/job, process + redis', sum(hm, 'process_cpu_us_per_job', 'redis_cpu_us_per_job'), sum(bm, 'process_cpu_us_per_job', 'redis_cpu_us_per_job'));
    add('redis commands/job', hm.redis_commands_per_job, bm.redis_commands_per_job);
  } else if (name.startsWith('latency')) {
    const primary = name === 'latency';
    add('rate (jobs/s, both)', hm.rate, bm.rate);
    add('p50 ms (from add call)', hm.p50_ms, bm.p50_ms);
    const r = ratio(hm.p99_ms, bm.p99_ms);
    if (primary) add('p99 ms (from add call)', hm.p99_ms, bm.p99_ms, 'ratio <= 0.5', r === null ? null : r <= 0.5);
    else add('p99 ms (from add call)', hm.p99_ms, bm.p99_ms);
    add('max ms', hm.max_ms, bm.max_ms);
    add('p99 ms from intended send', hm.from_intended_p99_ms, bm.from_intended_p99_ms);
    add('not started', hm.not_started, bm.not_started);
  } else if (name === 'precision') {
    add('per-second lateness p50 ms', hm.lateness_p50_ms, bm.lateness_p50_ms);
    add('per-second lateness p99 ms', hm.lateness_p99_ms, bm.lateness_p99_ms, 'herald <= 10 ms', typeof hm.lateness_p99_ms === 'number' ? hm.lateness_p99_ms <= 10 : null);
    add('per-second lateness max ms', hm.lateness_max_ms, bm.lateness_max_ms);
    add('burst: last start ms after due', hm.burst_last_start_ms, bm.burst_last_start_ms, 'herald <= 250 ms', typeof hm.burst_last_start_ms === 'number' ? hm.burst_last_start_ms <= 250 : null);
    add('burst p99 ms', hm.burst_p99_ms, bm.burst_p99_ms);
    const missed = (j) => j.missed + (j.burst - j.burst_started);
    const dups = (j) => j.duplicates + j.burst_duplicates;
    const hMiss = worst(hRuns || [], missed);
    add('missed runs (worst run; burst included)', hMiss, b ? worst(b.runs, missed) : null, 'herald 0', hMiss === null ? null : hMiss === 0);
    const hDup = worst(hRuns || [], dups);
    add('duplicate runs (worst run)', hDup, b ? worst(b.runs, dups) : null, 'herald 0', hDup === null ? null : hDup === 0);
  } else if (name === 'footprint') {
    add('worker RSS MB', hm.worker_rss_mb, bm.worker_rss_mb, 'herald <= 64 MB', typeof hm.worker_rss_mb === 'number' ? hm.worker_rss_mb <= 64 : null);
    add('redis used_memory MB', hm.redis_used_memory_mb, bm.redis_used_memory_mb);
    add('worker idle CPU s', hm.worker_idle_cpu_seconds, bm.worker_idle_cpu_seconds);
  }
  return rows;
}

function fmt(v) {
  if (v === null || v === undefined) return 'n/a';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(3).replace(/\.?0+$/, '') || '0';
}

function markdown(summary, meta) {
  const lines = [];
  lines.push(`## herald vs BullMQ, ${meta.started} (${meta.quick ? 'SMOKE sizes (--quick)' : 'full sizes'}, ${meta.runs} measured run(s) each${meta.warmup ? ' after 1 warm-up' : ', no warm-up'})`);
  lines.push('');
  lines.push(`Medians. ${meta.cpus} CPUs (${meta.cpu_model}), Node ${meta.node}, bullmq ${meta.bullmq_version}, redis-server ${meta.redis_version}, herald ${meta.herald_version}.`);
  lines.push('');
  lines.push('| scenario | metric | herald | BullMQ | herald/BullMQ | target | met |');
  lines.push('|---|---|---|---|---|---|---|');
  for (const s of summary) {
    for (const r of s.rows) {
      const met = r.met === true ? 'met' : r.met === false ? '**missed**' : r.target ? 'n/a' : '';
      lines.push(`| ${s.name} | ${r.label} | ${fmt(r.herald)} | ${fmt(r.bullmq)} | ${r.ratio === null ? '' : fmt(r.ratio)} | ${r.target} | ${met} |`);
    }
  }
  lines.push('');
  lines.push('Commands (FLUSHALL before each run; `$REDIS_URL` is the harness\'s redis-server):');
  lines.push('');
  lines.push('```sh');
  lines.push(`${meta.harness_command}`);
  lines.push(`# redis: ${meta.redis_command.replace(/--logfile \S+/, '--logfile ...')}`);
  lines.push(`# herald: HERALD_BENCH=${meta.herald_bin}`);
  lines.push(`#   built by: ${meta.herald_build}`);
  for (const s of summary) for (const c of s.commands) lines.push(c);
  lines.push('```');
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = new Date();
  const stamp = started.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  ensureNodeModules();
  const bins = { herald: opts.heraldBin || buildHerald() };
  const redis = await startRedis(opts.redisServer || 'redis-server');
  const ctx = { bins, redis, failures: 0 };
  const cleanup = async () => {
    if (current) current.kill('SIGKILL');
    await stopRedis(redis);
  };
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.on(sig, async () => {
      log(`${sig}: stopping`);
      await cleanup();
      process.exit(130);
    });
  }
  log(`redis-server ${redis.version} on ${redis.url}`);

  const sz = sizes(opts.quick);
  const m = { runs: opts.runs, warmup: opts.warmup };
  const results = {};
  const want = (s) => opts.only.includes(s);
  try {
    if (want('drain')) {
      for (const c of [1, 100]) {
        const name = `drain-c${c}`;
        const args = ['drain', '--jobs', String(sz.drain), '--concurrency', String(c)];
        results[name] = await measureInTurns(name, [['bullmq', args], ['herald', args]], { ...m, killAfter: 900 }, ctx);
      }
    }
    let rate = opts.rate;
    if (want('max-rate') || (want('latency') && !rate)) {
      const args = ['max-rate', ...sz.maxRate];
      const systems = want('max-rate') ? [['bullmq', args], ['herald', args]] : [['bullmq', args]];
      results['max-rate'] = await measureInTurns('max-rate', systems, { ...m, killAfter: 200 }, ctx);
      if (!rate) {
        const max = results['max-rate'].bullmq.median.jobs_per_second;
        if (typeof max !== 'number' || !(max > 0)) throw new Error('no BullMQ max-rate median: cannot set the latency rate');
        rate = Math.max(1, Math.round(max / 2));
      }
    }
    if (want('latency')) {
      const args = ['latency', '--rate', String(rate), '--seconds', String(sz.latencySeconds), '--concurrency', '100'];
      results.latency = { rate, ...(await measureInTurns('latency', [['bullmq', args], ['herald', args]], { ...m, killAfter: 300 }, ctx)) };
      // herald's default path for an ad-hoc run is run_now (this daemon's
      // pool); the same runs put on the Redis run queue instead, for
      // reference against the same BullMQ runs.
      results['latency-via-queue'] = {
        rate,
        bullmq_same_as: 'latency',
        herald: await measure('latency-via-queue', 'herald', [...args, '--via', 'queue'], { ...m, killAfter: 300 }, ctx),
      };
    }
    if (want('precision')) {
      const args = ['precision', ...sz.precision];
      // BullMQ's job schedulers add a job each tick whether or not the
      // last one is done: herald's equivalent is overlap = allow.
      results.precision = await measureInTurns('precision', [['bullmq', args], ['herald', [...args, '--overlap', 'allow']]], { ...m, killAfter: 400 }, ctx);
    }
    if (want('footprint')) {
      const args = ['footprint', ...sz.footprint];
      results.footprint = await measureInTurns('footprint', [['bullmq', args], ['herald', args]], { ...m, killAfter: 900 }, ctx);
    }
  } finally {
    await cleanup();
  }

  const firstJson = (r) => r && [...r.runs, r.warmup].filter(Boolean).map((x) => x.json).find(Boolean);
  const anyRun = (sys) => Object.values(results).map((r) => firstJson(r[sys])).find(Boolean) || {};
  const cpuModel = (/model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8')) || [])[1] || os.cpus()[0].model;
  const meta = {
    started: started.toISOString(),
    finished: new Date().toISOString(),
    quick: opts.quick,
    runs: opts.runs,
    warmup: opts.warmup,
    only: opts.only,
    cpus: os.cpus().length,
    cpu_model: cpuModel,
    mem_gib: round(os.totalmem() / 2 ** 30, 1),
    kernel: os.release(),
    node: process.version,
    bullmq_version: anyRun('bullmq').bullmq_version,
    ioredis_version: anyRun('bullmq').ioredis_version,
    herald_version: anyRun('herald').herald_version,
    herald_bin: bins.herald,
    herald_build: opts.heraldBin ? '(given with --herald-bin)' : HERALD_BUILD,
    redis_version: redis.version,
    redis_command: redis.command,
    harness_command: ['bench/run', ...process.argv.slice(2)].map(shq).join(' '),
    latency_rate: results.latency ? results.latency.rate : null,
    failures: ctx.failures,
  };
  const summary = Object.entries(results).map(([name, r]) => ({
    name,
    rows: rowsFor(name, r.herald, r.bullmq || (r.bullmq_same_as && results[r.bullmq_same_as].bullmq), r.herald ? r.herald.runs : null),
    commands: [r.herald, r.bullmq]
      .filter(Boolean)
      .map((x) =>
        x.command
          .replace(redis.url, '$REDIS_URL')
          .replace(bins.herald, '$HERALD_BENCH')
          .replace(process.execPath, 'node')
          .replace(ROOT + '/', ''),
      ),
    herald_median: r.herald ? r.herald.median : null,
    bullmq_median: r.bullmq ? r.bullmq.median : null,
  }));
  const md = markdown(summary, meta);
  fs.mkdirSync(opts.out, { recursive: true });
  const file = path.join(opts.out, `${stamp}.json`);
  fs.writeFileSync(file, JSON.stringify({ meta, summary, markdown: md, results }, null, 2) + '\n');
  process.stdout.write(md + '\n');
  log(`raw results: ${path.relative(process.cwd(), file)}`);
  if (ctx.failures) log(`${ctx.failures} run(s) failed; see the stderr above and the results file`);
  process.exitCode = ctx.failures ? 1 : 0;
}

main().catch((e) => {
  process.stderr.write(`bench/run: ${e.stack || e}\n`);
  process.exit(1);
});
