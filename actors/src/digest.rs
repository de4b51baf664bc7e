//! Digests (the seed's digest system): producers add items to a profile's
//! inbox; on each of the profile's named schedules herald collects the
//! items that arrived in (last run, now], renders them as one message
//! (header, one entry per item, footer) and delivers it.
//!
//! Every (profile, schedule) is a job of its own, `digest.<profile>.<schedule>`,
//! so it gets what every job gets: one claim per tick across daemons,
//! execution records, retries, misfire handling and the API.
//!
//! Each run owns a window, claimed once in Redis: a retried or reclaimed run
//! collects the same items again (the delivery ledger then skips what went
//! out), and the next run starts where it ended, so no item is digested
//! twice by one schedule and none falls between two windows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::handler::{BoxFuture, JobError, JobHandler, RunContext};
use crate::job::{DeliverySpec, JobKind, JobSpec, MisfirePolicy};
use crate::record::Counts;
use crate::redis_backend::{BackendError, RedisStore};
use crate::schedule::Schedule;
use crate::template;

/// Every digest job's id starts with this; other jobs may not use it.
pub const JOB_PREFIX: &str = "digest.";

/// How long an inbox keeps items unless the profile says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Entries rendered into one digest unless the profile says otherwise; the
/// rest are counted (`omitted`).
pub const DEFAULT_MAX_ITEMS: usize = 200;

/// The most entries a profile may render into one digest (each is
/// rendered; beyond a few thousand a digest is no longer read anyway).
pub const MAX_ITEMS_LIMIT: usize = 2_000;

/// Items the in-memory inbox (no Redis configured) keeps per profile.
const MEMORY_INBOX_CAP: usize = 100_000;

/// Windows the in-memory inbox remembers (retries reuse them).
const MEMORY_WINDOW_CAP: usize = 10_000;

pub const DEFAULT_HEADER: &str = "<b>{{ profile }}</b>: {{ count }} new ({{ schedule }})";
pub const DEFAULT_ENTRY: &str = "• {{ item.text }}";
pub const DEFAULT_FOOTER: &str = "{% if omitted %}… and {{ omitted }} more{% endif %}";

/// The cron of a named preset schedule, in the schedule's zone.
pub fn preset(name: &str) -> Option<&'static str> {
    match name {
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 8 * * *"),
        "weekly" => Some("0 8 * * 1"),
        _ => None,
    }
}

/// The job that runs `schedule` of `profile`.
pub fn job_id(profile: &str, schedule: &str) -> String {
    format!("{JOB_PREFIX}{profile}.{schedule}")
}

/// Profile and schedule names: short and plain (they are part of job ids,
/// Redis keys and URLs; '.' separates them in the job id).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 24
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err(format!(
            "{what} name {name:?} must be 1-24 characters of a-z, A-Z, 0-9, '_', '-'"
        ));
    }
    Ok(())
}

/// One digest profile, as configured.
#[derive(Debug, Clone)]
pub struct DigestProfile {
    pub id: String,
    pub schedules: Vec<DigestSchedule>,
    pub templates: DigestTemplates,
    /// Where the digest goes (DM targets, `save`, webhooks).
    pub delivery: DeliverySpec,
    /// Send a digest for an empty window too (rendered with count 0).
    pub send_empty: bool,
    /// Inbox items older than this are trimmed.
    pub retention: Duration,
    /// Entries rendered at most; the rest are counted as `omitted`.
    pub max_items: usize,
    /// Retries, timeout and misfire policy of the profile's jobs.
    pub max_attempts: u32,
    pub misfire: MisfirePolicy,
}

