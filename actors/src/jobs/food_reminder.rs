//! The unselected food reminder: every evening (22:00 in Asia/Tehran) it
//! asks the food ordering service which users have not chosen tomorrow's
//! food and reminds each of them, optionally with a dish from tomorrow's
//! menu suggested by an OpenAI-compatible chat-completions model.
//!
//! The HTTP contract with the food service, the settings
//! (`[coded.unselected_food_reminder]`) and their environment overrides are
//! in the README ("The unselected food reminder").
//!
//! What fails a run, and what does not:
//! * the missing-selections call failing (unreachable, slow, non-2xx, not
//!   JSON, wrong shape, another date) fails the attempt with an error
//!   naming the URL and what was wrong; the retry policy applies;
//! * so does the service reporting users while herald knows none at all
//!   (its user list empty or unreadable): reminding nobody is no success;
//! * the recommendation (menu and model, both bounded by one timeout) never
//!   fails or delays a run beyond that timeout: on any trouble the plain
//!   reminder goes out and a warning is logged.
//!
//! Who is reminded: the chats the service reports that the job's targets
//! reach (by default every active user herald knows). The service is
//! authoritative about selections, herald about who may be messaged: a chat
//! it does not know, or knows as inactive, is never messaged, even when the
//! job's targets include it by id.
//!
//! Secrets stay out of errors and logs: a URL with a user name or password
//! is refused (credentials go in the token and key settings), and a quoted
//! answer shows `***` wherever it holds the token or the key.
//!
//! The pure parts (settings, tomorrow's date, reading answers, choosing the
//! dish, rendering) are plain functions tested below; [`FoodReminder`] wires
//! them to HTTP.

use crate::secret::Secret;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::handler::{BoxFuture, Job, JobError, RunContext};
use crate::job::{JobKind, JobSpec, MisfirePolicy, OverlapPolicy, RetryPolicy};
use crate::record::Counts;
use crate::schedule::Schedule;
use crate::template;
use crate::users::{Targets, User, resolve_targets};

/// The job's id (and `[coded.<id>]` table name).
pub const JOB_ID: &str = "unselected_food_reminder";
/// 22:00: late enough that most have ordered, early enough to still do so
/// before the night.
pub const DEFAULT_SCHEDULE: &str = "0 22 * * *";
/// The team's zone; "tomorrow" is tomorrow in the job's zone.
pub const DEFAULT_ZONE: Tz = chrono_tz::Asia::Tehran;
/// A run is two or three small HTTP calls: two minutes is ample, and short
/// enough that a stuck run is retried the same evening.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Three tries ride out a service restart without reminding people deep
/// into the night: with [`crate::backoff`]'s jitter (each delay is drawn
/// from half to all of it) the second comes 30-60 s after the first fails,
/// the third 60-120 s after the second, so all three are over by about
/// 22:04.
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff: Duration::from_secs(60),
    backoff_max: Duration::from_secs(600),
};
/// How long the food service may take per request, by default.
const DEFAULT_SERVICE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the whole recommendation (menu and model) may take, by
/// default: a suggestion is not worth holding the reminder up for.
const DEFAULT_RECOMMENDATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Ceiling on either timeout: both together stay under [`RUN_TIMEOUT`].
const MAX_TIMEOUT_SECS: f64 = 50.0;
/// Largest answer read from either service (a chat id list of ~100k users);
/// a runaway body fails the call instead of growing memory.
const MAX_BODY: usize = 2 << 20;
/// How much of an unexpected answer an error quotes.
const QUOTE_CHARS: usize = 200;

/// Environment variables that override the settings (an empty value counts
/// as unset).
pub const ENV_SERVICE_URL: &str = "FOOD_SERVICE_URL";
pub const ENV_SERVICE_TOKEN: &str = "FOOD_SERVICE_TOKEN";
pub const ENV_RECOMMENDATION_KEY: &str = "HERALD_RECOMMENDATION_API_KEY";

/// The reminder when `template` is not set. Variables: `name` (the user's
/// display name, may be empty), `date` (tomorrow, `YYYY-MM-DD`),
/// `recommendation` (a dish name from the menu, or none).
pub const DEFAULT_TEMPLATE: &str = "{% if name %}{{ name }}, you{% else %}You{% endif %} have not \
selected your food for tomorrow ({{ date }}) yet. Please choose it in the food ordering \
system.{% if recommendation %}\nSuggestion: <b>{{ recommendation }}</b>{% endif %}";

/// The job. Registered in [`crate::jobs::registry`].
pub struct FoodReminder;

impl Job for FoodReminder {
    fn definition(&self) -> Result<JobSpec, String> {
        let schedule =
            Schedule::parse(DEFAULT_SCHEDULE, DEFAULT_ZONE).map_err(|e| e.to_string())?;
        let mut spec = JobSpec::new(
            JOB_ID,
            schedule,
            JobKind::Coded {
                handler: JOB_ID.into(),
            },
        );
        spec.timeout = RUN_TIMEOUT;
        spec.retry = RETRY;
        // A reminder missed while herald was down is not sent in the middle
        // of the night, and one run at a time.
        spec.misfire = MisfirePolicy::Skip;
        spec.overlap = OverlapPolicy::Skip;
        Ok(spec)
    }

    fn run(&self, ctx: RunContext) -> BoxFuture<Result<Counts, JobError>> {
        Box::pin(run(ctx))
    }

    fn check_config(&self, config: &Value) -> Result<(), String> {
        settings(config, &env_var)
            .map(|_| ())
            .map_err(|problems| problems.join("; "))
    }
}

/// The job's settings: `[coded.unselected_food_reminder]` with the
/// environment's overrides applied, checked. Its `Debug` shows no secret:
/// not the token, the key, nor a password in a URL.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// The food service; `None` when neither `base_url` nor
    /// `FOOD_SERVICE_URL` is set (a run then fails saying so).
    pub base_url: Option<Url>,
    pub token: Option<Secret>,
    /// Per request to the food service.
    pub timeout: Duration,
    pub template: String,
    pub recommendation: Option<Recommender>,
}

