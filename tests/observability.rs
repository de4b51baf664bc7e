//! herald's metrics, Grafana dashboard and Prometheus alert rules, checked
//! with the real Prometheus tools (Debian's `prometheus` package, which
//! `scripts/test` installs; these tests fail without it):
//!
//! * the alert rules pass `promtool check rules` and their unit tests
//!   (`promtool test rules`), and the example Prometheus config passes
//!   `promtool check config`;
//! * the dashboard and the rules name only metrics of the contract in
//!   `actors/src/telemetry.rs`, and the dashboard shows every one of them;
//!   herald's jobs are `job_id` in them, never `job` (Prometheus's own
//!   label: the scrape job's name);
//! * a running daemon's `/metrics` is clean under `promtool check metrics`;
//! * the proof: a real Prometheus scrapes a real daemon (real redis-server,
//!   the fake Bot API, a webhook receiver) running a small workload, and
//!   every query of every dashboard panel returns series from it, scraped
//!   without `honor_labels`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::telegram::{FakeTelegram, Fault};
use herald_testkit::webhook::WebhookReceiver;
use herald_testkit::{RedisServer, free_port};
use serde_json::Value;

/// The job whose id stands in for the dashboard's `$job`.
const PER_JOB: &str = "greet";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A child process killed and reaped when dropped, so a failing test
/// leaves nothing running.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(name: &'static str, cmd: &mut Command) -> Guard {
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{name} does not start ({e}); scripts/test installs it (Debian package prometheus)"
            )
        });
        Guard { name, child }
    }

    /// Panics, naming the process, if it has exited.
    fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                tail(log)
            );
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use herald_testkit::log_tail as tail;

/// Runs `promtool` with `args` (and `stdin`, if any).
fn promtool(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool does not run ({e}); scripts/test installs it (Debian package prometheus)"
            )
        });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("promtool's stdin");
        pipe.write_all(input).expect("write to promtool's stdin");
    }
    child.wait_with_output().expect("promtool finishes")
}

fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    for args in [
        &["check", "rules", "grafana/alerts/herald.rules.yml"][..],
        &["test", "rules", "grafana/alerts/herald.rules.test.yml"][..],
        &["check", "config", "grafana/prometheus.yml"][..],
    ] {
        let out = promtool(args, None);
        let text = output_text(&out);
        assert!(
            out.status.success(),
            "promtool {} failed:\n{text}",
            args.join(" ")
        );
        assert!(
            out.stderr.is_empty() && !text.contains("WARNING") && !text.contains("FAILED"),
            "promtool {} is not clean:\n{text}",
            args.join(" ")
        );
    }
}

// ------------------------------------------------------------- the contract

/// Every metric name in `actors/src/telemetry.rs` (its `pub const NAME:
/// &str = "herald_..."` lines).
fn contract() -> BTreeSet<String> {
    let source = read("actors/src/telemetry.rs");
    let names: BTreeSet<String> = source
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const ") && l.contains(": &str = \"herald_"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    assert!(
        names.len() >= 20,
        "found only {} metric names in actors/src/telemetry.rs: {names:?}",
        names.len()
    );
    names
}

/// The metric a series name belongs to: a histogram's `_bucket`, `_sum`
/// and `_count` series belong to the histogram.
fn metric_of(series: &str) -> String {
    let histograms: Vec<&str> = herald_actors::telemetry::HISTOGRAMS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix)
            && histograms.contains(&base)
        {
            return base.to_string();
        }
    }
    series.to_string()
}

/// Every `herald_...` identifier in `text`.
fn herald_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("herald_") {
        let start = i + found;
        let boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// The first `job` label in a PromQL expression (`by (job)`,
/// `{job=~...}`, `on (job, ...)`), with what follows it; the `$job`
/// variable is not one.
fn bare_job_label(expr: &str) -> Option<String> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut from = 0;
    while let Some(found) = expr[from..].find("job") {
        let start = from + found;
        let end = start + 3;
        from = end;
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| ident(b) || b == b'$')
            || bytes.get(end).is_some_and(|b| ident(*b))
        {
            continue;
        }
        let rest = &expr[end..];
        return Some(format!("job{}", &rest[..rest.len().min(12)]));
    }
    None
}

/// The `expr` of every rule in a rules file: `expr: ...` on one line, or
/// a block scalar (`expr: |`) on the lines indented below it.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join("\n").trim().to_string());
        } else {
            exprs.push(value.to_string());
        }
    }
    assert!(exprs.len() >= 10, "found only {} rule exprs", exprs.len());
    exprs
}