#[derive(Debug, Clone)]
pub struct DigestSchedule {
    pub name: String,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestTemplates {
    pub header: String,
    pub entry: String,
    pub footer: String,
}

impl Default for DigestTemplates {
    fn default() -> Self {
        DigestTemplates {
            header: DEFAULT_HEADER.to_string(),
            entry: DEFAULT_ENTRY.to_string(),
            footer: DEFAULT_FOOTER.to_string(),
        }
    }
}

impl DigestTemplates {
    /// Each template parses; the error names the one that does not.
    pub fn check(&self) -> Result<(), String> {
        for (name, source) in [
            ("header", &self.header),
            ("entry", &self.entry),
            ("footer", &self.footer),
        ] {
            template::check(source).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }
}

impl DigestProfile {
    /// The profile's jobs, one per schedule.
    pub fn jobs(&self) -> Vec<JobSpec> {
        self.schedules
            .iter()
            .map(|s| {
                let id = job_id(&self.id, &s.name);
                let mut spec = JobSpec::new(
                    id.clone(),
                    s.schedule.clone(),
                    JobKind::Coded { handler: id },
                );
                spec.misfire = self.misfire;
                spec.retry.max_attempts = self.max_attempts;
                spec.delivery = self.delivery.clone().shared();
                spec
            })
            .collect()
    }
}

/// A window of inbox time: items with stream ids in (start, end], unix ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// None: from the inbox's beginning (the schedule's first run).
    pub start_ms: Option<i64>,
    pub end_ms: i64,
}

impl Window {
    pub fn is_empty(&self) -> bool {
        self.start_ms.is_some_and(|s| s >= self.end_ms)
    }
}

/// One item of an inbox, as a producer added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    /// The stream id, "ms-seq".
    pub id: String,
    /// When it arrived (the id's time), unix ms.
    pub at_ms: i64,
    /// The producer's fields, in order (`text` is the one templates use by
    /// default).
    pub fields: Vec<(String, String)>,
}