/// Where a dish suggestion comes from.
#[derive(Clone, PartialEq)]
pub struct Recommender {
    /// Base of an OpenAI-compatible API (`…/v1`); herald posts to
    /// `{base_url}/chat/completions`.
    pub base_url: Url,
    pub model: String,
    pub api_key: Option<Secret>,
    /// For the whole recommendation: menu and model.
    pub timeout: Duration,
}

impl Settings {
    /// The secrets the settings hold (token, API key), to be blanked out of
    /// anything a run quotes.
    fn secrets(&self) -> Vec<&str> {
        let key = self
            .recommendation
            .as_ref()
            .and_then(|r| r.api_key.as_ref());
        [self.token.as_ref(), key]
            .into_iter()
            .flatten()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url.as_ref().map(shown))
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("template", &self.template)
            .field("recommendation", &self.recommendation)
            .finish()
    }
}

impl fmt::Debug for Recommender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recommender")
            .field("base_url", &shown(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[coded.unselected_food_reminder]` as written. Every field is optional
/// so that [`from_table`] can find a bad one by reading it alone.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    base_url: Option<String>,
    token: Option<String>,
    /// A duration such as "10s" or "2.5s".
    timeout: Option<String>,
    template: Option<String>,
    recommendation: Option<Value>,
}

/// `[coded.unselected_food_reminder.recommendation]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRecommendation {
    base_url: Option<String>,
    model: Option<String>,
    api_key: Option<String>,
    /// A duration such as "10s" or "2.5s".
    timeout: Option<String>,
}

/// Reads a table into `T`; the error names each bad field (`prefix` +
/// key).
fn from_table<T: DeserializeOwned + Default>(value: &Value, prefix: &str) -> Result<T, String> {
    let table = match value {
        Value::Null => return Ok(T::default()),
        Value::Object(table) => table,
        other => {
            return Err(match prefix.strip_suffix('.') {
                Some(field) => format!("{field}: must be a table, not {other}"),
                None => format!("must be a table, not {other}"),
            });
        }
    };
    serde_json::from_value(Value::Object(table.clone())).map_err(|whole| {
        // serde_json names an unknown field but not one whose value has the
        // wrong type, and stops at the first; every field of T is optional,
        // so the bad fields are those that fail on their own.
        let bad: Vec<String> = table
            .iter()
            .filter_map(|(key, value)| {
                let alone = Map::from_iter([(key.clone(), value.clone())]);
                serde_json::from_value::<T>(Value::Object(alone))
                    .err()
                    .map(|e| format!("{prefix}{key}: {e}"))
            })
            .collect();
        if bad.is_empty() {
            format!("{prefix}{whole}")
        } else {
            bad.join("; ")
        }
    })
}

/// An environment variable, `None` if unset or empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `raw` as it may be printed: everything between the scheme and the last
/// `@` (a user name and password) becomes `***`. Deliberately blunt, so that
/// it also hides a password in something that does not parse (one with a
/// `/`, `?` or `#` in it, say); an `@` elsewhere only costs some detail.
fn redact_userinfo(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    match raw[start..].rfind('@') {
        Some(at) => format!("{}***{}", &raw[..start], &raw[start + at..]),
        None => raw.to_string(),
    }
}

/// `url` as it may be printed (a user name or password as `***`).
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    if !url.username().is_empty() {
        let _ = url.set_username("***");
    }
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

/// An http(s) URL with a host, no user name or password (`credentials`
/// says where they go instead) and no query or fragment (herald adds paths
/// and a query to it). The error never shows a password.
fn http_url(raw: &str, credentials: &str) -> Result<Url, String> {
    let printed = redact_userinfo(raw);
    match Url::parse(raw.trim()) {
        Ok(url) if !url.username().is_empty() || url.password().is_some() => Err(format!(
            "{printed:?} has a user name or password in it: put credentials in \
             {credentials}, not in the URL"
        )),
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.has_host()
                && url.query().is_none()
                && url.fragment().is_none() =>
        {
            Ok(url)
        }
        Ok(_) => Err(format!(
            "{printed:?} is not an http(s) base URL (scheme, host, optional path; no query)"
        )),
        Err(e) => Err(format!("{printed:?} is not a URL: {e}")),
    }
}

/// Where the food service's credentials go.
const SERVICE_CREDENTIALS: &str = "token / FOOD_SERVICE_TOKEN";
/// Where the recommendation API's credentials go.
const RECOMMENDATION_CREDENTIALS: &str = "recommendation.api_key / HERALD_RECOMMENDATION_API_KEY";

fn timeout(raw: Option<String>, default: Duration) -> Result<Duration, String> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let max = Duration::from_secs_f64(MAX_TIMEOUT_SECS);
    match humantime::parse_duration(&raw) {
        Ok(d) if !d.is_zero() && d <= max => Ok(d),
        Ok(_) => Err(format!("{raw:?} must be above 0s and at most {max:?}")),
        Err(e) => Err(format!(
            "{raw:?} is not a duration such as \"10s\" or \"2.5s\": {e}"
        )),
    }
}

/// `result`'s value, or `None` with its problem noted under `field`.
fn noted<T>(problems: &mut Vec<String>, field: &str, result: Result<T, String>) -> Option<T> {
    result
        .map_err(|e| problems.push(format!("{field}: {e}")))
        .ok()
}

/// The settings from the job's table (null if absent) and the environment
/// (`env` reads a variable; unset and empty are `None`), or every problem,
/// each naming its field or variable.
pub fn settings(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Vec<String>> {
    let file: FileSettings = from_table(config, "").map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let base_url = match env(ENV_SERVICE_URL) {
        Some(raw) => noted(
            &mut problems,
            &format!("environment {ENV_SERVICE_URL}"),
            http_url(&raw, SERVICE_CREDENTIALS),
        ),
        None => file.base_url.as_deref().and_then(|raw| {
            noted(
                &mut problems,
                "base_url",
                http_url(raw, SERVICE_CREDENTIALS),
            )
        }),
    };
    let timeout = noted(
        &mut problems,
        "timeout",
        timeout(file.timeout, DEFAULT_SERVICE_TIMEOUT),
    );
    let template = file
        .template
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    noted(
        &mut problems,
        "template",
        template::check(&template).map_err(|e| e.to_string()),
    );
    let recommendation = file
        .recommendation
        .as_ref()
        .and_then(|table| recommender(table, env, &mut problems));
    match timeout {
        Some(timeout) if problems.is_empty() => Ok(Settings {
            base_url,
            token: env(ENV_SERVICE_TOKEN).or(file.token).map(Secret::new),
            timeout,
            template,
            recommendation,
        }),
        _ => Err(problems),
    }
}

/// The `recommendation` table's settings, or `None` with its problems
/// noted.
fn recommender(
    table: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<Recommender> {
    let rec: FileRecommendation = match from_table(table, "recommendation.") {
        Ok(rec) => rec,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    let base_url = noted(
        problems,
        "recommendation.base_url",
        match &rec.base_url {
            Some(raw) => http_url(raw, RECOMMENDATION_CREDENTIALS),
            None => Err(
                "required: the chat-completions API's base URL, e.g. https://api.openai.com/v1"
                    .into(),
            ),
        },
    );
    let model = noted(
        problems,
        "recommendation.model",
        rec.model
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| "required, e.g. \"gpt-4o-mini\"".to_string()),
    );
    let timeout = noted(
        problems,
        "recommendation.timeout",
        timeout(rec.timeout, DEFAULT_RECOMMENDATION_TIMEOUT),
    );
    Some(Recommender {
        base_url: base_url?,
        model: model?,
        api_key: env(ENV_RECOMMENDATION_KEY).or(rec.api_key).map(Secret::new),
        timeout: timeout?,
    })
}

/// Tomorrow's date in `zone` at `scheduled_at`: the day the reminder is
/// about. `None` only at the end of chrono's calendar.
pub fn tomorrow(scheduled_at: DateTime<Utc>, zone: Tz) -> Option<NaiveDate> {
    scheduled_at.with_timezone(&zone).date_naive().succ_opt()
}

/// `{base}{path}?date=YYYY-MM-DD`, keeping a path the base URL has.
fn endpoint(base: &Url, path: &str, date: NaiveDate) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(Some(&format!("date={date}")));
    url
}

/// At most [`QUOTE_CHARS`] of `text`, on one line.
fn clip(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(QUOTE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// `text` with every occurrence of a secret (token, API key) replaced by
/// `***`: a service may echo what it was sent, and what it answers ends up
/// in run errors and logs. Longer secrets go first, so that one containing
/// another is not left half shown.
fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(text.to_string(), |text, secret| text.replace(secret, "***"))
}

/// The start of an unexpected answer, quoted, for an error message; the
/// `secrets` are blanked out first (before clipping, so that no part of
/// one shows).
fn quote(body: &[u8], secrets: &[&str]) -> String {
    format!(
        "{:?}",
        clip(&redact(&String::from_utf8_lossy(body), secrets))
    )
}

/// A JSON answer of type `T`; the error says whether it was not JSON at all
/// or JSON of another shape than `shape`, and shows none of the `secrets`.
fn parse_answer<T: DeserializeOwned>(
    body: &[u8],
    shape: &str,
    secrets: &[&str],
) -> Result<T, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("something that is not JSON ({e}): {}", quote(body, secrets)))?;
    serde_json::from_value(value).map_err(|e| {
        // serde quotes the value it did not expect
        format!(
            "JSON of the wrong shape ({}); expected {shape}: {}",
            clip(&redact(&e.to_string(), secrets)),
            quote(body, secrets)
        )
    })
}

fn check_date(answered: &str, asked: NaiveDate) -> Result<(), String> {
    match NaiveDate::parse_from_str(answered, "%Y-%m-%d") {
        Ok(d) if d == asked => Ok(()),
        Ok(d) => Err(format!("for date {d}, but herald asked about {asked}")),
        Err(_) => Err(format!("a date {answered:?} that is not YYYY-MM-DD")),
    }
}

#[derive(Deserialize)]
struct MissingAnswer {
    date: String,
    chat_ids: Vec<i64>,
}

const MISSING_SHAPE: &str = r#"{"date": "YYYY-MM-DD", "chat_ids": [integer, ...]}"#;

/// The chats without a selection on `date`, from the service's answer; the
/// error describes what is wrong with it (after "answered ") and shows none
/// of the `secrets`.
pub fn parse_missing(
    body: &[u8],
    date: NaiveDate,
    secrets: &[&str],
) -> Result<BTreeSet<i64>, String> {
    let answer: MissingAnswer = parse_answer(body, MISSING_SHAPE, secrets)?;
    check_date(&answer.date, date).map_err(|e| redact(&e, secrets))?;
    Ok(answer.chat_ids.into_iter().collect())
}

/// A dish on the menu.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Dish {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
struct MenuAnswer {
    date: String,
    dishes: Vec<Dish>,
}

const MENU_SHAPE: &str =
    r#"{"date": "YYYY-MM-DD", "dishes": [{"name": string, "description": string}, ...]}"#;

/// The menu of `date`, from the service's answer (an error shows none of
/// the `secrets`).
pub fn parse_menu(body: &[u8], date: NaiveDate, secrets: &[&str]) -> Result<Vec<Dish>, String> {
    let answer: MenuAnswer = parse_answer(body, MENU_SHAPE, secrets)?;
    check_date(&answer.date, date).map_err(|e| redact(&e, secrets))?;
    Ok(answer.dishes)
}

/// The message of a chat-completions answer (`choices[0].message.content`;
/// an error shows none of the `secrets`).
pub fn parse_completion(body: &[u8], secrets: &[&str]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("something that is not JSON ({e}): {}", quote(body, secrets)))?;
    value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "JSON without a choices[0].message.content string: {}",
                quote(body, secrets)
            )
        })
}