/// One query of one panel.
struct PanelQuery {
    panel: String,
    ref_id: String,
    expr: String,
}

/// Every target of every panel, panels in rows (collapsed or not) included.
fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
            if panel["type"] == "row" {
                if let Some(nested) = panel["panels"].as_array() {
                    walk(nested, out);
                }
                continue;
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel {title:?} has no queries");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or("").trim().to_string();
                assert!(
                    !expr.is_empty(),
                    "panel {title:?} has a target without expr: {target}"
                );
                out.push(PanelQuery {
                    panel: title.clone(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                    expr,
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .expect("the dashboard's panels"),
        &mut out,
    );
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/dashboards/herald.json"))
        .expect("grafana/dashboards/herald.json is JSON")
}

/// The dashboard and the rules use only the contract's metrics, the
/// dashboard shows every metric of it, and the dashboard, its data source
/// variable and the provisioning files agree.
#[test]
fn dashboard_and_rules_name_only_contract_metrics() {
    let contract = contract();
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "herald", "the dashboard's uid");
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );

    let queries = panel_queries(&dashboard);
    let mut shown = BTreeSet::new();
    let mut unknown = Vec::new();
    for q in &queries {
        for name in herald_names(&q.expr) {
            let metric = metric_of(&name);
            if contract.contains(&metric) {
                shown.insert(metric);
            } else {
                unknown.push(format!("panel {:?} {}: {name}", q.panel, q.ref_id));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "dashboard queries name metrics that are not in actors/src/telemetry.rs:\n{}",
        unknown.join("\n")
    );
    let missing: Vec<&String> = contract.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "metrics of the contract no dashboard panel shows: {missing:?}"
    );

    let rules = read("grafana/alerts/herald.rules.yml");
    let unknown: Vec<String> = herald_names(&rules)
        .into_iter()
        .filter(|n| !contract.contains(&metric_of(n)))
        .collect();
    assert!(
        unknown.is_empty(),
        "alert rules name metrics that are not in actors/src/telemetry.rs: {unknown:?}"
    );

    // Panel ids are unique; every panel and target uses the data source
    // variable (or the provisioned uid).
    let mut ids = BTreeSet::new();
    let mut all_panels: Vec<&Value> = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        all_panels.push(p);
        all_panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    for p in &all_panels {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        if p["type"] == "row" {
            continue;
        }
        let mut sources = vec![&p["datasource"]];
        sources.extend(
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        );
        for ds in sources {
            assert!(
                ds["type"] == "prometheus"
                    && (ds["uid"] == "${datasource}" || ds["uid"] == "prometheus"),
                "panel {:?} uses data source {ds}",
                p["title"]
            );
        }
    }

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| -> &Value {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name:?}"))
    };
    let ds = variable("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(
        ds["current"]["value"], "prometheus",
        "the data source variable defaults to the provisioned uid"
    );
    let job = variable("job");
    assert_eq!(
        job["definition"], "label_values(herald_runs_total, job_id)",
        "the job variable lists herald's job ids"
    );
    assert_eq!(job["query"]["query"], job["definition"]);

    // herald's jobs are `job_id`: `job` is the scrape job's name, so a
    // query grouping or filtering by `job` would mix herald's jobs up.
    let mut wrong = Vec::new();
    for q in &queries {
        if let Some(token) = bare_job_label(&q.expr) {
            wrong.push(format!("panel {:?} {}: {token}", q.panel, q.ref_id));
        }
        // `$job` (a job id) is only ever matched against `job_id`.
        if q.expr.matches("$job").count() != q.expr.matches("job_id=~\"$job\"").count() {
            wrong.push(format!(
                "panel {:?} {}: $job not as job_id=~\"$job\": {}",
                q.panel, q.ref_id, q.expr
            ));
        }
    }
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or("");
            if legend.contains("{{job}}") || legend.contains("{{ job }}") {
                wrong.push(format!("panel {:?}: legend {legend:?}", panel["title"]));
            }
        }
    }
    for expr in rule_exprs(&rules) {
        if let Some(token) = bare_job_label(&expr) {
            wrong.push(format!("alert rule expr {token}: {expr}"));
        }
    }
    for needle in ["$labels.job }", "$labels.job}"] {
        if rules.contains(needle) {
            wrong.push(format!("alert rules: {needle:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "herald's jobs must be job_id, not job:\n{}",
        wrong.join("\n")
    );

    let datasources = read("grafana/provisioning/datasources/prometheus.yaml");
    for needle in [
        "type: prometheus",
        "uid: prometheus",
        "url: http://localhost:9090",
    ] {
        assert!(
            datasources.contains(needle),
            "the datasource provisioning file lacks {needle:?}"
        );
    }
    assert!(
        !read("grafana/prometheus.yml").contains("honor_labels:"),
        "grafana/prometheus.yml needs no honor_labels: herald's jobs are job_id"
    );
    let providers = read("grafana/provisioning/dashboards/herald.yaml");
    for needle in ["type: file", "path:"] {
        assert!(
            providers.contains(needle),
            "the dashboard provider lacks {needle:?}"
        );
    }
}

// ------------------------------------------------------------- a workload

/// A daemon with a workload: redis-server, the fake Bot API, a webhook
/// receiver and herald itself, all on loopback; stopped when dropped.
struct Workload {
    herald: Guard,
    telegram: FakeTelegram,
    webhook: WebhookReceiver,
    http: String,
    log: PathBuf,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
}

impl Workload {
    /// Jobs every second: `greet` messages three users (one of them answers
    /// 429 once), a chat that does not exist, the owner chat and a webhook;
    /// `blocked` messages a user who blocked the bot; `broken` fails every
    /// attempt (its template reads an undefined value) and is retried once.
    async fn start() -> Workload {
        let redis = RedisServer::start();
        let telegram = FakeTelegram::start().await;
        let webhook = WebhookReceiver::start("observability-secret").await;
        telegram.fail_next(101, Fault::RetryAfter(1));
        telegram.fail_always(106, Fault::BadRequest("Bad Request: chat not found".into()));
        telegram.fail_always(
            105,
            Fault::Forbidden("Forbidden: bot was blocked by the user".into()),
        );
        let http = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("herald.toml");
        std::fs::write(
            &config,
            format!(
                r#"[scheduler]
timezone = "UTC"

[http]
listen = "{http}"

[telegram]
token = "123456:observability-test-token"
api_url = "{api}"
save_chat = 900

[[webhooks]]
name = "recv"
url = "{hook}"
secret = "observability-secret"
timeout = "2s"
max_attempts = 2

[[jobs]]
id = "{PER_JOB}"
schedule = "* * * * * *"
template = "hello from {{{{ job_id }}}} at {{{{ scheduled_at }}}}"
include = [101, 102, 103, 106]
save = true
webhooks = ["recv"]

[[jobs]]
id = "blocked"
schedule = "*/2 * * * * *"
template = "you blocked me"
include = [105]

[[jobs]]
id = "broken"
schedule = "*/2 * * * * *"
template = "{{{{ nosuch.attr }}}}"
include = [104]
max_attempts = 2
retry_backoff = "1s"
"#,
                api = telegram.api_url(),
                hook = webhook.url("/herald"),
            ),
        )
        .expect("write the config");
        let log = dir.path().join("herald.log");
        let mut cmd = herald_testkit::herald_command(env!("CARGO_BIN_EXE_herald"));
        cmd.current_dir(dir.path())
            .args(["run", "--config"])
            .arg(&config)
            .env("REDIS_URL", redis.url())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("herald's log file"));
        let mut herald = Guard::spawn("herald", &mut cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&http).is_err() {
            herald.assert_running(&log);
            assert!(
                Instant::now() < deadline,
                "herald's HTTP listener {http} did not come up in 20 s; its log:\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Workload {
            herald,
            telegram,
            webhook,
            http,
            log,
            _redis: redis,
            _dir: dir,
        }
    }

    /// Waits until every kind of traffic has happened at least `n` times:
    /// Telegram messages, webhook posts, failed `broken` runs.
    async fn wait_for_traffic(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.herald.assert_running(&self.log);
            let sent = self.telegram.sent().len();
            let posted = self.webhook.received().len();
            let failed = self.failed_runs("broken").await;
            if sent >= n && posted >= n && failed >= 1 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "in 30 s: {sent} Telegram messages, {posted} webhook posts, {failed} FAILED broken runs \
                 (wanted {n}, {n}, 1); herald's log:\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// FAILED runs of `job`, from the admin API (open on loopback: no
    /// token is configured).
    async fn failed_runs(&self, job: &str) -> usize {
        let url = format!(
            "http://{}/api/executions?job={job}&status=FAILED",
            self.http
        );
        let Ok(response) = reqwest::get(url).await else {
            return 0;
        };
        let body: Value = response.json().await.unwrap_or(Value::Null);
        body["executions"].as_array().map_or(0, Vec::len)
    }

    async fn metrics(&self) -> String {
        let response = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics status");
        response.text().await.expect("the /metrics body")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_is_clean_under_promtool_check_metrics() {
    let mut workload = Workload::start().await;
    workload.wait_for_traffic(6).await;
    let text = workload.metrics().await;
    let out = promtool(&["check", "metrics"], Some(text.as_bytes()));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics is not clean:\n{}\n--- /metrics was:\n{text}",
        output_text(&out)
    );
    // The contract's histograms are exported as histograms (with buckets),
    // not summaries, once they have a sample.
    for (name, _) in herald_actors::telemetry::HISTOGRAMS {
        let typed = format!("# TYPE {name} ");
        if let Some(line) = text.lines().find(|l| l.starts_with(&typed)) {
            assert_eq!(
                line,
                format!("# TYPE {name} histogram"),
                "{name} is not a histogram"
            );
        }
    }
}

// ------------------------------------------------------------- the proof

/// A Prometheus on a free loopback port, scraping one target every second
/// with herald's alert rules loaded; killed when dropped.
struct Prometheus {
    guard: Guard,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let rules = repo().join("grafana/alerts/herald.rules.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: herald\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = dir.path().join("prometheus.log");
        let mut guard = Guard::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("prometheus's log file")),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            guard.assert_running(&log);
            if let Ok(r) = reqwest::get(format!("{base}/-/ready")).await
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready in 20 s; its log:\n{}",
                tail(&log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Prometheus {
            guard,
            base,
            log,
            _dir: dir,
        }
    }

    /// `GET path` with `params`; the `data` of a `success` answer, or
    /// the error Prometheus gave.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("answer is not JSON: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// The value of the first series `expr` returns.
    async fn value(&self, expr: &str) -> Result<f64, String> {
        let series = self.query(expr).await?;
        series
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{expr}: no value in {series:?}"))
    }

    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") | Some("string") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// Waits until Prometheus has scraped `target` successfully `scrapes`
    /// times.
    async fn wait_for_scrapes(&mut self, scrapes: u32) {
        let deadline = Instant::now() + Duration::from_secs(scrapes as u64 + 30);
        loop {
            self.guard.assert_running(&self.log);
            let done = self
                .query("sum(sum_over_time(up{job=\"herald\"}[5m]))")
                .await
                .ok()
                .and_then(|r| {
                    r.first()
                        .and_then(|s| s["value"][1].as_str().map(str::to_string))
                })
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if done >= scrapes as f64 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus scraped herald successfully {done} times, wanted {scrapes}; its log:\n{}",
                tail(&self.log)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What Grafana would put in for the dashboard's variables.
fn substitute(expr: &str, instance: &str) -> String {
    let mut out = expr.to_string();
    for (var, value) in [
        ("job", PER_JOB),
        ("instance", instance),
        ("__rate_interval", "30s"),
        ("__interval_ms", "5000"),
        ("__interval", "5s"),
        ("__range_s", "60"),
        ("__range", "1m"),
    ] {
        out = out
            .replace(&format!("${{{var}}}"), value)
            .replace(&format!("[[{var}]]"), value)
            .replace(&format!("${var}"), value);
    }
    out
}

/// The proof that the dashboard is backed by what herald exports: a real
/// Prometheus scrapes a real daemon running a workload, and every panel
/// query (variables filled in as Grafana would) returns series; so do the
/// template variables, and every alert rule evaluates without error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_real_prometheus() {
    let started = Instant::now();
    let mut workload = Workload::start().await;
    let mut prometheus = Prometheus::start(&workload.http).await;
    // Twelve scrapes a second apart: enough for rate() over 30 s.
    prometheus.wait_for_scrapes(12).await;
    workload.wait_for_traffic(6).await;
    workload.herald.assert_running(&workload.log);

    let dashboard = dashboard();
    let instance = workload.http.clone();

    // Template variables: label_values(metric, label) lists something, and
    // `job` lists the workload's jobs.
    let mut problems = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(definition) = variable["definition"].as_str() else {
            continue;
        };
        let Some(args) = definition
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
        else {
            problems.push(format!(
                "variable {}: unexpected query {definition:?}",
                variable["name"]
            ));
            continue;
        };
        let (metric, label) = args.split_once(',').expect("label_values(metric, label)");
        let values = prometheus
            .api(
                &format!("/api/v1/label/{}/values", label.trim()),
                &[("match[]", metric.trim())],
            )
            .await
            .map(|v| v.as_array().cloned().unwrap_or_default());
        match values {
            Ok(values) if variable["name"] == "job" => {
                for job in [PER_JOB, "broken", "blocked"] {
                    if !values.iter().any(|v| v == job) {
                        problems.push(format!(
                            "variable job ({definition}) lacks {job:?}: {values:?}"
                        ));
                    }
                }
            }
            Ok(values) if values.is_empty() => problems.push(format!(
                "variable {} ({definition}) has no values",
                variable["name"]
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("variable {} ({definition}): {e}", variable["name"])),
        }
    }

    // Scraped without honor_labels: `job` is the scrape job's name on every
    // herald series, herald's jobs are `job_id`, nothing was renamed
    // `exported_job`.
    match prometheus
        .query("count by (job) ({__name__=~\"herald_.+\"})")
        .await
    {
        Ok(series) if series.len() == 1 && series[0]["metric"]["job"] == "herald" => {}
        other => problems.push(format!(
            "herald's series are not all job=\"herald\" (the scrape job): {other:?}"
        )),
    }
    for (expr, want) in [
        ("count({__name__=~\"herald_.+\", exported_job!=\"\"})", 0),
        (
            "herald_runs_total{job=\"herald\", job_id=\"greet\", status=\"success\"}",
            1,
        ),
    ] {
        match prometheus.query(expr).await {
            Ok(series) if series.len() == want => {}
            other => problems.push(format!("{expr}: wanted {want} series, got {other:?}")),
        }
    }

    // The success due time: `greet` succeeds every second, so its next
    // success is due about now; `broken` never succeeds, so it has been
    // due since its first fire after start-up.
    let overdue = |job: &str| {
        format!(
            "time() - max by (job_id) (herald_job_success_due_timestamp_seconds{{job_id=\"{job}\"}} > 0)"
        )
    };
    match (
        prometheus.value(&overdue(PER_JOB)).await,
        prometheus.value(&overdue("broken")).await,
    ) {
        (Ok(greet), Ok(broken)) if greet < 10.0 && broken > greet => {
            eprintln!("ok  overdue: {PER_JOB} {greet:.1} s, broken {broken:.1} s");
        }
        other => problems.push(format!(
            "success due time: wanted {PER_JOB} overdue under 10 s and broken more, got {other:?}"
        )),
    }

    let queries = panel_queries(&dashboard);
    let mut answered = 0;
    for q in &queries {
        let expr = substitute(&q.expr, &instance);
        let label = format!("panel {:?} {}: {expr}", q.panel, q.ref_id);
        if expr.contains('$') || expr.contains("[[") {
            problems.push(format!(
                "{label}\n    -> a variable this test does not know"
            ));
            continue;
        }
        match prometheus.query(&expr).await {
            Err(e) => problems.push(format!("{label}\n    -> error: {e}")),
            Ok(series) if series.is_empty() => problems.push(format!("{label}\n    -> no series")),
            Ok(series) => {
                let numbers: Vec<&str> = series
                    .iter()
                    .filter_map(|s| s["value"][1].as_str())
                    .collect();
                if !numbers.is_empty() && numbers.iter().all(|v| *v == "NaN") {
                    problems.push(format!(
                        "{label}\n    -> only NaN (the histogram or ratio has no samples): the panel would be empty"
                    ));
                } else {
                    answered += 1;
                    eprintln!("ok  {label} -> {} series", series.len());
                }
            }
        }
    }

    // Every alert rule evaluated without error against the real series.
    match prometheus.api("/api/v1/rules", &[]).await {
        Ok(data) => {
            for group in data["groups"].as_array().into_iter().flatten() {
                for rule in group["rules"].as_array().into_iter().flatten() {
                    if rule["health"] == "err" {
                        problems.push(format!(
                            "alert rule {}: {}",
                            rule["name"], rule["lastError"]
                        ));
                    }
                }
            }
        }
        Err(e) => problems.push(format!("GET /api/v1/rules: {e}")),
    }

    eprintln!(
        "{answered} of {} panel queries returned series, in {:.1} s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) with the dashboard against a real Prometheus scraping herald:\n{}\n\
         --- herald's /metrics:\n{}",
        problems.len(),
        problems.join("\n"),
        workload.metrics().await
    );
}
