//! herald's configuration: one TOML file, overridden by environment
//! variables, validated all at once.
//!
//! [`Config`] is the file as written (plain serde data, defaults filled in);
//! [`load`] reads it, applies the environment and validates it into
//! [`Settings`], the typed values the daemon runs on. Every problem is
//! collected with its location (`file:line:column: key.path: message`, or
//! the environment variable at fault) so an operator fixes them in one pass.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use herald_actors::TreeConfig;
use herald_actors::digest::{self, DigestProfile, DigestSchedule, DigestTemplates};
use herald_actors::job::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MISFIRE_LIMIT, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX,
    DEFAULT_TIMEOUT, DeliverySpec, JobKind, JobSpec, MisfirePolicy, OverlapPolicy, RetryPolicy,
    check_job_id,
};
use herald_actors::memory::{
    DEFAULT_HISTORY_PER_JOB, DEFAULT_MAX_RECORDS, DEFAULT_RECORD_TTL, StoreLimits,
};
use herald_actors::redis_backend::RedisSettings;
use herald_actors::redis_backend::connect::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT};
use herald_actors::restart::{DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_WINDOW, RestartLimit};
use herald_actors::schedule::{CronExpr, Schedule, parse_zone};
pub use herald_actors::secret::Secret;
use herald_actors::template;
use herald_actors::tree::{
    DEFAULT_MAX_QUEUED, DEFAULT_MISFIRE_GRACE, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WORKERS,
};
use herald_actors::users::{Targets, check_pack_name};
use herald_actors::webhook::WebhookEndpoint;
use herald_actors::worker_pool::DEFAULT_VISIBILITY_TIMEOUT;
use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use url::Url;

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/herald.toml";
/// The admin API listens on loopback unless told otherwise: it is an
/// operator's tool, not a public endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Redis on its standard local port; when it is not there herald runs in
/// offline mode and keeps trying.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Every Redis key starts with this.
pub const DEFAULT_REDIS_PREFIX: &str = "herald";
pub const DEFAULT_TELEGRAM_API_URL: &str = "https://api.telegram.org";

/// The config file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub scheduler: SchedulerSection,
    pub workers: WorkersSection,
    pub supervisor: SupervisorSection,
    pub store: StoreSection,
    pub http: HttpSection,
    pub redis: RedisSection,
    pub telegram: TelegramSection,
    pub webhooks: Vec<WebhookSection>,
    pub jobs: Vec<JobSection>,
    pub digests: Vec<DigestSection>,
    /// Settings of coded jobs, by job id (`[coded.<id>]`), handed to the
    /// job as `ctx.config`.
    pub coded: std::collections::BTreeMap<String, toml::Table>,
}

/// A webhook endpoint messages can be posted to.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSection {
    pub name: String,
    pub url: String,
    /// HMAC-SHA256 key for `X-Herald-Signature`; empty: unsigned.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_webhook_attempts() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerSection {
    /// Zone of jobs that name none.
    pub timezone: String,
    /// A tick later than this is a misfire (misfire policy), not a late fire.
    #[serde(with = "humantime_serde")]
    pub misfire_grace: Duration,
    /// On SIGTERM, how long running runs may finish before being cancelled.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            timezone: "UTC".to_string(),
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WorkersSection {
    /// Runs executed at once by this daemon.
    pub count: usize,
    /// Runs waiting for a worker in this daemon's own queue at most.
    pub max_queued: usize,
}