impl InboxItem {
    /// From an `XRANGE` entry: its id and flat field/value list. Bytes that
    /// are not UTF-8 are replaced rather than failing the whole digest.
    pub fn from_stream(id: String, flat: Vec<Vec<u8>>) -> Self {
        let at_ms = id
            .split_once('-')
            .map_or(id.as_str(), |(ms, _)| ms)
            .parse()
            .unwrap_or(0);
        let mut fields = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(name), Some(value)) = (it.next(), it.next()) {
            fields.push((
                String::from_utf8_lossy(&name).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        InboxItem { id, at_ms, fields }
    }
}

/// What a digest run collected, kept on its execution record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestSummary {
    pub profile: String,
    pub schedule: String,
    /// None: from the inbox's beginning.
    pub window_start: Option<DateTime<Utc>>,
    pub window_end: DateTime<Utc>,
    /// Items in the window (rendered or omitted).
    pub message_count: u64,
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// What the templates see.
#[derive(Debug, Clone, Serialize)]
struct DigestView<'a> {
    profile: &'a str,
    schedule: &'a str,
    window_start: Option<String>,
    window_end: String,
    items: Vec<BTreeMap<String, String>>,
    count: u64,
    omitted: u64,
}

/// An item as templates see it: the producer's fields, plus `id`, `at`
/// (RFC 3339 in the schedule's zone) and `time` (HH:MM there).
fn item_view(item: &InboxItem, tz: Tz) -> BTreeMap<String, String> {
    let mut view: BTreeMap<String, String> = item.fields.iter().cloned().collect();
    let at = from_ms(item.at_ms).with_timezone(&tz);
    view.insert("id".into(), item.id.clone());
    view.insert("at".into(), at.to_rfc3339_opts(SecondsFormat::Secs, true));
    view.insert("time".into(), at.format("%H:%M").to_string());
    view
}

/// Renders one digest: header, an entry per item, footer, each on its own
/// line(s); parts that render empty are left out. Every variable is HTML
/// escaped.
pub fn render(
    templates: &DigestTemplates,
    profile: &str,
    schedule: &str,
    tz: Tz,
    window: Window,
    items: &[InboxItem],
    count: u64,
) -> Result<String, String> {
    let env = template::environment();
    let header = env
        .template_from_str(&templates.header)
        .map_err(|e| format!("header template: {e}"))?;
    let entry = env
        .template_from_str(&templates.entry)
        .map_err(|e| format!("entry template: {e}"))?;
    let footer = env
        .template_from_str(&templates.footer)
        .map_err(|e| format!("footer template: {e}"))?;
    let stamp = |ms: i64| {
        from_ms(ms)
            .with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let view = DigestView {
        profile,
        schedule,
        window_start: window.start_ms.map(stamp),
        window_end: stamp(window.end_ms),
        items: items.iter().map(|i| item_view(i, tz)).collect(),
        count,
        omitted: count.saturating_sub(items.len() as u64),
    };
    // Built once: rebuilding it per entry made rendering quadratic.
    let base = minijinja::Value::from_serialize(&view);
    let mut parts = Vec::with_capacity(items.len() + 2);
    let head = header
        .render(&view)
        .map_err(|e| format!("header template: {e}"))?;
    parts.push(head);
    for (index, item) in view.items.iter().enumerate() {
        let line = entry
            .render(minijinja::context! {
                item => item,
                index => index + 1,
                ..base.clone()
            })
            .map_err(|e| format!("entry template (item {}): {e}", item["id"]))?;
        parts.push(line);
    }
    parts.push(
        footer
            .render(&view)
            .map_err(|e| format!("footer template: {e}"))?,
    );
    Ok(parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Where inboxes live: Redis (shared by every daemon), or memory when no
/// Redis is configured at all. With Redis configured but down, a digest
/// run fails (and retries): its items are in Redis, out of reach.
#[derive(Clone)]
pub struct DigestInbox {
    backend: InboxBackend,
}

#[derive(Clone)]
enum InboxBackend {
    Redis(RedisStore),
    Memory(Arc<Mutex<MemoryInbox>>),
}

#[derive(Default)]
struct MemoryInbox {
    items: HashMap<String, VecDeque<InboxItem>>,
    last_ms: i64,
    seq: u64,
    last_run: HashMap<(String, String), i64>,
    windows: HashMap<String, Window>,
    window_order: VecDeque<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error(transparent)]
    Redis(#[from] BackendError),
    #[error("an inbox item needs at least one field")]
    NoFields,
}

impl DigestInbox {
    /// On Redis (windows expire with the execution records), or in memory.
    pub fn new(redis: Option<RedisStore>) -> Self {
        let backend = match redis {
            Some(r) => InboxBackend::Redis(r),
            None => InboxBackend::Memory(Arc::default()),
        };
        DigestInbox { backend }
    }

    /// Adds an item (what `XADD <prefix>:digest:inbox:<profile> * ...`
    /// does); returns its id.
    pub async fn add(
        &self,
        profile: &str,
        fields: Vec<(String, String)>,
    ) -> Result<String, InboxError> {
        if fields.is_empty() {
            return Err(InboxError::NoFields);
        }
        match &self.backend {
            InboxBackend::Redis(r) => Ok(r.digest_add(profile, &fields).await?),
            InboxBackend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                let now = Utc::now().timestamp_millis();
                if now > m.last_ms {
                    m.last_ms = now;
                    m.seq = 0;
                } else {
                    m.seq += 1;
                }
                let id = format!("{}-{}", m.last_ms, m.seq);
                let at_ms = m.last_ms;
                let inbox = m.items.entry(profile.to_string()).or_default();
                if inbox.len() >= MEMORY_INBOX_CAP {
                    inbox.pop_front();
                }
                inbox.push_back(InboxItem {
                    id: id.clone(),
                    at_ms,
                    fields,
                });
                Ok(id)
            }
        }
    }

    /// The window `run_id` owns: claimed on its first call, the same on
    /// every later one.
    pub async fn claim_window(
        &self,
        profile: &str,
        schedule: &str,
        run_id: &str,
        wanted_end: DateTime<Utc>,
    ) -> Result<Window, InboxError> {
        let wanted_end_ms = wanted_end.timestamp_millis();
        match &self.backend {
            InboxBackend::Redis(r) => Ok(r
                .claim_digest_window(profile, schedule, run_id, wanted_end_ms)
                .await?),
            InboxBackend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(w) = m.windows.get(run_id) {
                    return Ok(*w);
                }
                let clock = Utc::now().timestamp_millis().max(m.last_ms + 1);
                let mut end_ms = wanted_end_ms.min(clock - 1);
                let key = (profile.to_string(), schedule.to_string());
                let start_ms = m.last_run.get(&key).copied();
                match start_ms {
                    Some(start) if end_ms <= start => end_ms = start,
                    _ => {
                        m.last_run.insert(key, end_ms);
                    }
                }
                let window = Window { start_ms, end_ms };
                m.windows.insert(run_id.to_string(), window);
                m.window_order.push_back(run_id.to_string());
                if m.window_order.len() > MEMORY_WINDOW_CAP
                    && let Some(old) = m.window_order.pop_front()
                {
                    m.windows.remove(&old);
                }
                Ok(window)
            }
        }
    }

    /// At most `keep` items of `window`, oldest first, and the window's
    /// total.
    pub async fn items(
        &self,
        profile: &str,
        window: Window,
        keep: usize,
    ) -> Result<(Vec<InboxItem>, u64), InboxError> {
        match &self.backend {
            InboxBackend::Redis(r) => Ok(r.digest_items(profile, window, keep).await?),
            InboxBackend::Memory(m) => {
                let m = m.lock().unwrap_or_else(|p| p.into_inner());
                let in_window: Vec<&InboxItem> = m
                    .items
                    .get(profile)
                    .into_iter()
                    .flatten()
                    .filter(|i| {
                        window.start_ms.is_none_or(|s| i.at_ms > s) && i.at_ms <= window.end_ms
                    })
                    .collect();
                let total = in_window.len() as u64;
                Ok((in_window.into_iter().take(keep).cloned().collect(), total))
            }
        }
    }

    /// Drops a profile's items older than `before`.
    pub async fn trim(&self, profile: &str, before: DateTime<Utc>) -> Result<u64, InboxError> {
        let min_ms = before.timestamp_millis();
        match &self.backend {
            InboxBackend::Redis(r) => Ok(r.trim_digest_inbox(profile, min_ms).await?),
            InboxBackend::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                let Some(inbox) = m.items.get_mut(profile) else {
                    return Ok(0);
                };
                let before_len = inbox.len();
                inbox.retain(|i| i.at_ms >= min_ms);
                Ok((before_len - inbox.len()) as u64)
            }
        }
    }

    /// The end of the last window (profile, schedule) collected.
    pub async fn last_run(
        &self,
        profile: &str,
        schedule: &str,
    ) -> Result<Option<DateTime<Utc>>, InboxError> {
        let ms = match &self.backend {
            InboxBackend::Redis(r) => r.digest_last_run(profile, schedule).await?,
            InboxBackend::Memory(m) => {
                let m = m.lock().unwrap_or_else(|p| p.into_inner());
                m.last_run
                    .get(&(profile.to_string(), schedule.to_string()))
                    .copied()
            }
        };
        Ok(ms.map(from_ms))
    }
}

/// The handler of one (profile, schedule) job.
pub struct DigestJob {
    pub profile: Arc<DigestProfile>,
    pub schedule: String,
    pub inbox: DigestInbox,
}

impl JobHandler for DigestJob {
    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        let profile = self.profile.clone();
        let schedule = self.schedule.clone();
        let inbox = self.inbox.clone();
        Box::pin(async move { run_digest(&profile, &schedule, &inbox, ctx).await })
    }
}