/// The chat-completions request asking for one dish of `menu`.
pub fn completion_request(model: &str, date: NaiveDate, menu: &[Dish]) -> Value {
    let mut listing = String::new();
    for dish in menu {
        match dish.description.as_deref().filter(|d| !d.trim().is_empty()) {
            Some(description) => listing.push_str(&format!("- {}: {description}\n", dish.name)),
            None => listing.push_str(&format!("- {}\n", dish.name)),
        }
    }
    json!({
        "model": model,
        "messages": [
            {
                "role": "system",
                "content": "You help people choose their food for the next day. Reply with the \
                            name of exactly one dish from the menu, written exactly as it \
                            appears there, and nothing else.",
            },
            {
                "role": "user",
                "content": format!("The menu for {date}:\n{listing}Which one dish do you recommend?"),
            },
        ],
    })
}

/// A name as compared: lower case, single spaces, surrounding punctuation
/// and quotes gone, and the Persian spellings a model mixes up unified
/// (Arabic yeh and kaf, zero-width non-joiner).
fn normalize(s: &str) -> String {
    let unified: String = s
        .chars()
        .map(|c| match c {
            'ي' | 'ى' => 'ی',
            'ك' => 'ک',
            '\u{200c}' => ' ',
            c => c,
        })
        .collect();
    unified
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(|c: char| c.is_ascii_punctuation() || "«»“”‘’„؟،…".contains(c))
        .trim()
        .to_lowercase()
}