impl Default for WorkersSection {
    fn default() -> Self {
        WorkersSection {
            count: DEFAULT_WORKERS,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SupervisorSection {
    /// Restarts of one actor tolerated within `restart_window`; past it
    /// herald exits non-zero.
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        SupervisorSection {
            max_restarts: DEFAULT_MAX_RESTARTS,
            restart_window: DEFAULT_RESTART_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StoreSection {
    /// Execution records kept in memory; past it the oldest are dropped.
    pub max_records: usize,
    /// Records kept per job.
    pub history_per_job: usize,
    /// Records expire this long after they were created.
    #[serde(with = "humantime_serde")]
    pub record_ttl: Duration,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            max_records: DEFAULT_MAX_RECORDS,
            history_per_job: DEFAULT_HISTORY_PER_JOB,
            record_ttl: DEFAULT_RECORD_TTL,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpSection {
    pub listen: String,
    pub admin_token: Option<Secret>,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: DEFAULT_LISTEN.to_string(),
            admin_token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisSection {
    pub url: String,
    pub prefix: String,
    /// Connecting longer than this fails (and herald goes offline).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A command unanswered this long fails.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// A run-queue entry held unacknowledged this long is taken over by
    /// another daemon.
    #[serde(with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// This daemon's lease, renewed by its heartbeat: offline, a daemon
    /// with peers fires its own jobs only while it lasts, and peers take
    /// a silent daemon's jobs over only after it.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How far the daemons' wall clocks may disagree (NTP keeps them
    /// well within the default).
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            url: DEFAULT_REDIS_URL.to_string(),
            prefix: DEFAULT_REDIS_PREFIX.to_string(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            lease_ttl: herald_actors::health::DEFAULT_LEASE_TTL,
            clock_skew: herald_actors::health::DEFAULT_CLOCK_SKEW,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TelegramSection {
    /// No token: dry-run delivery (messages are logged, not sent).
    pub token: Option<Secret>,
    pub api_url: String,
    /// The owner chat that jobs with `save = true` also send to.
    pub save_chat: Option<i64>,
    /// Take /start and /stop from Telegram (long polling).
    pub subscriptions: bool,
}

impl Default for TelegramSection {
    fn default() -> Self {
        TelegramSection {
            token: None,
            api_url: DEFAULT_TELEGRAM_API_URL.to_string(),
            save_chat: None,
            subscriptions: false,
        }
    }
}

/// A message job defined in the config file.
#[derive(Debug, Clone, Deserialize)]
pub struct JobSection {
    pub id: String,
    pub schedule: String,
    pub timezone: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub template: String,
    #[serde(default)]
    pub misfire: MisfirePolicy,
    #[serde(default = "default_misfire_limit")]
    pub misfire_limit: u32,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    #[serde(default = "default_retry_backoff_max", with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// Message users directly (false: only save and webhooks).
    #[serde(default = "yes")]
    pub dm: bool,
    /// Chats messaged directly (users or groups).
    #[serde(default)]
    pub include: Vec<i64>,
    /// Chats never messaged by this job.
    #[serde(default)]
    pub exclude: Vec<i64>,
    /// Packs whose members are messaged.
    #[serde(default)]
    pub packs: Vec<String>,
    /// Also send to `telegram.save_chat`.
    #[serde(default)]
    pub save: bool,
    /// Webhook endpoints (by name) the message is posted to.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Deliver without a notification sound.
    #[serde(default)]
    pub silent: bool,
}

/// A digest profile: items producers add to its inbox, delivered as one
/// message per window on each of its schedules.
#[derive(Debug, Clone, Deserialize)]
pub struct DigestSection {
    pub id: String,
    /// Zone of schedules that name none (default: scheduler.timezone).
    pub timezone: Option<String>,
    pub schedules: Vec<DigestScheduleSection>,
    #[serde(default = "default_digest_header")]
    pub header: String,
    #[serde(default = "default_digest_entry")]
    pub entry: String,
    #[serde(default = "default_digest_footer")]
    pub footer: String,
    /// Send a digest for an empty window too.
    #[serde(default)]
    pub send_empty: bool,
    /// Inbox items older than this are trimmed.
    #[serde(default = "default_digest_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Entries rendered at most; the rest are counted (`omitted`).
    #[serde(default = "default_digest_max_items")]
    pub max_items: usize,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// After downtime, one catch-up digest (its window covers the gap).
    #[serde(default = "default_digest_misfire")]
    pub misfire: MisfirePolicy,
    #[serde(default = "yes")]
    pub dm: bool,
    #[serde(default)]
    pub include: Vec<i64>,
    #[serde(default)]
    pub exclude: Vec<i64>,
    #[serde(default)]
    pub packs: Vec<String>,
    #[serde(default)]
    pub save: bool,
    #[serde(default)]
    pub webhooks: Vec<String>,
    #[serde(default)]
    pub silent: bool,
}

/// One named schedule of a digest profile: `hourly`, `daily` and `weekly`
/// have a default cron; any other name needs one.
#[derive(Debug, Clone, Deserialize)]
pub struct DigestScheduleSection {
    pub name: String,
    pub cron: Option<String>,
    pub timezone: Option<String>,
}

fn default_digest_header() -> String {
    herald_actors::digest::DEFAULT_HEADER.to_string()
}
fn default_digest_entry() -> String {
    herald_actors::digest::DEFAULT_ENTRY.to_string()
}
fn default_digest_footer() -> String {
    herald_actors::digest::DEFAULT_FOOTER.to_string()
}
fn default_digest_retention() -> Duration {
    herald_actors::digest::DEFAULT_RETENTION
}
fn default_digest_max_items() -> usize {
    herald_actors::digest::DEFAULT_MAX_ITEMS
}
fn default_digest_misfire() -> MisfirePolicy {
    MisfirePolicy::FireOnce
}

fn yes() -> bool {
    true
}
fn default_misfire_limit() -> u32 {
    DEFAULT_MISFIRE_LIMIT
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_retry_backoff() -> Duration {
    DEFAULT_RETRY_BACKOFF
}
fn default_retry_backoff_max() -> Duration {
    DEFAULT_RETRY_BACKOFF_MAX
}

/// The validated configuration the daemon runs on. `Debug` hides secrets,
/// including a password inside the Redis URL.
#[derive(Clone)]
pub struct Settings {
    pub source: PathBuf,
    pub default_tz: Tz,
    pub http_listen: SocketAddr,
    pub admin_token: Option<Secret>,
    pub redis_url: Url,
    pub redis_prefix: String,
    pub telegram_token: Option<Secret>,
    pub telegram_api_url: Url,
    /// Poll Telegram for /start and /stop.
    pub telegram_subscriptions: bool,
    /// Settings of coded jobs, by job id.
    pub coded: std::collections::BTreeMap<String, serde_json::Value>,
    pub tree: TreeConfig,
    pub jobs: Vec<JobSpec>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("source", &self.source)
            .field("default_tz", &self.default_tz)
            .field("http_listen", &self.http_listen)
            .field("admin_token", &self.admin_token)
            .field("redis_url", &redacted_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("telegram_token", &self.telegram_token)
            .field("telegram_api_url", &self.telegram_api_url)
            .field("tree", &self.tree)
            .field("jobs", &self.jobs)
            .finish()
    }
}

impl Settings {
    /// One line saying what was loaded, secrets left out.
    pub fn summary(&self) -> String {
        let jobs: Vec<&str> = self.jobs.iter().map(|j| &*j.id).collect();
        let job_list = if jobs.is_empty() {
            String::new()
        } else {
            format!(" ({})", jobs.join(", "))
        };
        let digests: Vec<String> = self
            .tree
            .digests
            .iter()
            .flat_map(|p| {
                p.schedules
                    .iter()
                    .map(|s| herald_actors::digest::job_id(&p.id, &s.name))
            })
            .collect();
        let digest_list = if digests.is_empty() {
            String::new()
        } else {
            format!(
                ", {} digest schedule{} ({})",
                digests.len(),
                if digests.len() == 1 { "" } else { "s" },
                digests.join(", ")
            )
        };
        format!(
            "{}: ok: {} job{}{}{}, default zone {}, {} workers, redis {} prefix {:?}, telegram {}, admin API on {}{}",
            self.source.display(),
            self.jobs.len(),
            if self.jobs.len() == 1 { "" } else { "s" },
            job_list,
            digest_list,
            self.default_tz,
            self.tree.workers,
            redacted_url(&self.redis_url),
            self.redis_prefix,
            if self.telegram_token.is_some() {
                format!("via {}", self.telegram_api_url)
            } else {
                "dry-run (no token)".to_string()
            },
            self.http_listen,
            if self.admin_token.is_some() {
                " with token"
            } else {
                " without token"
            },
        )
    }
}

/// A URL with any credentials hidden, for logs and summaries.
fn redacted_url(url: &Url) -> String {
    herald_actors::redis_backend::connect::redacted_url(url.as_str())
}

/// Where a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In the file: line and column (1-based) when known, and the key path.
    File {
        line: Option<(usize, usize)>,
        key: String,
    },
    /// In an environment variable.
    Env(&'static str),
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    pub message: String,
}

/// Everything wrong with a configuration, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    pub source: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            match &p.location {
                Location::File {
                    line: Some((line, col)),
                    key,
                } if !key.is_empty() => writeln!(
                    f,
                    "{}:{line}:{col}: {key}: {}",
                    self.source.display(),
                    p.message
                )?,
                Location::File {
                    line: Some((line, col)),
                    ..
                } => writeln!(f, "{}:{line}:{col}: {}", self.source.display(), p.message)?,
                Location::File { line: None, key } if !key.is_empty() => {
                    writeln!(f, "{}: {key}: {}", self.source.display(), p.message)?
                }
                Location::File { line: None, .. } => {
                    writeln!(f, "{}: {}", self.source.display(), p.message)?
                }
                Location::Env(var) => writeln!(f, "environment {var}: {}", p.message)?,
            }
        }
        let n = self.problems.len();
        write!(
            f,
            "{n} problem{} in {}",
            if n == 1 { "" } else { "s" },
            self.source.display()
        )
    }
}

impl std::error::Error for Problems {}

/// Reads, overrides from the process environment, and validates.
pub fn load(path: &Path) -> Result<Settings, Problems> {
    load_with_env(path, |name| std::env::var(name).ok())
}

/// [`load`] with the environment supplied, for tests.
pub fn load_with_env(
    path: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| Problems {
        source: path.to_path_buf(),
        problems: vec![Problem {
            location: Location::File {
                line: None,
                key: String::new(),
            },
            message: format!("cannot read config file: {e}"),
        }],
    })?;
    parse(path, &text, env)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(
    path: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, Problems> {
    let doc = Document { text };
    let fail = |problems: Vec<Problem>| Problems {
        source: path.to_path_buf(),
        problems,
    };
    let root = DeTable::parse(text).map_err(|e| fail(vec![doc.toml_error(&e)]))?;
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|e| fail(vec![doc.toml_error(&e)]))?;

    let mut unknown: Vec<Vec<Seg>> = Vec::new();
    let config: Result<Config, _> = serde_ignored::deserialize(deserializer, |p| {
        unknown.push(segments(&p));
    });
    let mut problems: Vec<Problem> = unknown
        .iter()
        .map(|segs| Problem {
            location: doc.locate(root.get_ref(), segs, Want::Key),
            message: "unknown key".to_string(),
        })
        .collect();
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            problems.push(doc.toml_error(&e));
            return Err(fail(problems));
        }
    };
    let env_set = |name: &str| env(name).filter(|v| !v.is_empty());
    apply_env(&mut config, &env_set, &mut problems);

    let mut v = Validator {
        doc: &doc,
        root: root.get_ref(),
        problems,
    };
    let settings = v.settings(path, &config, &env_set);
    match settings {
        Some(s) if v.problems.is_empty() => Ok(s),
        _ => Err(fail(v.problems)),
    }
}

/// Applies environment overrides in place; bad values become problems.
fn apply_env(
    config: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    if let Some(v) = env("HERALD_HTTP_LISTEN") {
        config.http.listen = v;
    }
    if let Some(v) = env("HERALD_ADMIN_TOKEN") {
        config.http.admin_token = Some(Secret::new(v));
    }
    if let Some(v) = env("TELEGRAM_BOT_TOKEN") {
        config.telegram.token = Some(Secret::new(v));
    }
    if let Some(v) = env("REDIS_URL") {
        config.redis.url = v;
        return;
    }
    // REDIS_HOST / REDIS_PORT / REDIS_PASSWORD edit the configured URL.
    let (host, port, password) = (env("REDIS_HOST"), env("REDIS_PORT"), env("REDIS_PASSWORD"));
    if host.is_none() && port.is_none() && password.is_none() {
        return;
    }
    let Ok(mut url) = Url::parse(&config.redis.url) else {
        // The file's URL is reported by validation.
        return;
    };
    if let Some(host) = host
        && url.set_host(Some(&host)).is_err()
    {
        problems.push(env_problem(
            "REDIS_HOST",
            format!("{host:?} is not a host name"),
        ));
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {
                let _ = url.set_port(Some(p));
            }
            _ => problems.push(env_problem(
                "REDIS_PORT",
                format!("{port:?} is not a port number 1-65535"),
            )),
        }
    }
    if let Some(password) = password {
        let _ = url.set_password(Some(&password));
    }
    config.redis.url = url.to_string();
}

fn env_problem(var: &'static str, message: String) -> Problem {
    Problem {
        location: Location::Env(var),
        message,
    }
}

/// Where a value came from, for values that environment variables can set.
fn env_or_file(env: &impl Fn(&str) -> Option<String>, var: &'static str) -> Option<&'static str> {
    env(var).map(|_| var)
}

struct Validator<'a> {
    doc: &'a Document<'a>,
    root: &'a DeTable<'a>,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &[Seg], message: impl fmt::Display) {
        let location = self.doc.locate(self.root, path, Want::Value);
        self.problems.push(Problem {
            location,
            message: message.to_string(),
        });
    }

    /// A problem in a value an environment variable may have set.
    fn problem_in(&mut self, var: Option<&'static str>, path: &[Seg], message: impl fmt::Display) {
        match var {
            Some(var) => self.problems.push(env_problem(var, message.to_string())),
            None => self.problem(path, message),
        }
    }

    fn settings(
        &mut self,
        path: &Path,
        config: &Config,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Option<Settings> {
        let default_tz = match parse_zone(&config.scheduler.timezone) {
            Ok(tz) => Some(tz),
            Err(e) => {
                self.problem(&[key("scheduler"), key("timezone")], e);
                None
            }
        };

        let listen_var = env_or_file(env, "HERALD_HTTP_LISTEN");
        let http_listen = match config.http.listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem_in(
                    listen_var,
                    &[key("http"), key("listen")],
                    format!(
                        "{:?} is not an address:port such as 127.0.0.1:8080",
                        config.http.listen
                    ),
                );
                None
            }
        };
        let admin_token = config.http.admin_token.clone();
        if let Some(addr) = http_listen
            && !addr.ip().is_loopback()
            && admin_token.is_none()
        {
            self.problem_in(
                listen_var,
                &[key("http"), key("listen")],
                format!(
                    "{addr} is not a loopback address and no admin token is set \
                     (set http.admin_token or HERALD_ADMIN_TOKEN, or listen on 127.0.0.1)"
                ),
            );
        }
        if let Some(token) = &admin_token {
            let problem = if token.expose().len() < 16 {
                Some("admin token is shorter than 16 characters")
            } else if !token.expose().chars().all(|c| c.is_ascii_graphic()) {
                // It travels in an HTTP header: anything else never matches.
                Some("admin token may only use visible ASCII characters (no spaces)")
            } else {
                None
            };
            if let Some(problem) = problem {
                self.problem_in(
                    env_or_file(env, "HERALD_ADMIN_TOKEN"),
                    &[key("http"), key("admin_token")],
                    problem,
                );
            }
        }

        let redis_var = ["REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"]
            .into_iter()
            .find(|v| env(v).is_some());
        let redis_url = match Url::parse(&config.redis.url) {
            Ok(url) if matches!(url.scheme(), "redis" | "rediss" | "redis+unix" | "unix") => {
                Some(url)
            }
            Ok(url) => {
                self.problem_in(
                    redis_var,
                    &[key("redis"), key("url")],
                    format!(
                        "scheme {:?} is not redis://, rediss:// or redis+unix://",
                        url.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                self.problem_in(
                    redis_var,
                    &[key("redis"), key("url")],
                    format!("not a URL: {e}"),
                );
                None
            }
        };
        let prefix = &config.redis.prefix;
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
        {
            self.problem(
                &[key("redis"), key("prefix")],
                format!("prefix {prefix:?} must be non-empty and use only a-z, A-Z, 0-9, '_', '-', '.', ':'"),
            );
        }

        let telegram_api_url = match Url::parse(&config.telegram.api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            Ok(_) => {
                self.problem(
                    &[key("telegram"), key("api_url")],
                    format!("{:?} is not an http(s) URL", config.telegram.api_url),
                );
                None
            }
            Err(e) => {
                self.problem(
                    &[key("telegram"), key("api_url")],
                    format!("not a URL: {e}"),
                );
                None
            }
        };

        let coded = self.coded(&config.coded);
        let webhooks = self.webhooks(&config.webhooks);
        let jobs = self.jobs(&config.jobs, default_tz, config, &webhooks);
        let digests = self.digests(&config.digests, default_tz, config, &webhooks);
        let mut tree = self.tree(config);
        tree.digests = digests;
        tree.webhooks = webhooks;
        tree.save_chat = config.telegram.save_chat;
        if let Some(tz) = default_tz {
            tree.default_timezone = tz;
        }

        Some(Settings {
            source: path.to_path_buf(),
            default_tz: default_tz?,
            http_listen: http_listen?,
            admin_token,
            redis_url: redis_url?,
            redis_prefix: prefix.clone(),
            telegram_token: config.telegram.token.clone(),
            telegram_subscriptions: config.telegram.subscriptions,
            coded,
            telegram_api_url: telegram_api_url?,
            tree,
            jobs,
        })
    }

    fn tree(&mut self, config: &Config) -> TreeConfig {
        if config.workers.count == 0 || config.workers.count > 10_000 {
            self.problem(
                &[key("workers"), key("count")],
                format!("{} workers: expected 1 to 10000", config.workers.count),
            );
        }
        if config.workers.max_queued == 0 {
            self.problem(
                &[key("workers"), key("max_queued")],
                "max_queued must be at least 1",
            );
        }
        if config.scheduler.shutdown_grace.is_zero() {
            self.problem(
                &[key("scheduler"), key("shutdown_grace")],
                "shutdown_grace must be longer than 0s",
            );
        }
        if config.supervisor.restart_window.is_zero() {
            self.problem(
                &[key("supervisor"), key("restart_window")],
                "restart_window must be longer than 0s",
            );
        }
        for (field, value, min) in [
            (
                "connect_timeout",
                config.redis.connect_timeout,
                Duration::from_millis(10),
            ),
            (
                "response_timeout",
                config.redis.response_timeout,
                Duration::from_millis(10),
            ),
            // Held entries are refreshed every third of it; below a second
            // a busy daemon could lose runs it is still working on.
            (
                "visibility_timeout",
                config.redis.visibility_timeout,
                Duration::from_secs(1),
            ),
            // Renewed every 200 ms; much shorter and one slow heartbeat
            // hands a live daemon's jobs to its peers.
            ("lease_ttl", config.redis.lease_ttl, Duration::from_secs(2)),
        ] {
            if value < min {
                self.problem(
                    &[key("redis"), key(field)],
                    format!("{field} {value:?} is too short: at least {min:?}"),
                );
            }
        }
        if config.store.max_records == 0 || config.store.history_per_job == 0 {
            let field = if config.store.max_records == 0 {
                "max_records"
            } else {
                "history_per_job"
            };
            self.problem(
                &[key("store"), key(field)],
                format!("{field} must be at least 1"),
            );
        }
        TreeConfig {
            workers: config.workers.count,
            max_queued: config.workers.max_queued,
            misfire_grace: config.scheduler.misfire_grace,
            shutdown_grace: config.scheduler.shutdown_grace,
            restart_limit: RestartLimit {
                max_restarts: config.supervisor.max_restarts,
                window: config.supervisor.restart_window,
            },
            store_limits: StoreLimits {
                max_records: config.store.max_records,
                history_per_job: config.store.history_per_job,
                record_ttl: config.store.record_ttl,
                ..StoreLimits::default()
            },
            redis: Some(RedisSettings {
                connect_timeout: config.redis.connect_timeout,
                response_timeout: config.redis.response_timeout,
                ..RedisSettings::new(config.redis.url.as_str(), config.redis.prefix.as_str())
            }),
            visibility_timeout: config.redis.visibility_timeout,
            lease: herald_actors::health::LeaseTiming {
                ttl: config.redis.lease_ttl,
                clock_skew: config.redis.clock_skew,
            },
            ..TreeConfig::default()
        }
    }

    /// `[coded.<id>]` tables: each must name a registered coded job.
    fn coded(
        &mut self,
        tables: &std::collections::BTreeMap<String, toml::Table>,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        let registry = herald_actors::jobs::registry().unwrap_or_default();
        let registered: Vec<String> = registry
            .definitions()
            .iter()
            .map(|j| j.id.to_string())
            .collect();
        let mut out = std::collections::BTreeMap::new();
        for (id, table) in tables {
            if !registered.contains(id) {
                self.problem(
                    &[key("coded"), key(id)],
                    format!(
                        "no coded job is registered as {id:?} (registered: {})",
                        if registered.is_empty() {
                            "none".to_string()
                        } else {
                            registered.join(", ")
                        }
                    ),
                );
                continue;
            }
            match serde_json::to_value(table) {
                Ok(v) => {
                    if let Err(e) = registry.check_config(id, &v) {
                        self.problem(&[key("coded"), key(id)], e);
                    }
                    out.insert(id.clone(), v);
                }
                Err(e) => self.problem(&[key("coded"), key(id)], e.to_string()),
            }
        }
        out
    }

    fn webhooks(&mut self, sections: &[WebhookSection]) -> Vec<WebhookEndpoint> {
        let mut endpoints: Vec<WebhookEndpoint> = Vec::new();
        for (i, w) in sections.iter().enumerate() {
            let at = |field: &str| [key("webhooks"), Seg::Index(i), key(field)];
            if w.name.is_empty()
                || !w
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                self.problem(&at("name"), format!("webhook name {:?} must be non-empty and use only a-z, A-Z, 0-9, '_', '-', '.'", w.name));
            } else if endpoints.iter().any(|e| e.name == w.name) {
                self.problem(&at("name"), format!("duplicate webhook name {:?}", w.name));
            }
            match Url::parse(&w.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
                _ => self.problem(&at("url"), format!("{:?} is not an http(s) URL", w.url)),
            }
            if w.timeout.is_zero() || w.timeout > Duration::from_secs(300) {
                self.problem(&at("timeout"), "timeout must be between 1ms and 5m");
            }
            if w.max_attempts == 0 {
                self.problem(&at("max_attempts"), "max_attempts must be at least 1");
            }
            endpoints.push(WebhookEndpoint {
                name: w.name.clone(),
                url: w.url.clone(),
                secret: w
                    .secret
                    .as_ref()
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
                timeout: w.timeout,
                max_attempts: w.max_attempts,
            });
        }
        endpoints
    }

    fn jobs(
        &mut self,
        jobs: &[JobSection],
        default_tz: Option<Tz>,
        config: &Config,
        webhooks: &[WebhookEndpoint],
    ) -> Vec<JobSpec> {
        let mut specs = Vec::new();
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let at = |field: &str| [key("jobs"), Seg::Index(i), key(field)];
            if let Err(e) = check_job_id(&job.id) {
                self.problem(&at("id"), e);
            } else if let Some((_, first)) = seen.iter().find(|(id, _)| *id == job.id) {
                let first = *first;
                let first_at = match self.doc.locate(
                    self.root,
                    &[key("jobs"), Seg::Index(first), key("id")],
                    Want::Value,
                ) {
                    Location::File {
                        line: Some((line, _)),
                        ..
                    } => format!("jobs[{first}], line {line}"),
                    _ => format!("jobs[{first}]"),
                };
                self.problem(
                    &at("id"),
                    format!(
                        "duplicate job id {:?} (first defined at {first_at})",
                        job.id
                    ),
                );
            } else {
                seen.push((&job.id, i));
            }

            let expr = CronExpr::parse(&job.schedule)
                .map_err(|e| self.problem(&at("schedule"), e))
                .ok();
            let tz = match &job.timezone {
                Some(name) => parse_zone(name)
                    .map_err(|e| self.problem(&at("timezone"), e))
                    .ok(),
                None => default_tz,
            };
            if let Err(e) = template::check(&job.template) {
                self.problem(&at("template"), e);
            }
            if job.timeout.is_zero() {
                self.problem(&at("timeout"), "timeout must be longer than 0s");
            }
            if job.max_attempts == 0 {
                self.problem(&at("max_attempts"), "max_attempts must be at least 1");
            }
            if job.retry_backoff_max > Duration::from_secs(7 * 86_400) {
                self.problem(
                    &at("retry_backoff_max"),
                    "retry_backoff_max is longer than 7 days",
                );
            }
            if job.timeout > Duration::from_secs(86_400) {
                self.problem(&at("timeout"), "timeout is longer than 1 day");
            }
            if job.retry_backoff > job.retry_backoff_max {
                self.problem(
                    &at("retry_backoff"),
                    format!(
                        "retry_backoff {:?} is longer than retry_backoff_max {:?}",
                        job.retry_backoff, job.retry_backoff_max
                    ),
                );
            }
            if job.misfire_limit == 0 {
                self.problem(&at("misfire_limit"), "misfire_limit must be at least 1");
            }
            if job.id.starts_with(herald_actors::digest::JOB_PREFIX) {
                self.problem(
                    &at("id"),
                    format!(
                        "job ids starting with {:?} belong to [[digests]]",
                        herald_actors::digest::JOB_PREFIX
                    ),
                );
            }
            self.destinations(
                &[key("jobs"), Seg::Index(i)],
                &job.packs,
                job.save,
                &job.webhooks,
                config,
                webhooks,
            );
            if let (Some(expr), Some(tz)) = (expr, tz) {
                specs.push(JobSpec {
                    id: job.id.as_str().into(),
                    schedule: Schedule::new(expr, tz),
                    enabled: job.enabled,
                    misfire: job.misfire,
                    misfire_limit: job.misfire_limit,
                    overlap: job.overlap,
                    timeout: job.timeout,
                    retry: RetryPolicy {
                        max_attempts: job.max_attempts,
                        backoff: job.retry_backoff,
                        backoff_max: job.retry_backoff_max,
                    },
                    kind: JobKind::Message {
                        template: job.template.clone(),
                    },
                    delivery: DeliverySpec {
                        dm: job.dm,
                        targets: Targets {
                            include: job.include.clone(),
                            exclude: job.exclude.clone(),
                            packs: job.packs.clone(),
                        },
                        save: job.save,
                        webhooks: job.webhooks.clone(),
                        silent: job.silent,
                    }
                    .shared(),
                });
            }
        }
        specs
    }
}

impl Validator<'_> {
    /// Packs, `save` and webhook names of a job or digest at `base`.
    fn destinations(
        &mut self,
        base: &[Seg],
        packs: &[String],
        save: bool,
        names: &[String],
        config: &Config,
        webhooks: &[WebhookEndpoint],
    ) {
        let at = |field: &str| [base, &[key(field)]].concat();
        for pack in packs {
            if let Err(e) = check_pack_name(pack) {
                self.problem(&at("packs"), e);
            }
        }
        if save && config.telegram.save_chat.is_none() {
            self.problem(&at("save"), "save = true needs telegram.save_chat");
        }
        for name in names {
            if !webhooks.iter().any(|w| &w.name == name) {
                self.problem(
                    &at("webhooks"),
                    format!("no [[webhooks]] endpoint is named {name:?}"),
                );
            }
        }
    }

