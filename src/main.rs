//! The `herald` daemon shell.
//!
//! `main` parses the command line, then for each command loads and validates
//! *all* configuration before doing anything else, so a bad config exits 2
//! with every problem listed before a port is bound.
//!
//! * `herald run`   - the daemon (config -> running parts -> wait for a signal)
//! * `herald check` - validate a config, print every problem or a summary
//! * `herald next`  - print an expression's next fire times in a zone
//!
//! The scheduling logic lives in the `herald-actors` crate.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Parser, Subcommand};
use herald_actors::schedule::{Schedule, parse_zone};
use tracing::info;

/// Exit code for bad input (config, expression, zone), as clap uses for bad
/// arguments.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "herald", version, about = "Scheduler daemon for Telegram bots")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a config file: print every problem (exit 2) or a summary.
    Check {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Print the next fire times of a cron expression.
    Next {
        /// 5-field crontab(5), 6-field with leading seconds, or @hourly/@daily/...
        expr: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start after this RFC 3339 instant (default: now).
        #[arg(long)]
        after: Option<String>,
        /// How many fire times to print.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Next {
            expr,
            tz,
            after,
            count,
        } => next(&expr, &tz, after.as_deref(), count),
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
    }
}

fn next(expr: &str, tz: &str, after: Option<&str>, count: u32) -> ExitCode {
    let tz = match parse_zone(tz) {
        Ok(tz) => tz,
        Err(e) => return usage_error(e),
    };
    let schedule = match Schedule::parse(expr, tz) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let after = match after {
        None => Utc::now(),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                return usage_error(format!(
                    "--after: {text:?} is not an RFC 3339 timestamp such as 2026-03-29T01:30:00+01:00 ({e})"
                ));
            }
        },
    };
    for fire in schedule.upcoming(after).take(count as usize) {
        println!(
            "{}",
            fire.with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, false)
        );
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(settings) => {
            println!("{}", settings.summary());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    init_logging();
    let settings = match config::load(path) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    info!(summary = %settings.summary(), "config loaded");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Listen for signals before announcing anything, so a signal that
        // follows the first log line always finds its handler.
        let shutdown = match ShutdownSignal::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for shutdown signals");
                return ExitCode::FAILURE;
            }
        };
        let now = Utc::now();
        for job in &settings.jobs {
            let next = job.schedule.next_after(now).map(|t| {
                t.with_timezone(&job.schedule.tz())
                    .to_rfc3339_opts(SecondsFormat::Secs, false)
            });
            info!(
                job = %job.id,
                schedule = %job.schedule.expr(),
                zone = %job.schedule.tz(),
                enabled = job.enabled,
                next_fire = next.as_deref().unwrap_or("never"),
                "job loaded"
            );
        }
        let signal = shutdown.recv().await;
        info!(signal, "shutting down");
        ExitCode::SUCCESS
    })
}

/// SIGINT and SIGTERM handlers, installed up front.
struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either signal and says which.
    async fn recv(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn usage_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("herald: {e}");
    ExitCode::from(EXIT_USAGE)
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
