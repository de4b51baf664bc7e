//! Telegram delivery: one run fanning out to many recipients through
//! teloxide to the fake Bot API server (in-process, loopback).
//!
//! 1. Limits on both sides: the fake enforces Telegram's (30/s overall, 1/s
//!    per chat) and answers 429 past them; herald keeps its own. Measured:
//!    the achieved rate between the first and the last message, 429s
//!    provoked, duplicates, and the record's counts.
//! 2. Limits lifted on both sides: messages per second (from the run's
//!    start to its final record) and CPU time per message. The CPU figure is
//!    the whole process: herald, teloxide's HTTP client and the fake server.
//!
//! `HERALD_BENCH_RECIPIENTS` (default 10,000) sets the fan-out size;
//! `HERALD_BENCH_PART=1` or `2` runs one part only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_actors::handler::Registry;
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::notifier::TelegramLimits;
use herald_actors::record::ExecutionRecord;
use herald_actors::schedule::Schedule;
use herald_actors::telegram::TelegramTransport;
use herald_actors::{TreeConfig, spawn_tree};
use herald_testkit::telegram::FakeTelegram;

mod support;
use support::process_cpu_seconds;

struct Outcome {
    record: ExecutionRecord,
    wall: Duration,
    cpu: f64,
}

async fn fan_out(fake: &FakeTelegram, limits: TelegramLimits, recipients: i64) -> Outcome {
    let mut job = JobSpec::new(
        "broadcast",
        Schedule::parse("0 0 1 1 *", chrono_tz::UTC).unwrap(),
        JobKind::Message {
            template: "<b>herald</b> broadcast {{ run_id }}".into(),
        },
    );
    job.delivery_mut().targets.include = (1..=recipients).collect();
    let config = TreeConfig {
        telegram_limits: limits,
        ..TreeConfig::default()
    };
    let transport = TelegramTransport::new("123456:BENCH", Some(&fake.api_url())).unwrap();
    let herald = spawn_tree(config, vec![job], Registry::new(), Arc::new(transport))
        .await
        .unwrap();
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let run = herald
        .scheduler
        .run_now("broadcast".into())
        .await
        .unwrap()
        .unwrap();
    let record = loop {
        if let Ok(Some(r)) = herald.store.record(run.clone()).await
            && r.status.is_terminal()
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    let cpu = process_cpu_seconds() - cpu_before;
    herald.shutdown().await;
    Outcome { record, wall, cpu }
}

fn duplicates(fake: &FakeTelegram) -> usize {
    let mut per_chat: HashMap<i64, usize> = HashMap::new();
    for r in fake.sent() {
        *per_chat.entry(r.chat_id.unwrap_or(0)).or_default() += 1;
    }
    per_chat.values().filter(|n| **n > 1).count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let recipients: i64 = std::env::var("HERALD_BENCH_RECIPIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let part: Option<u32> = std::env::var("HERALD_BENCH_PART")
        .ok()
        .and_then(|v| v.parse().ok());
    println!("notify: one run fanning out to {recipients} private chats");
    if part.is_none_or(|p| p == 1) {
        let fake = FakeTelegram::start().await;
        fake.enforce_limits(true);
        let out = fan_out(&fake, TelegramLimits::default(), recipients).await;
        let sent = fake.sent();
        let first = sent.iter().map(|r| r.at).min().unwrap();
        let last = sent.iter().map(|r| r.at).max().unwrap();
        let span = last.duration_since(first).as_secs_f64();
        let rate = (sent.len() as f64 - 1.0) / span;
        println!(
            "  limits on:  {} delivered in {:.1} s, {rate:.2} messages/s ({:+.2}% of 30/s), {} 429s provoked, {} chats messaged twice, record {:?} sent={} failed={}",
            sent.len(),
            out.wall.as_secs_f64(),
            (rate / 30.0 - 1.0) * 100.0,
            fake.too_many_requests(),
            duplicates(&fake),
            out.record.status,
            out.record.counts.sent,
            out.record.counts.failed,
        );
    }
    if part.is_none_or(|p| p == 2) {
        let fake = FakeTelegram::start().await;
        let out = fan_out(&fake, TelegramLimits::unlimited(), recipients).await;
        let n = fake.sent().len() as f64;
        println!(
            "  limits off: {} delivered in {:.2} s, {:.0} messages/s, CPU {:.0} us/message (whole process), {} chats messaged twice, record {:?} sent={}",
            n,
            out.wall.as_secs_f64(),
            n / out.wall.as_secs_f64(),
            out.cpu / n * 1e6,
            duplicates(&fake),
            out.record.status,
            out.record.counts.sent,
        );
    }
}