    fn digests(
        &mut self,
        sections: &[DigestSection],
        default_tz: Option<Tz>,
        config: &Config,
        webhooks: &[WebhookEndpoint],
    ) -> Vec<DigestProfile> {
        let mut profiles: Vec<DigestProfile> = Vec::new();
        for (i, d) in sections.iter().enumerate() {
            let at = |field: &str| [key("digests"), Seg::Index(i), key(field)];
            let mut ok = true;
            if let Err(e) = digest::check_name("profile", &d.id) {
                self.problem(&at("id"), e);
                ok = false;
            } else if profiles.iter().any(|p| p.id == d.id) {
                self.problem(&at("id"), format!("duplicate digest profile {:?}", d.id));
            }
            let profile_tz = match &d.timezone {
                Some(name) => parse_zone(name)
                    .map_err(|e| self.problem(&at("timezone"), e))
                    .ok(),
                None => default_tz,
            };
            if d.schedules.is_empty() {
                self.problem(
                    &at("schedules"),
                    "a digest profile needs at least one schedule",
                );
            }
            let mut schedules: Vec<DigestSchedule> = Vec::new();
            for (j, sch) in d.schedules.iter().enumerate() {
                let sat = |field: &str| {
                    [
                        key("digests"),
                        Seg::Index(i),
                        key("schedules"),
                        Seg::Index(j),
                        key(field),
                    ]
                };
                if let Err(e) = digest::check_name("schedule", &sch.name) {
                    self.problem(&sat("name"), e);
                    ok = false;
                    continue;
                }
                if d.schedules[..j].iter().any(|s| s.name == sch.name) {
                    self.problem(&sat("name"), format!("duplicate schedule {:?}", sch.name));
                    continue;
                }
                let cron = match (&sch.cron, digest::preset(&sch.name)) {
                    (Some(cron), _) => cron.as_str(),
                    (None, Some(preset)) => preset,
                    (None, None) => {
                        self.problem(
                            &sat("name"),
                            format!(
                                "schedule {:?} needs a cron (only hourly, daily and weekly have one by default)",
                                sch.name
                            ),
                        );
                        continue;
                    }
                };
                let expr = CronExpr::parse(cron)
                    .map_err(|e| self.problem(&sat("cron"), e))
                    .ok();
                let tz = match &sch.timezone {
                    Some(name) => parse_zone(name)
                        .map_err(|e| self.problem(&sat("timezone"), e))
                        .ok(),
                    None => profile_tz,
                };
                if let (Some(expr), Some(tz)) = (expr, tz) {
                    schedules.push(DigestSchedule {
                        name: sch.name.clone(),
                        schedule: Schedule::new(expr, tz),
                    });
                }
            }
            let templates = DigestTemplates {
                header: d.header.clone(),
                entry: d.entry.clone(),
                footer: d.footer.clone(),
            };
            for (field, source) in [
                ("header", &d.header),
                ("entry", &d.entry),
                ("footer", &d.footer),
            ] {
                if let Err(e) = template::check(source) {
                    self.problem(&at(field), e);
                }
            }
            if d.retention < Duration::from_secs(3600) {
                self.problem(
                    &at("retention"),
                    "retention is shorter than 1h: items could be trimmed before a digest collects them",
                );
            }
            if d.max_items == 0 || d.max_items > herald_actors::digest::MAX_ITEMS_LIMIT {
                self.problem(
                    &at("max_items"),
                    format!(
                        "max_items must be between 1 and {}",
                        herald_actors::digest::MAX_ITEMS_LIMIT
                    ),
                );
            }
            if d.max_attempts == 0 {
                self.problem(&at("max_attempts"), "max_attempts must be at least 1");
            }
            self.destinations(
                &[key("digests"), Seg::Index(i)],
                &d.packs,
                d.save,
                &d.webhooks,
                config,
                webhooks,
            );
            if ok {
                profiles.push(DigestProfile {
                    id: d.id.clone(),
                    schedules,
                    templates,
                    delivery: DeliverySpec {
                        dm: d.dm,
                        targets: Targets {
                            include: d.include.clone(),
                            exclude: d.exclude.clone(),
                            packs: d.packs.clone(),
                        },
                        save: d.save,
                        webhooks: d.webhooks.clone(),
                        silent: d.silent,
                    },
                    send_empty: d.send_empty,
                    retention: d.retention,
                    max_items: d.max_items,
                    max_attempts: d.max_attempts,
                    misfire: d.misfire,
                });
            }
        }
        profiles
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(name: &str) -> Seg {
    Seg::Key(name.to_string())
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path as P;
    match path {
        P::Root => Vec::new(),
        P::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(Seg::Index(*index));
            v
        }
        P::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(Seg::Key(key.clone()));
            v
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments(parent)
        }
    }
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

#[derive(Clone, Copy)]
enum Want {
    Key,
    Value,
}

/// The config text, for turning spans into line:column.
struct Document<'a> {
    text: &'a str,
}