async fn run_digest(
    profile: &DigestProfile,
    schedule: &str,
    inbox: &DigestInbox,
    ctx: RunContext,
) -> Result<Counts, JobError> {
    let inbox_error =
        |e: InboxError| JobError::new(format!("digest inbox of {:?}: {e}", profile.id));
    // A tick collects up to its own instant, whenever it runs; a manual
    // run up to now.
    let window = inbox
        .claim_window(&profile.id, schedule, &ctx.run_id.0, ctx.scheduled_at)
        .await
        .map_err(inbox_error)?;
    let (items, count) = inbox
        .items(&profile.id, window, profile.max_items)
        .await
        .map_err(inbox_error)?;
    ctx.notes.set_digest(DigestSummary {
        profile: profile.id.clone(),
        schedule: schedule.to_string(),
        window_start: window.start_ms.map(from_ms),
        window_end: from_ms(window.end_ms),
        message_count: count,
    });
    if let Some(before) = trim_before(profile, inbox, window).await
        && let Err(e) = inbox.trim(&profile.id, before).await
    {
        // Trimming is housekeeping: the next run tries again.
        tracing::warn!(profile = %profile.id, error = %e, "could not trim the digest inbox");
    }
    if count == 0 && !profile.send_empty {
        return Ok(Counts::default());
    }
    let tz = ctx.job.schedule.tz();
    let html = render(
        &profile.templates,
        &profile.id,
        schedule,
        tz,
        window,
        &items,
        count,
    )
    .map_err(JobError::new)?;
    if html.trim().is_empty() {
        // Telegram refuses an empty message: nothing to send.
        tracing::info!(profile = %profile.id, schedule, "the digest rendered empty; nothing sent");
        return Ok(Counts::default());
    }
    let fields: Vec<BTreeMap<String, String>> = items.iter().map(|i| item_view(i, tz)).collect();
    let body = serde_json::json!({
        "job_id": ctx.job.id,
        "run_id": ctx.run_id.0,
        "profile": profile.id,
        "schedule": schedule,
        "window_start": window.start_ms.map(|ms| from_ms(ms).to_rfc3339_opts(SecondsFormat::Millis, true)),
        "window_end": from_ms(window.end_ms).to_rfc3339_opts(SecondsFormat::Millis, true),
        "message_count": count,
        "items": fields,
        "text": html,
    });
    ctx.deliver(html, body).await?;
    Ok(Counts::default())
}

