//! What a run executes: the [`JobHandler`] trait, the context a run gets,
//! and the registry that maps a job's kind to its handler.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::delivery::{ChatRole, Message, Outbox};
use crate::handles::StoreHandle;
use crate::job::{JobKind, JobSpec};
use crate::record::{Counts, RunId};
use crate::template;
use crate::users::UserDirectory;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why an attempt failed, in words an operator reads in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(pub String);

impl JobError {
    pub fn new(message: impl Into<String>) -> Self {
        JobError(message.into())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JobError {}

/// Everything a run may use.
#[derive(Clone)]
pub struct RunContext {
    pub run_id: RunId,
    pub job: Arc<JobSpec>,
    pub scheduled_at: DateTime<Utc>,
    /// 1 for the first try.
    pub attempt: u32,
    /// Messages the run sends: handed to the Notifier when the handler
    /// returns Ok (a failed attempt sends nothing), so the worker never
    /// waits on Telegram's rate limits.
    pub outbox: Outbox,
    /// The owner chat for `save` deliveries, if configured.
    pub save_chat: Option<i64>,
    /// Users and packs, for targeting.
    pub users: UserDirectory,
    /// Execution records, jobs and last ticks.
    pub store: StoreHandle,
    /// The job's own settings (`[coded.<job id>]` in the config file), or
    /// null.
    pub config: Arc<serde_json::Value>,
    /// What the run reports beyond counts (kept on its record).
    pub notes: RunNotes,
}

/// What a run reports on its record beyond counts; written by the handler,
/// read by the worker when the attempt ends.
#[derive(Clone, Default)]
pub struct RunNotes(Arc<std::sync::Mutex<Notes>>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notes {
    /// A digest run's window and item count.
    pub digest: Option<Box<crate::digest::DigestSummary>>,
}

impl RunNotes {
    pub fn set_digest(&self, summary: crate::digest::DigestSummary) {
        if let Ok(mut notes) = self.0.lock() {
            notes.digest = Some(Box::new(summary));
        }
    }

    pub fn take(&self) -> Notes {
        self.0
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }
}

impl RunContext {
    /// Queues a Telegram message to a user's private chat (or a group).
    pub fn send_dm(&self, chat_id: i64, html: String) {
        self.outbox.push(Message::Telegram {
            chat_id,
            role: ChatRole::Dm,
            html,
            silent: self.job.delivery.silent,
        });
    }

    /// Sends `html` to every destination of the job: its targets (DM), the
    /// owner chat (`save`), and its webhooks, which get `webhook_body`.
    pub async fn deliver(
        &self,
        html: String,
        webhook_body: serde_json::Value,
    ) -> Result<(), JobError> {
        let delivery = &self.job.delivery;
        if delivery.save && self.save_chat.is_none() {
            return Err(JobError::new(
                "the job saves to the owner chat, but telegram.save_chat is not set",
            ));
        }
        if delivery.dm {
            for chat_id in self.users.resolve(&delivery.targets).await {
                self.send_dm(chat_id, html.clone());
            }
        }
        if let (true, Some(chat_id)) = (delivery.save, self.save_chat) {
            self.outbox.push(Message::Telegram {
                chat_id,
                role: ChatRole::Save,
                html,
                silent: delivery.silent,
            });
        }
        for endpoint in &delivery.webhooks {
            self.outbox.push(Message::Webhook {
                endpoint: endpoint.clone(),
                body: webhook_body.clone(),
            });
        }
        Ok(())
    }
}

/// A job's code. Runs in its own task: a panic, an error or a timeout ends
/// the attempt as FAILED without touching the worker that ran it.
pub trait JobHandler: Send + Sync + 'static {
    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>>;
}

impl<F, Fut> JobHandler for F
where
    F: Fn(RunContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Counts, JobError>> + Send + 'static,
{
    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        Box::pin(self(ctx))
    }
}

/// A job written in Rust: its default definition and what a run does.
/// One file per job, one [`Registry::add`] line to register it (see the
/// README's recipe).
pub trait Job: Send + Sync + 'static {
    /// Id, default schedule, zone and policies. Synced into Redis at
    /// start-up: a new job gets this; an existing one keeps the operator's
    /// edits of schedule, zone, enabled flag and policies.
    fn definition(&self) -> Result<JobSpec, String>;

    /// One run: targeting (`ctx.users`), messages (`ctx.send_dm`,
    /// `ctx.outbox`), the store (`ctx.store`) and the job's settings
    /// (`ctx.config`). Returns its counts, or an error that fails the
    /// attempt (retried per the job's policy).
    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>>;

    /// Checks the job's settings (`[coded.<job id>]`, null if absent) when
    /// the config is loaded, so `herald check` reports a bad setting before
    /// a run meets it. The default accepts anything.
    fn check_config(&self, _config: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

type ConfigCheck = Arc<dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync>;

struct JobAsHandler<J>(Arc<J>);

impl<J: Job> JobHandler for JobAsHandler<J> {
    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        self.0.run(ctx)
    }
}

/// Coded handlers by name; message jobs need no registration.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    /// Default definitions of jobs added with [`Registry::add`].
    definitions: Vec<JobSpec>,
    configs: HashMap<String, Arc<serde_json::Value>>,
    config_checks: HashMap<String, ConfigCheck>,
    /// The settings of a job that has none, shared (asked for every run).
    no_config: Arc<serde_json::Value>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Registers `handler` under `name` (what `JobKind::Coded` names).
    pub fn register(&mut self, name: impl Into<String>, handler: impl JobHandler) -> &mut Self {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Registers a coded job: its handler under its id, and its default
    /// definition. A definition that does not hold is an error naming the
    /// job, at start-up.
    pub fn add(&mut self, job: impl Job) -> Result<&mut Self, String> {
        let mut spec = job.definition()?;
        crate::job::check_job_id(&spec.id).map_err(|e| e.to_string())?;
        spec.kind = JobKind::Coded {
            handler: spec.id.to_string(),
        };
        if self.handlers.contains_key(&*spec.id) {
            return Err(format!("job {:?} is registered twice", spec.id));
        }
        let job = Arc::new(job);
        let checked = job.clone();
        self.config_checks.insert(
            spec.id.to_string(),
            Arc::new(move |config: &serde_json::Value| checked.check_config(config)),
        );
        self.handlers
            .insert(spec.id.to_string(), Arc::new(JobAsHandler(job)));
        self.definitions.push(spec);
        Ok(self)
    }

    /// The default definitions of the jobs added with [`Registry::add`].
    pub fn definitions(&self) -> &[JobSpec] {
        &self.definitions
    }

    /// Checks settings meant for a job added with [`Registry::add`] (see
    /// [`Job::check_config`]).
    pub fn check_config(&self, job_id: &str, config: &serde_json::Value) -> Result<(), String> {
        match self.config_checks.get(job_id) {
            Some(check) => check(config),
            None => Err(format!("no coded job is registered as {job_id:?}")),
        }
    }

    /// Gives a job its settings (what `ctx.config` holds).
    pub fn configure(&mut self, job_id: &str, config: serde_json::Value) {
        self.configs.insert(job_id.to_string(), Arc::new(config));
    }

    /// A job's settings (null if none).
    pub fn config(&self, job_id: &str) -> Arc<serde_json::Value> {
        self.configs.get(job_id).unwrap_or(&self.no_config).clone()
    }

    /// The handler for a job's kind.
    pub fn resolve(&self, kind: &JobKind) -> Result<Arc<dyn JobHandler>, JobError> {
        match kind {
            JobKind::Message { template } => Ok(Arc::new(MessageJob {
                template: template.clone(),
            })),
            JobKind::Coded { handler } => self
                .handlers
                .get(handler)
                .cloned()
                .ok_or_else(|| JobError::new(format!("no handler registered as {handler:?}"))),
        }
    }
}

/// Renders the job's template and sends it to the job's destinations.
struct MessageJob {
    template: String,
}

impl JobHandler for MessageJob {
    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        let rendered = render_message(&self.template, &ctx);
        Box::pin(async move {
            let html = rendered?;
            let body = serde_json::json!({
                "job_id": ctx.job.id,
                "run_id": ctx.run_id.0,
                "scheduled_at": ctx.scheduled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                "text": html,
            });
            ctx.deliver(html, body).await?;
            Ok(Counts::default())
        })
    }
}

fn render_message(source: &str, ctx: &RunContext) -> Result<String, JobError> {
    let env = template::environment();
    let tmpl = env
        .template_from_str(source)
        .map_err(|e| JobError::new(format!("template: {e}")))?;
    tmpl.render(minijinja::context! {
        job_id => ctx.job.id,
        run_id => ctx.run_id.0,
        scheduled_at => ctx.scheduled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        attempt => ctx.attempt,
    })
    .map_err(|e| JobError::new(format!("template: {e}")))
}