impl Document<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// The span of the key or value at `path`, as a location.
    fn locate(&self, root: &DeTable<'_>, path: &[Seg], want: Want) -> Location {
        let span = span_of(root, path, want);
        Location::File {
            line: span.map(|s| self.line_col(s.start)),
            key: path_string(path),
        }
    }

    fn toml_error(&self, e: &toml::de::Error) -> Problem {
        Problem {
            location: Location::File {
                line: e.span().map(|s| self.line_col(s.start)),
                key: String::new(),
            },
            message: e.message().trim().to_string(),
        }
    }
}

fn span_of(root: &DeTable<'_>, path: &[Seg], want: Want) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let Seg::Key(name) = first else {
        return None;
    };
    let (k, v) = root
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == name.as_str())?;
    let mut key_span = k.span();
    let mut value = v;
    for seg in rest {
        let next = match seg {
            Seg::Index(i) => value.get_ref().get(*i)?,
            Seg::Key(name) => {
                let DeValue::Table(table) = value.get_ref() else {
                    return None;
                };
                let (k, v) = table
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == name.as_str())?;
                key_span = k.span();
                v
            }
        };
        value = next;
    }
    Some(match want {
        Want::Key => key_span,
        Want::Value => value.span(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Settings, String> {
        parse(Path::new("herald.toml"), text, |_| None).map_err(|p| p.to_string())
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let s = check("").unwrap();
        assert_eq!(s.default_tz, chrono_tz::UTC);
        assert_eq!(s.http_listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.redis_prefix, "herald");
        assert!(s.telegram_token.is_none());
        assert!(s.jobs.is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_column() {
        let text = r#"
[scheduler]
timezone = "Mars/Olympus"

[redis]
url = "http://localhost"
colour = "blue"

[[jobs]]
id = "a"
schedule = "61 * * * *"
template = "hi"

[[jobs]]
id = "a"
schedule = "* * * * *"
timezone = "Nowhere/City"
template = "{% if x %}"
"#;
        let err = check(text).unwrap_err();
        let expected = [
            "herald.toml:7:1: redis.colour: unknown key",
            "herald.toml:3:12: scheduler.timezone: time zone: \"Mars/Olympus\" is not a known IANA time zone",
            "herald.toml:6:7: redis.url: scheme \"http\" is not redis://, rediss:// or redis+unix://",
            "herald.toml:11:12: jobs[0].schedule: minute field: 61 is out of range 0-59",
            "herald.toml:15:6: jobs[1].id: duplicate job id \"a\" (first defined at jobs[0], line 10)",
            "herald.toml:17:12: jobs[1].timezone: time zone: \"Nowhere/City\"",
            "herald.toml:18:12: jobs[1].template: template does not parse:",
            "7 problems in herald.toml",
        ];
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), expected.len(), "{err}");
        for (line, want) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(want),
                "expected {want:?}\n     got {line:?}"
            );
        }
    }

    #[test]
    fn syntax_and_type_errors_have_a_position() {
        let err = check("[http]\nlisten = \n").unwrap_err();
        assert!(err.starts_with("herald.toml:2:"), "{err}");
        let err =
            check("[[jobs]]\nid = 5\nschedule = \"* * * * *\"\ntemplate = \"x\"\n").unwrap_err();
        assert!(err.starts_with("herald.toml:2:6: "), "{err}");
        let err = check("[[jobs]]\nid = \"x\"\nschedule = \"* * * * *\"\n").unwrap_err();
        assert!(err.contains("missing field `template`"), "{err}");
    }

    #[test]
    fn environment_overrides_and_is_named_in_errors() {
        let env = |name: &str| match name {
            "REDIS_HOST" => Some("redis.internal".to_string()),
            "REDIS_PORT" => Some("6380".to_string()),
            "REDIS_PASSWORD" => Some("s3cret".to_string()),
            "TELEGRAM_BOT_TOKEN" => Some("123:abc".to_string()),
            "HERALD_ADMIN_TOKEN" => Some("0123456789abcdef".to_string()),
            "HERALD_HTTP_LISTEN" => Some("0.0.0.0:9000".to_string()),
            _ => None,
        };
        let s = parse(Path::new("h.toml"), "", env).unwrap();
        assert_eq!(s.redis_url.as_str(), "redis://:s3cret@redis.internal:6380");
        assert_eq!(
            s.telegram_token.as_ref().map(Secret::expose),
            Some("123:abc")
        );
        assert_eq!(s.http_listen.to_string(), "0.0.0.0:9000");
        assert!(!s.summary().contains("s3cret"), "{}", s.summary());
        let debug = format!("{s:?}");
        for secret in ["s3cret", "0123456789abcdef", "123:abc"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }

        for (token, problem) in [
            ("xq7zv", "shorter than 16 characters"),
            ("ééééééééééééééééé", "visible ASCII"),
            ("0123456789 abcdef", "visible ASCII"),
        ] {
            let env = |name: &str| (name == "HERALD_ADMIN_TOKEN").then(|| token.to_string());
            let err = parse(Path::new("h.toml"), "", env)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("HERALD_ADMIN_TOKEN") && err.contains(problem),
                "{err}"
            );
            assert!(
                !err.contains(token),
                "the token itself is never shown: {err}"
            );
        }

        let url_wins = |name: &str| match name {
            "REDIS_URL" => Some("redis://other:7000/2".to_string()),
            "REDIS_HOST" => Some("ignored".to_string()),
            _ => None,
        };
        let s = parse(Path::new("h.toml"), "", url_wins).unwrap();
        assert_eq!(s.redis_url.as_str(), "redis://other:7000/2");

        let bad = |name: &str| match name {
            "REDIS_PORT" => Some("seventy".to_string()),
            "HERALD_HTTP_LISTEN" => Some("0.0.0.0:9000".to_string()),
            _ => None,
        };
        let err = parse(Path::new("h.toml"), "", bad).unwrap_err().to_string();
        assert!(
            err.contains("environment REDIS_PORT: \"seventy\" is not a port number"),
            "{err}"
        );
        assert!(err.contains("environment HERALD_HTTP_LISTEN: 0.0.0.0:9000 is not a loopback address and no admin token is set"), "{err}");
    }

    #[test]
    fn settings_of_an_unregistered_coded_job_are_refused() {
        let err = check("[coded.nope]\nurl = \"http://x\"\n").unwrap_err();
        assert!(
            err.contains("coded.nope: no coded job is registered as \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn destinations_are_read_and_checked() {
        let ok = check(
            "[telegram]\nsave_chat = -100\n\n[[webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"k\"\n\n[[jobs]]\nid = \"a\"\nschedule = \"@daily\"\ntemplate = \"hi\"\ninclude = [1, 2]\nexclude = [3]\npacks = [\"ops\"]\nsave = true\nwebhooks = [\"ops\"]\nsilent = true\n",
        )
        .unwrap();
        let d = &ok.jobs[0].delivery;
        assert_eq!(
            (
                d.targets.include.clone(),
                d.targets.exclude.clone(),
                d.targets.packs.clone()
            ),
            (vec![1, 2], vec![3], vec!["ops".to_string()])
        );
        assert_eq!(
            (d.dm, d.save, d.webhooks.clone(), d.silent),
            (true, true, vec!["ops".to_string()], true)
        );
        assert_eq!(ok.tree.save_chat, Some(-100));
        assert_eq!(ok.tree.webhooks[0].secret, "k");
        let err = check(
            "[[webhooks]]\nname = \"ops\"\nurl = \"ftp://x\"\n\n[[jobs]]\nid = \"a\"\nschedule = \"@daily\"\ntemplate = \"hi\"\nsave = true\nwebhooks = [\"nope\"]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("webhooks[0].url: \"ftp://x\" is not an http(s) URL"),
            "{err}"
        );
        assert!(
            err.contains("jobs[0].save: save = true needs telegram.save_chat"),
            "{err}"
        );
        assert!(
            err.contains("jobs[0].webhooks: no [[webhooks]] endpoint is named \"nope\""),
            "{err}"
        );
    }

    #[test]
    fn digests_are_read_and_checked() {
        let ok = check(
            r#"
[scheduler]
timezone = "Europe/Berlin"

[[digests]]
id = "alerts"
schedules = [
  { name = "hourly" },
  { name = "morning", cron = "30 7 * * 1-5", timezone = "Asia/Tehran" },
]
entry = "- {{ item.text }}"
packs = ["ops"]
send_empty = true
retention = "2d"
"#,
        )
        .unwrap();
        let profile = &ok.tree.digests[0];
        assert_eq!(profile.id, "alerts");
        let names: Vec<(&str, String, chrono_tz::Tz)> = profile
            .schedules
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.schedule.expr().to_string(),
                    s.schedule.tz(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("hourly", "0 * * * *".to_string(), chrono_tz::Europe::Berlin),
                (
                    "morning",
                    "30 7 * * 1-5".to_string(),
                    chrono_tz::Asia::Tehran
                ),
            ]
        );
        assert_eq!(profile.templates.entry, "- {{ item.text }}");
        assert_eq!(
            profile.templates.header,
            herald_actors::digest::DEFAULT_HEADER
        );
        assert!(profile.send_empty);
        assert_eq!(profile.retention, Duration::from_secs(2 * 86_400));
        assert_eq!(profile.delivery.targets.packs, vec!["ops".to_string()]);
        assert_eq!(profile.misfire, MisfirePolicy::FireOnce);

        let err = check(
            r#"
[[jobs]]
id = "digest.x.y"
schedule = "@daily"
template = "hi"

[[digests]]
id = "bad.name"
schedules = [{ name = "hourly" }]

[[digests]]
id = "b"
schedules = [{ name = "evening" }, { name = "daily", cron = "61 * * * *" }, { name = "daily" }]
header = "{% if %}"
webhooks = ["nope"]
retention = "10m"
color = "red"
"#,
        )
        .unwrap_err();
        for expected in [
            "jobs[0].id: job ids starting with \"digest.\" belong to [[digests]]",
            "digests[0].id: profile name \"bad.name\" must be",
            "digests[1].schedules[0].name: schedule \"evening\" needs a cron",
            "digests[1].schedules[1].cron:",
            "digests[1].schedules[2].name: duplicate schedule \"daily\"",
            "digests[1].header: template does not parse",
            "digests[1].webhooks: no [[webhooks]] endpoint is named \"nope\"",
            "digests[1].retention: retention is shorter than 1h",
            "digests[1].color: unknown key",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn tree_settings_are_read_and_checked() {
        let s = check("[workers]\ncount = 4\nmax_queued = 50\n[scheduler]\nshutdown_grace = \"2s\"\n[supervisor]\nmax_restarts = 1\nrestart_window = \"10s\"\n").unwrap();
        assert_eq!(s.tree.workers, 4);
        assert_eq!(s.tree.max_queued, 50);
        let err = check("[workers]\nmax_queued = 0\n").unwrap_err();
        assert!(
            err.contains("herald.toml:2:14: workers.max_queued: max_queued must be at least 1"),
            "{err}"
        );
        assert_eq!(s.tree.shutdown_grace, Duration::from_secs(2));
        assert_eq!(s.tree.restart_limit.max_restarts, 1);
        let err = check("[workers]\ncount = 0\n[store]\nmax_records = 0\n").unwrap_err();
        assert!(
            err.contains("herald.toml:2:9: workers.count: 0 workers: expected 1 to 10000"),
            "{err}"
        );
        assert!(
            err.contains("store.max_records: max_records must be at least 1"),
            "{err}"
        );
        let err = check("[[jobs]]\nid = \"a\"\nschedule = \"@daily\"\ntemplate = \"x\"\nretry_backoff = \"10m\"\nretry_backoff_max = \"1m\"\n").unwrap_err();
        assert!(
            err.contains(
                "jobs[0].retry_backoff: retry_backoff 600s is longer than retry_backoff_max 60s"
            ),
            "{err}"
        );
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let env = |name: &str| (name == "TELEGRAM_BOT_TOKEN").then(String::new);
        let s = parse(Path::new("h.toml"), "", env).unwrap();
        assert!(s.telegram_token.is_none());
    }
}
