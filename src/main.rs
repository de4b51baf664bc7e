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
mod http;
mod telemetry;

// mimalloc rather than glibc's malloc: the run path allocates and frees
// small objects (records, ids, messages) across the runtime's threads, and
// glibc's allocator took a quarter of the daemon's CPU there (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use herald_actors::notifier::{DryRun, TelegramLimits, Transport};
use herald_actors::schedule::{Schedule, parse_zone};
use herald_actors::spawn_tree;
use herald_actors::supervisor::TreeExit;
use herald_actors::telegram::TelegramTransport;
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
        /// How log lines on stderr look (RUST_LOG filters them; default info).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
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
    herald_actors::allocator::release_freed_memory_promptly();
    let cli = Cli::parse();
    match cli.command {
        Command::Next {
            expr,
            tz,
            after,
            count,
        } => next(&expr, &tz, after.as_deref(), count),
        Command::Check { config } => check(&config),
        Command::Run { config, log_format } => run(&config, log_format),
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

fn run(path: &std::path::Path, log_format: LogFormat) -> ExitCode {
    init_logging(log_format);
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
    runtime.block_on(serve(settings))
}

/// Why `serve` returned.
enum Ending {
    Signal(&'static str),
    TreeStopped(TreeExit),
    ApiStopped(String),
}

/// Runs the actor tree until a signal (graceful shutdown, exit 0) or until
/// the tree gives up on a failing actor (exit 1, for systemd to restart).
async fn serve(settings: config::Settings) -> ExitCode {
    // Listen for signals before announcing anything, so a signal that
    // follows the first log line always finds its handler.
    let shutdown = match ShutdownSignal::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for shutdown signals");
            return ExitCode::FAILURE;
        }
    };
    let metrics = telemetry::install();
    if let Some(handle) = &metrics {
        telemetry::spawn_upkeep(handle.clone());
    }
    // Without a token messages are logged, not sent (dry-run), and
    // Telegram's limits do not apply.
    let mut tree = settings.tree.clone();
    let mut bot = None;
    let transport: Arc<dyn Transport> = match &settings.telegram_token {
        Some(token) => {
            match TelegramTransport::new(token.expose(), Some(settings.telegram_api_url.as_str())) {
                Ok(t) => {
                    bot = Some(t.bot());
                    Arc::new(t)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up Telegram delivery");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => {
            tree.telegram_limits = TelegramLimits::unlimited();
            Arc::new(DryRun)
        }
    };
    let mut registry = match herald_actors::jobs::registry() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a coded job's definition does not hold");
            return ExitCode::FAILURE;
        }
    };
    for (id, settings) in &settings.coded {
        registry.configure(id, settings.clone());
    }
    let herald = match spawn_tree(tree, settings.jobs.clone(), registry, transport).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the actor tree");
            return ExitCode::FAILURE;
        }
    };
    if settings.telegram_subscriptions {
        match bot {
            Some(bot) => herald.start_subscriptions(bot, std::time::Duration::from_secs(25)),
            None => tracing::warn!(
                "telegram.subscriptions is on but there is no bot token: /start and /stop are not taken"
            ),
        }
    }
    match herald.scheduler.jobs().await {
        Ok(mut jobs) => {
            jobs.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
            for job in jobs {
                let tz = job.spec.schedule.tz();
                let next = job.next_fire.map(|t| {
                    t.with_timezone(&tz)
                        .to_rfc3339_opts(SecondsFormat::Secs, false)
                });
                info!(
                    job = %job.spec.id,
                    schedule = %job.spec.schedule.expr(),
                    zone = %tz,
                    enabled = job.spec.enabled,
                    next_fire = next.as_deref().unwrap_or("never"),
                    "job loaded"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list jobs"),
    }
    // The admin API: bound before announcing "running", so a port in use
    // stops the daemon with the reason instead of leaving it headless.
    let listener = match tokio::net::TcpListener::bind(settings.http_listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %settings.http_listen, error = %e, "cannot bind the admin API");
            herald.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    if settings.admin_token.is_none() {
        tracing::warn!(listen = %settings.http_listen, "no admin token: /api is open to anyone who can reach this loopback address");
    }
    let api_state = http::ApiState::new(
        herald.admin(),
        settings.admin_token.as_ref().map(|t| t.expose()),
        metrics,
    );
    let (api_stop_tx, api_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(http::serve(listener, api_state, async move {
        let _ = api_stop_rx.await;
    }));
    info!(
        daemon = %herald.daemon_id(),
        mode = %herald.mode().as_str(),
        api = %settings.http_listen,
        "herald running"
    );
    let ending = tokio::select! {
        signal = shutdown.recv() => Ending::Signal(signal),
        exit = herald.stopped() => Ending::TreeStopped(exit),
        served = api => Ending::ApiStopped(match served {
            Ok(Ok(())) => "stopped".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        }),
    };
    let _ = api_stop_tx.send(());
    match ending {
        Ending::Signal(signal) => {
            info!(signal = %signal, grace = ?settings.tree.shutdown_grace, "shutting down");
            let report = herald.shutdown().await;
            info!(
                finished = report.finished,
                cancelled = report.cancelled,
                "stopped"
            );
            ExitCode::SUCCESS
        }
        Ending::TreeStopped(exit) => {
            tracing::error!(?exit, "actor tree stopped; exiting non-zero");
            ExitCode::FAILURE
        }
        Ending::ApiStopped(reason) => {
            tracing::error!(%reason, "the admin API stopped; shutting down");
            herald.shutdown().await;
            ExitCode::FAILURE
        }
    }
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

/// The shape of `herald run`'s log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines: time, level, spans, message, key=value fields.
    Text,
    /// One JSON object per line: timestamp, level, target, the event's
    /// fields (message among them), span (the innermost span and its
    /// fields) and spans (every enclosing span, outermost first).
    Json,
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written (stderr closed: a dead pipe,
    // journald restarting) is dropped. Reporting it would go to the same
    // closed stderr through eprintln!, which panics.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