/// `needle` occurs in `haystack` as whole words ("rice" is not in "price").
fn contains_words(haystack: &str, needle: &str) -> bool {
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The dish a model's answer names, if it names exactly one dish of the
/// menu: the answer is a dish's name (case and punctuation aside), or
/// contains dish names of which the longest contains all the others ("Rice
/// with Chicken" over "Rice"). Anything else is nonsense: `None`.
pub fn pick_dish<'m>(answer: &str, menu: &'m [Dish]) -> Option<&'m Dish> {
    let said = normalize(answer);
    let names: Vec<(&Dish, String)> = menu
        .iter()
        .map(|d| (d, normalize(&d.name)))
        .filter(|(_, n)| !n.is_empty())
        .collect();
    if let Some((dish, _)) = names.iter().find(|(_, n)| *n == said) {
        return Some(dish);
    }
    let named: Vec<&(&Dish, String)> = names
        .iter()
        .filter(|(_, n)| contains_words(&said, n))
        .collect();
    let (longest, longest_name) = named.iter().max_by_key(|(_, n)| n.chars().count())?;
    named
        .iter()
        .all(|(_, n)| contains_words(longest_name, n))
        .then_some(*longest)
}

/// The chats to remind, ascending: those the service reports (`missing`)
/// that the job's `targets` reach and that herald knows as active `users`.
/// Unlike a message job's, these targets never reach a chat herald does not
/// know, even one included by id.
///
/// An error when the service reports someone but herald knows no users at
/// all: its user list is empty or unreadable (Redis offline since
/// start-up), and a run that reminds nobody must not pass for a success.
pub fn recipients(
    missing: &BTreeSet<i64>,
    targets: &Targets,
    users: &BTreeMap<i64, User>,
) -> Result<Vec<i64>, String> {
    if users.is_empty() && !missing.is_empty() {
        let n = missing.len();
        return Err(format!(
            "the service reports {n} user{} without a selection but herald knows no users: \
             its user list is empty, or could not be read (Redis offline since start-up); \
             nobody was reminded",
            if n == 1 { "" } else { "s" }
        ));
    }
    Ok(resolve_targets(targets, users)
        .into_iter()
        .filter(|chat| missing.contains(chat))
        .filter(|chat| users.get(chat).is_some_and(|u| u.active))
        .collect())
}

/// Each recipient's reminder: `source` rendered (HTML auto-escaped) with
/// the user's `name`, `date` and the `recommendation`.
pub fn render_reminders(
    source: &str,
    date: NaiveDate,
    recommendation: Option<&str>,
    recipients: &[(i64, &str)],
) -> Result<Vec<(i64, String)>, String> {
    let env = template::environment();
    let tmpl = env
        .template_from_str(source)
        .map_err(|e| format!("template: {e}"))?;
    let date = date.to_string();
    recipients
        .iter()
        .map(|(chat, name)| {
            tmpl.render(minijinja::context! {
                name => name,
                date => date,
                recommendation => recommendation,
            })
            .map(|html| (*chat, html))
            .map_err(|e| format!("template: {e}"))
        })
        .collect()
}

/// A failed request in words: a timeout says so; anything else gives the
/// error and its causes (without the URL, which the caller names).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s", timeout.as_secs_f64());
    }
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends `request` and reads a 2xx answer's body (at most [`MAX_BODY`]);
/// the error is in words, after "GET/POST {url}: ", and quotes a non-2xx
/// answer without the `secrets`.
async fn fetch(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    secrets: &[&str],
) -> Result<Vec<u8>, String> {
    let mut response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| describe(e, timeout))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(e, timeout))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!(
                "answered more than {MAX_BODY} bytes (HTTP {status})"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("answered HTTP {status}: {}", quote(&body, secrets)));
    }
    Ok(body)
}

fn get(client: &reqwest::Client, url: &Url, token: Option<&Secret>) -> reqwest::RequestBuilder {
    let request = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    match token {
        Some(token) => request.bearer_auth(token.expose()),
        None => request,
    }
}

/// Asks the food service who has not selected food on `date`.
async fn fetch_missing(
    client: &reqwest::Client,
    settings: &Settings,
    base: &Url,
    date: NaiveDate,
) -> Result<BTreeSet<i64>, String> {
    let url = endpoint(base, "/v1/selections/missing", date);
    let secrets = settings.secrets();
    let body = fetch(
        get(client, &url, settings.token.as_ref()),
        settings.timeout,
        &secrets,
    )
    .await
    .map_err(|e| format!("food service: GET {url}: {e}"))?;
    parse_missing(&body, date, &secrets)
        .map_err(|e| format!("food service: GET {url} answered {e}"))
}