/// How far a run may trim its profile's inbox: items older than
/// `retention`, but never one a schedule of the profile has not collected
/// yet (newer than some schedule's mark) or one of this run's window (a
/// retry reads it again); past [`HARD_RETENTION_FACTOR`] × retention items
/// go regardless, so a schedule disabled for good cannot grow the inbox
/// forever.
async fn trim_before(
    profile: &DigestProfile,
    inbox: &DigestInbox,
    window: Window,
) -> Option<DateTime<Utc>> {
    let now = Utc::now();
    let age = |factor: u32| {
        chrono::TimeDelta::from_std(profile.retention.saturating_mul(factor))
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
    };
    let mut before = age(1)?;
    for s in &profile.schedules {
        match inbox.last_run(&profile.id, &s.name).await {
            Ok(Some(mark)) => before = before.min(mark),
            // Never ran: its first run reads from the inbox's beginning,
            // so age alone limits what it gets.
            Ok(None) => {}
            Err(_) => return None,
        }
    }
    if let Some(start) = window.start_ms {
        before = before.min(from_ms(start));
    }
    Some(match age(HARD_RETENTION_FACTOR) {
        Some(hard) => before.max(hard),
        None => before,
    })
}

/// Items older than this many retentions are trimmed even if a schedule
/// never collected them.
pub const HARD_RETENTION_FACTOR: u32 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ms: i64, text: &str) -> InboxItem {
        InboxItem {
            id: format!("{ms}-0"),
            at_ms: ms,
            fields: vec![("text".into(), text.into())],
        }
    }

    #[test]
    fn renders_header_entries_and_footer_escaping_item_text() {
        let items = [
            item(1_700_000_000_000, "a <b>"),
            item(1_700_000_060_000, "c & d"),
        ];
        let window = Window {
            start_ms: Some(1_699_999_000_000),
            end_ms: 1_700_000_100_000,
        };
        let html = render(
            &DigestTemplates::default(),
            "alerts",
            "hourly",
            chrono_tz::UTC,
            window,
            &items,
            2,
        )
        .unwrap();
        assert_eq!(
            html,
            "<b>alerts</b>: 2 new (hourly)\n• a &lt;b&gt;\n• c &amp; d"
        );
    }

    #[test]
    fn entries_see_index_item_fields_and_times_in_the_zone_and_omitted_counts() {
        let templates = DigestTemplates {
            header: "{% if window_start %}{{ window_start }} – {% endif %}{{ window_end }}".into(),
            entry: "{{ index }}. {{ item.title }} at {{ item.time }} ({{ count }})".into(),
            footer: "{% if omitted %}+{{ omitted }}{% endif %}".into(),
        };
        let mut it = item(1_700_000_000_000, "x"); // 2023-11-14 22:13:20 UTC
        it.fields.push(("title".into(), "T".into()));
        let window = Window {
            start_ms: None,
            end_ms: 1_700_000_000_000,
        };
        let html = render(
            &templates,
            "p",
            "daily",
            chrono_tz::Asia::Tehran,
            window,
            &[it],
            5,
        )
        .unwrap();
        assert_eq!(html, "2023-11-15T01:43:20+03:30\n1. T at 01:43 (5)\n+4");
    }

    #[test]
    fn a_template_failing_at_render_time_names_itself() {
        let templates = DigestTemplates {
            entry: "{{ item.text | nosuchfilter }}".into(),
            ..DigestTemplates::default()
        };
        let window = Window {
            start_ms: None,
            end_ms: 1,
        };
        let err = render(
            &templates,
            "p",
            "s",
            chrono_tz::UTC,
            window,
            &[item(1, "x")],
            1,
        )
        .unwrap_err();
        assert!(err.starts_with("entry template"), "{err}");
    }

    #[test]
    fn stream_entries_become_items_and_bad_bytes_do_not_fail() {
        let it = InboxItem::from_stream(
            "1700000000123-4".into(),
            vec![b"text".to_vec(), vec![0xff, b'a'], b"dangling".to_vec()],
        );
        assert_eq!(it.at_ms, 1_700_000_000_123);
        assert_eq!(
            it.fields,
            vec![("text".to_string(), "\u{fffd}a".to_string())]
        );
    }

    #[test]
    fn names_and_presets() {
        assert!(check_name("profile", "alerts_1").is_ok());
        assert!(check_name("profile", "a.b").is_err());
        assert!(check_name("schedule", "").is_err());
        assert_eq!(preset("hourly"), Some("0 * * * *"));
        assert_eq!(preset("monthly"), None);
        assert_eq!(job_id("alerts", "daily"), "digest.alerts.daily");
    }

    #[tokio::test]
    async fn memory_windows_chain_and_a_run_keeps_its_window() {
        let inbox = DigestInbox::new(None);
        let t0 = Utc::now();
        inbox
            .add("p", vec![("text".into(), "one".into())])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let end1 = Utc::now();
        let w1 = inbox.claim_window("p", "s", "run1", end1).await.unwrap();
        assert_eq!(w1.start_ms, None);
        assert_eq!(inbox.items("p", w1, 10).await.unwrap().1, 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        inbox
            .add("p", vec![("text".into(), "two".into())])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The same run again: the same window, even though more arrived.
        assert_eq!(
            inbox
                .claim_window("p", "s", "run1", Utc::now())
                .await
                .unwrap(),
            w1
        );
        let w2 = inbox
            .claim_window("p", "s", "run2", Utc::now())
            .await
            .unwrap();
        assert_eq!(w2.start_ms, Some(w1.end_ms));
        let (items, count) = inbox.items("p", w2, 10).await.unwrap();
        assert_eq!((items[0].fields[0].1.as_str(), count), ("two", 1));
        // An older tick after a newer one: nothing is collected twice.
        let w3 = inbox.claim_window("p", "s", "run3", t0).await.unwrap();
        assert!(w3.is_empty());
        // Another schedule of the profile has its own mark.
        let other = inbox
            .claim_window("p", "daily", "run4", Utc::now())
            .await
            .unwrap();
        assert_eq!(inbox.items("p", other, 10).await.unwrap().1, 2);
        assert_eq!(inbox.trim("p", Utc::now()).await.unwrap(), 2);
    }
}
