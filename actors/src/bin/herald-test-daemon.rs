//! A daemon for the SIGKILL test (`actors/tests/sigkill.rs`): one coded job,
//! "slow", every 10 s, whose runs take 4 s and then count their completion
//! in Redis under `test:completed:{run_id}`. Configured by environment:
//! REDIS_URL, DAEMON_ID, VISIBILITY_MS. Prints "ready" once running; stops
//! on SIGTERM.
//!
//! With TELEGRAM_API_URL (a fake Bot API server), FANOUT_CHATS (n) and
//! FANOUT_SCHEDULE (a cron expression) it also has a message job "fanout"
//! that messages chats 1..=n through teloxide, at Telegram's limits.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands};
use herald_actors::handler::{JobError, Registry, RunContext};
use herald_actors::job::{JobKind, JobSpec};
use herald_actors::notifier::{DryRun, Transport};
use herald_actors::record::Counts;
use herald_actors::redis_backend::RedisSettings;
use herald_actors::schedule::Schedule;
use herald_actors::telegram::TelegramTransport;
use herald_actors::{TreeConfig, spawn_tree};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set"))
}

#[tokio::main]
async fn main() {
    let url = env("REDIS_URL");
    let visibility = Duration::from_millis(env("VISIBILITY_MS").parse().expect("VISIBILITY_MS"));
    let counter_url = url.clone();
    let mut registry = Registry::new();
    registry.register("slow", move |ctx: RunContext| {
        let url = counter_url.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            let fail = |e: redis::RedisError| JobError::new(e.to_string());
            let client = redis::Client::open(url.as_str()).map_err(fail)?;
            let mut c = client
                .get_multiplexed_async_connection()
                .await
                .map_err(fail)?;
            let _: i64 = c
                .incr(format!("test:completed:{}", ctx.run_id), 1)
                .await
                .map_err(fail)?;
            Ok(Counts::default())
        }
    });
    let mut job = JobSpec::new(
        "slow",
        Schedule::parse("*/10 * * * * *", chrono_tz::UTC).expect("schedule"),
        JobKind::Coded {
            handler: "slow".into(),
        },
    );
    job.timeout = Duration::from_secs(30);
    let mut jobs = vec![job];
    let transport: Arc<dyn Transport> = match std::env::var("TELEGRAM_API_URL") {
        Ok(api_url) => {
            let chats: i64 = env("FANOUT_CHATS").parse().expect("FANOUT_CHATS");
            let mut fanout = JobSpec::new(
                "fanout",
                Schedule::parse(&env("FANOUT_SCHEDULE"), chrono_tz::UTC).expect("FANOUT_SCHEDULE"),
                JobKind::Message {
                    template: "fan-out {{ run_id }}".into(),
                },
            );
            fanout.delivery_mut().targets.include = (1..=chats).collect();
            jobs.push(fanout);
            Arc::new(TelegramTransport::new("123456:TEST", Some(&api_url)).expect("transport"))
        }
        Err(_) => Arc::new(DryRun),
    };
    let config = TreeConfig {
        redis: Some(RedisSettings::new(url, "herald")),
        daemon_id: Some(env("DAEMON_ID")),
        visibility_timeout: visibility,
        ..TreeConfig::default()
    };
    let herald = spawn_tree(config, jobs, registry, transport)
        .await
        .expect("tree starts");
    println!("ready");
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    term.recv().await;
    herald.shutdown().await;
}