/// A dish of `date`'s menu that the model recommends; the error says why
/// there is none.
async fn recommend(
    client: &reqwest::Client,
    settings: &Settings,
    base: &Url,
    recommender: &Recommender,
    date: NaiveDate,
) -> Result<String, String> {
    let url = endpoint(base, "/v1/menu", date);
    let secrets = settings.secrets();
    let body = fetch(
        get(client, &url, settings.token.as_ref()),
        recommender.timeout,
        &secrets,
    )
    .await
    .map_err(|e| format!("food service: GET {url}: {e}"))?;
    let menu = parse_menu(&body, date, &secrets)
        .map_err(|e| format!("food service: GET {url} answered {e}"))?;
    if menu.is_empty() {
        return Err(format!("the menu for {date} is empty"));
    }
    let mut url = recommender.base_url.clone();
    url.set_path(&format!(
        "{}/chat/completions",
        recommender.base_url.path().trim_end_matches('/')
    ));
    let mut request =
        client
            .post(url.clone())
            .json(&completion_request(&recommender.model, date, &menu));
    if let Some(key) = &recommender.api_key {
        request = request.bearer_auth(key.expose());
    }
    let body = fetch(request, recommender.timeout, &secrets)
        .await
        .map_err(|e| format!("completions: POST {url}: {e}"))?;
    let answer = parse_completion(&body, &secrets)
        .map_err(|e| format!("completions: POST {url} answered {e}"))?;
    pick_dish(&answer, &menu)
        .map(|dish| dish.name.clone())
        .ok_or_else(|| {
            format!(
                "the model's answer {} names no single dish on the menu",
                quote(answer.as_bytes(), &secrets)
            )
        })
}

async fn run(ctx: RunContext) -> Result<Counts, JobError> {
    let settings = settings(&ctx.config, &env_var)
        .map_err(|problems| JobError::new(format!("[coded.{JOB_ID}]: {}", problems.join("; "))))?;
    let base = settings.base_url.clone().ok_or_else(|| {
        JobError::new(format!(
            "the food service's URL is not set: set base_url in [coded.{JOB_ID}] or the \
             {ENV_SERVICE_URL} environment variable"
        ))
    })?;
    let zone = ctx.job.schedule.tz();
    let date = tomorrow(ctx.scheduled_at, zone)
        .ok_or_else(|| JobError::new(format!("no day after {} in {zone}", ctx.scheduled_at)))?;
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| JobError::new(format!("cannot build an HTTP client: {e}")))?;
    let missing = fetch_missing(&client, &settings, &base, date)
        .await
        .map_err(JobError::new)?;
    let users: BTreeMap<i64, User> = ctx.users.all().await;
    let chats = recipients(&missing, &ctx.job.delivery.targets, &users).map_err(JobError::new)?;
    tracing::info!(
        job = %ctx.job.id,
        run = %ctx.run_id,
        %date,
        reported = missing.len(),
        reminded = chats.len(),
        "users without a food selection (only those targeted, known and active are reminded)"
    );
    if chats.is_empty() {
        return Ok(Counts::default());
    }
    let recommendation = match &settings.recommendation {
        None => None,
        Some(recommender) => {
            let asked = recommend(&client, &settings, &base, recommender, date);
            match tokio::time::timeout(recommender.timeout, asked).await {
                Ok(Ok(dish)) => Some(dish),
                Ok(Err(why)) => {
                    tracing::warn!(job = %ctx.job.id, run = %ctx.run_id, reason = %why, "no recommendation; sending the plain reminder");
                    None
                }
                Err(_) => {
                    tracing::warn!(job = %ctx.job.id, run = %ctx.run_id, timeout = ?recommender.timeout, "no recommendation in time; sending the plain reminder");
                    None
                }
            }
        }
    };
    let named: Vec<(i64, &str)> = chats
        .iter()
        .map(|chat| {
            let name = users.get(chat).map(|u| u.name.as_str()).unwrap_or("");
            (*chat, name)
        })
        .collect();
    for (chat, html) in
        render_reminders(&settings.template, date, recommendation.as_deref(), &named)
            .map_err(JobError::new)?
    {
        ctx.send_dm(chat, html);
    }
    // The Notifier delivers and fills in the counts.
    Ok(Counts::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn menu() -> Vec<Dish> {
        [
            ("Ghormeh Sabzi", Some("herb stew with rice")),
            ("Rice", None),
            ("Rice with Chicken", Some("saffron rice")),
            ("قورمه‌سبزی", None),
        ]
        .into_iter()
        .map(|(name, description)| Dish {
            name: name.into(),
            description: description.map(String::from),
        })
        .collect()
    }

    #[test]
    fn the_definition_is_22_in_tehran_with_retries() {
        let spec = FoodReminder.definition().unwrap();
        assert_eq!(&*spec.id, JOB_ID);
        assert_eq!(spec.schedule.expr().source(), "0 22 * * *");
        assert_eq!(spec.schedule.tz(), chrono_tz::Asia::Tehran);
        assert_eq!(spec.retry.max_attempts, 3);
        assert_eq!(spec.retry.backoff, Duration::from_secs(60));
        assert_eq!(spec.misfire, MisfirePolicy::Skip);
        assert_eq!(spec.overlap, OverlapPolicy::Skip);
        assert!(spec.timeout > DEFAULT_SERVICE_TIMEOUT + DEFAULT_RECOMMENDATION_TIMEOUT);
        assert!(Duration::from_secs_f64(2.0 * MAX_TIMEOUT_SECS) < spec.timeout);
    }

    #[test]
    fn tomorrow_is_the_next_day_in_the_jobs_zone() {
        let tehran = chrono_tz::Asia::Tehran;
        // 22:00 in Tehran (UTC+3:30) is 18:30 UTC, the same day
        let at = Utc.with_ymd_and_hms(2024, 6, 10, 18, 30, 0).unwrap();
        assert_eq!(tomorrow(at, tehran), Some(date("2024-06-11")));
        // 00:30 in Tehran is still the evening before in UTC
        let at = Utc.with_ymd_and_hms(2024, 3, 19, 21, 0, 0).unwrap();
        assert_eq!(tomorrow(at, tehran), Some(date("2024-03-21")));
        assert_eq!(tomorrow(at, chrono_tz::UTC), Some(date("2024-03-20")));
        // a second before midnight in Tehran
        let at = Utc.with_ymd_and_hms(2024, 12, 31, 20, 29, 59).unwrap();
        assert_eq!(tomorrow(at, tehran), Some(date("2025-01-01")));
        let at = Utc.with_ymd_and_hms(2024, 12, 31, 20, 30, 0).unwrap();
        assert_eq!(tomorrow(at, tehran), Some(date("2025-01-02")));
    }

    #[test]
    fn settings_default_everything_but_the_url() {
        let s = settings(&Value::Null, &no_env).unwrap();
        assert_eq!(s.base_url, None);
        assert_eq!(s.token, None);
        assert_eq!(s.timeout, DEFAULT_SERVICE_TIMEOUT);
        assert_eq!(s.template, DEFAULT_TEMPLATE);
        assert_eq!(s.recommendation, None);

        let s = settings(
            &json!({
                "base_url": "https://food.example/api/",
                "token": "t0k",
                "timeout": "2.5s",
                "template": "Hi {{ name }}",
                "recommendation": {"base_url": "http://llm:8000/v1", "model": "m", "api_key": "k"},
            }),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.base_url.unwrap().as_str(), "https://food.example/api/");
        assert_eq!(s.token.unwrap().expose(), "t0k");
        assert_eq!(s.timeout, Duration::from_millis(2500));
        let rec = s.recommendation.unwrap();
        assert_eq!(rec.model, "m");
        assert_eq!(rec.api_key.unwrap().expose(), "k");
        assert_eq!(rec.timeout, DEFAULT_RECOMMENDATION_TIMEOUT);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let env = |name: &str| match name {
            ENV_SERVICE_URL => Some("http://from-env:9000".to_string()),
            ENV_SERVICE_TOKEN => Some("env-token".to_string()),
            ENV_RECOMMENDATION_KEY => Some("env-key".to_string()),
            _ => None,
        };
        let s = settings(
            &json!({
                "base_url": "http://from-file",
                "token": "file-token",
                "recommendation": {"base_url": "http://llm/v1", "model": "m", "api_key": "file-key"},
            }),
            &env,
        )
        .unwrap();
        assert_eq!(s.base_url.unwrap().as_str(), "http://from-env:9000/");
        assert_eq!(s.token.unwrap().expose(), "env-token");
        assert_eq!(
            s.recommendation.unwrap().api_key.unwrap().expose(),
            "env-key"
        );

        let bad = |name: &str| (name == ENV_SERVICE_URL).then(|| "ftp://x".to_string());
        let e = settings(&Value::Null, &bad).unwrap_err().join("; ");
        assert!(
            e.starts_with("environment FOOD_SERVICE_URL: \"ftp://x\""),
            "{e}"
        );
    }

    #[test]
    fn bad_settings_are_named_by_field() {
        let problems = |config: Value| settings(&config, &no_env).unwrap_err().join("; ");
        let e = problems(json!({"bse_url": "http://x"}));
        assert!(e.starts_with("bse_url: unknown field `bse_url`"), "{e}");
        let e = problems(json!({"timeout": "ten seconds"}));
        assert!(
            e.starts_with("timeout: \"ten seconds\" is not a duration such as \"10s\""),
            "{e}"
        );
        let e = problems(json!({"timeout": 10, "tempalte": "x"}));
        assert!(e.contains("timeout: invalid type"), "{e}");
        assert!(e.contains("tempalte: unknown field"), "{e}");
        let e = problems(json!({"recommendation": {"base_url": "http://x", "modle": "m"}}));
        assert!(e.starts_with("recommendation.modle: unknown field"), "{e}");
        let e = problems(json!({"recommendation": {"base_url": "http://x"}}));
        assert!(e.starts_with("recommendation.model: required"), "{e}");
        let e = problems(json!({"recommendation": "yes"}));
        assert!(e.starts_with("recommendation: must be a table"), "{e}");
        // every problem at once
        let e = problems(json!({
            "base_url": "food.example",
            "timeout": "0s",
            "template": "{% if x %}",
            "recommendation": {"base_url": "http://x?a=b", "model": "m", "timeout": "51s"},
        }));
        for part in [
            "base_url: \"food.example\" is not a URL",
            "recommendation.base_url: \"http://x?a=b\" is not an http(s) base URL",
            "recommendation.timeout: \"51s\" must be",
            "timeout: \"0s\" must be",
            "template: template does not parse",
        ] {
            assert!(e.contains(part), "{part:?} in {e}");
        }
        assert!(FoodReminder.check_config(&json!({"base_url": 5})).is_err());
        assert!(
            FoodReminder
                .check_config(&json!({"base_url": "http://x"}))
                .is_ok()
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = settings(
            &json!({
                "token": "hunter2",
                "recommendation": {"base_url": "http://llm/v1", "model": "m", "api_key": "sk-42"},
            }),
            &no_env,
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("sk-42"), "{shown}");
        // nor a password in a URL, should one get into the settings
        let mut s = s;
        s.base_url = Some(Url::parse("http://alice:pa55word@food/api").unwrap());
        s.recommendation.as_mut().unwrap().base_url =
            Url::parse("https://sk-in-url@llm/v1").unwrap();
        let shown = format!("{s:?}");
        for secret in ["pa55word", "alice", "sk-in-url"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("http://***:***@food/api"), "{shown}");
    }

    #[test]
    fn urls_with_a_user_or_password_are_refused_without_showing_them() {
        let problems = |config: Value| settings(&config, &no_env).unwrap_err().join("; ");
        let e = problems(json!({"base_url": "http://user:s3cret@food.example/api"}));
        assert_eq!(
            e,
            "base_url: \"http://***@food.example/api\" has a user name or password in it: \
             put credentials in token / FOOD_SERVICE_TOKEN, not in the URL"
        );
        let e = problems(json!({"base_url": "https://t0ken@food.example"}));
        assert!(
            e.contains("put credentials in token / FOOD_SERVICE_TOKEN"),
            "{e}"
        );
        assert!(!e.contains("t0ken"), "{e}");
        let e = problems(json!({"recommendation":
            {"base_url": "https://me:sk-123@llm/v1", "model": "m"}}));
        assert!(
            e.starts_with("recommendation.base_url: \"https://***@llm/v1\" has a user name"),
            "{e}"
        );
        assert!(
            e.contains("recommendation.api_key / HERALD_RECOMMENDATION_API_KEY"),
            "{e}"
        );
        assert!(!e.contains("sk-123"), "{e}");
        // from the environment too
        let env = |name: &str| (name == ENV_SERVICE_URL).then(|| "http://u:envpass@h".to_string());
        let e = settings(&Value::Null, &env).unwrap_err().join("; ");
        assert!(
            e.starts_with("environment FOOD_SERVICE_URL: \"http://***@h\""),
            "{e}"
        );
        assert!(!e.contains("envpass"), "{e}");
        // a password is not shown when the rest does not parse either
        for raw in [
            "http://u:PW1/PW2@h",
            "http://u:PW1?PW2@h",
            "http://u:PW1#PW2@h",
            "u:PW1@h",
            "http://u:PW1@",
        ] {
            let e = http_url(raw, SERVICE_CREDENTIALS).unwrap_err();
            assert!(!e.contains("PW"), "{raw}: {e}");
        }
        // what `herald check` calls
        let e = FoodReminder
            .check_config(&json!({"base_url": "http://user:s3cret@food.example"}))
            .unwrap_err();
        assert!(e.contains("not in the URL"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn quoted_answers_do_not_show_the_token_or_the_key() {
        let d = date("2024-03-21");
        let secrets = ["food-token", "sk-key"];
        let shown = |e: String| {
            for secret in secrets {
                assert!(!e.contains(secret), "{secret} in {e}");
            }
            assert!(e.contains("***"), "{e}");
            e
        };
        shown(parse_missing(b"<p>bad token food-token</p>", d, &secrets).unwrap_err());
        shown(parse_missing(br#"{"echo": "Bearer food-token"}"#, d, &secrets).unwrap_err());
        // the value serde did not expect, and the date
        let e = shown(
            parse_missing(
                br#"{"date": "2024-03-21", "chat_ids": ["food-token"]}"#,
                d,
                &secrets,
            )
            .unwrap_err(),
        );
        assert!(
            e.starts_with("JSON of the wrong shape (invalid type"),
            "{e}"
        );
        shown(
            parse_missing(br#"{"date": "food-token", "chat_ids": []}"#, d, &secrets).unwrap_err(),
        );
        shown(parse_menu(br#"{"date": "sk-key", "dishes": []}"#, d, &secrets).unwrap_err());
        shown(parse_completion(br#"{"error": "invalid key sk-key"}"#, &secrets).unwrap_err());
        // at the edge of the quoted part: no piece of the token either
        let body = format!("{} food-token", "x".repeat(QUOTE_CHARS - 5));
        let e = parse_missing(body.as_bytes(), d, &secrets).unwrap_err();
        assert!(!e.contains("food"), "{e}");
        // a secret containing another is hidden whole
        assert_eq!(redact("key abc-def", &["abc", "abc-def", ""]), "key ***");
    }

    #[test]
    fn endpoints_keep_the_base_path() {
        let d = date("2024-03-21");
        let base = Url::parse("http://h:1/api/").unwrap();
        assert_eq!(
            endpoint(&base, "/v1/menu", d).as_str(),
            "http://h:1/api/v1/menu?date=2024-03-21"
        );
        let base = Url::parse("http://h:1").unwrap();
        assert_eq!(
            endpoint(&base, "/v1/selections/missing", d).as_str(),
            "http://h:1/v1/selections/missing?date=2024-03-21"
        );
    }

    #[test]
    fn the_missing_answer_is_checked() {
        let d = date("2024-03-21");
        let ok = br#"{"date": "2024-03-21", "chat_ids": [3, 1, 3], "extra": true}"#;
        assert_eq!(parse_missing(ok, d, &[]).unwrap(), BTreeSet::from([1, 3]));
        let e = parse_missing(b"<html>oops</html>", d, &[]).unwrap_err();
        assert!(e.starts_with("something that is not JSON"), "{e}");
        assert!(e.contains("<html>oops</html>"), "{e}");
        let e = parse_missing(br#"{"users": [1]}"#, d, &[]).unwrap_err();
        assert!(
            e.starts_with("JSON of the wrong shape (missing field `date`"),
            "{e}"
        );
        let e = parse_missing(br#"{"date": "2024-03-21", "chat_ids": ["1"]}"#, d, &[]).unwrap_err();
        assert!(
            e.starts_with("JSON of the wrong shape (invalid type"),
            "{e}"
        );
        let e = parse_missing(br#"{"date": "2024-03-20", "chat_ids": []}"#, d, &[]).unwrap_err();
        assert_eq!(e, "for date 2024-03-20, but herald asked about 2024-03-21");
        let e = parse_missing(br#"{"date": "tomorrow", "chat_ids": []}"#, d, &[]).unwrap_err();
        assert!(e.contains("not YYYY-MM-DD"), "{e}");
        let long = format!("\"{}\"", "x".repeat(1000));
        let e = parse_missing(long.as_bytes(), d, &[]).unwrap_err();
        assert!(e.chars().count() < 2 * QUOTE_CHARS + 150, "{e}");
    }

    #[test]
    fn the_menu_and_the_completion_are_read() {
        let d = date("2024-03-21");
        let menu = parse_menu(
            br#"{"date": "2024-03-21", "dishes": [{"name": "Kebab"}, {"name": "Ash", "description": "soup"}]}"#,
            d,
            &[],
        )
        .unwrap();
        assert_eq!(menu[0].name, "Kebab");
        assert_eq!(menu[1].description.as_deref(), Some("soup"));
        assert!(parse_menu(br#"{"date": "2024-03-22", "dishes": []}"#, d, &[]).is_err());

        let answer = br#"{"choices": [{"message": {"role": "assistant", "content": "Kebab"}}]}"#;
        assert_eq!(parse_completion(answer, &[]).unwrap(), "Kebab");
        assert!(parse_completion(br#"{"choices": []}"#, &[]).is_err());
        assert!(
            parse_completion(br#"{"choices": [{"message": {"content": null}}]}"#, &[]).is_err()
        );
        assert!(parse_completion(b"upstream timeout", &[]).is_err());

        let request = completion_request("m", d, &menu);
        assert_eq!(request["model"], "m");
        let prompt = request["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.contains("- Kebab\n- Ash: soup\n"), "{prompt}");
        assert!(prompt.contains("2024-03-21"), "{prompt}");
    }

    #[test]
    fn a_recommendation_must_name_one_dish_on_the_menu() {
        let menu = menu();
        let pick = |answer: &str| pick_dish(answer, &menu).map(|d| d.name.as_str());
        assert_eq!(pick("Ghormeh Sabzi"), Some("Ghormeh Sabzi"));
        assert_eq!(pick("  ghormeh sabzi. "), Some("Ghormeh Sabzi"));
        assert_eq!(pick("**\"Ghormeh  Sabzi\"**"), Some("Ghormeh Sabzi"));
        assert_eq!(pick("I'd recommend Ghormeh Sabzi!"), Some("Ghormeh Sabzi"));
        // the longer name that contains the shorter one
        assert_eq!(
            pick("Try the rice with chicken."),
            Some("Rice with Chicken")
        );
        assert_eq!(pick("Rice"), Some("Rice"));
        // Arabic yeh and a space for the zero-width non-joiner
        assert_eq!(pick("قورمه سبزي"), Some("قورمه‌سبزی"));
        // nonsense, ambiguity, partial words
        assert_eq!(pick("Pizza"), None);
        assert_eq!(pick(""), None);
        assert_eq!(pick("Ghormeh Sabzi or Rice with Chicken"), None);
        assert_eq!(pick("The price is right"), None);
        assert_eq!(pick("Ghormeh"), None);
        assert_eq!(pick_dish("Rice", &[]), None);
    }

    /// Users 1-5 active (1 and 2 in pack "a"), 6 inactive.
    fn users() -> BTreeMap<i64, User> {
        (1..=6)
            .map(|chat_id| {
                let user = User {
                    chat_id,
                    name: format!("user {chat_id}"),
                    active: chat_id != 6,
                    packs: if chat_id <= 2 {
                        BTreeSet::from(["a".to_string()])
                    } else {
                        BTreeSet::new()
                    },
                };
                (chat_id, user)
            })
            .collect()
    }

    #[test]
    fn only_reported_targeted_known_and_active_users_are_reminded() {
        let users = users();
        let missing = BTreeSet::from([2, 4, 6, 99]);
        let to = |targets: Targets| recipients(&missing, &targets, &users).unwrap();
        // no targets: every active user
        assert_eq!(to(Targets::default()), vec![2, 4]);
        // an unknown chat included by id (a message job would reach it), an
        // inactive one and one not reported
        let include = |include: Vec<i64>| Targets {
            include,
            ..Targets::default()
        };
        assert_eq!(to(include(vec![2, 99])), vec![2]);
        assert_eq!(to(include(vec![99])), Vec::<i64>::new());
        assert_eq!(to(include(vec![1, 4, 6])), vec![4]);
        let packs = Targets {
            packs: vec!["a".into()],
            exclude: vec![1],
            ..Targets::default()
        };
        assert_eq!(to(packs), vec![2]);
        assert_eq!(
            recipients(&BTreeSet::new(), &Targets::default(), &users).unwrap(),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn without_any_known_user_a_report_of_users_fails_the_run() {
        let none = BTreeMap::new();
        let e = recipients(&BTreeSet::from([2, 4, 99]), &Targets::default(), &none).unwrap_err();
        assert!(
            e.starts_with(
                "the service reports 3 users without a selection but herald knows no users: "
            ),
            "{e}"
        );
        let e = recipients(&BTreeSet::from([2]), &Targets::default(), &none).unwrap_err();
        assert!(e.starts_with("the service reports 1 user without"), "{e}");
        // nobody to remind and nobody known: nothing wrong
        assert_eq!(
            recipients(&BTreeSet::new(), &Targets::default(), &none).unwrap(),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn reminders_are_rendered_per_user_and_escaped() {
        let d = date("2024-03-21");
        let out = render_reminders(DEFAULT_TEMPLATE, d, None, &[(1, "Sara"), (2, "")]).unwrap();
        assert_eq!(
            out[0].1,
            "Sara, you have not selected your food for tomorrow (2024-03-21) yet. \
             Please choose it in the food ordering system."
        );
        assert!(
            out[1].1.starts_with("You have not selected"),
            "{}",
            out[1].1
        );
        let out = render_reminders(
            DEFAULT_TEMPLATE,
            d,
            Some("Kebab & <Rice>"),
            &[(1, "<b>x</b>")],
        )
        .unwrap();
        assert!(
            out[0].1.starts_with("&lt;b&gt;x&lt;&#x2f;b&gt;, you"),
            "{}",
            out[0].1
        );
        assert!(
            out[0]
                .1
                .ends_with("\nSuggestion: <b>Kebab &amp; &lt;Rice&gt;</b>"),
            "{}",
            out[0].1
        );
        assert!(render_reminders("{{ \"a\" + 1 }}", d, None, &[(1, "")]).is_err());
    }
}
