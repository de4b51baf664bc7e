//! Real herald daemons for the tests of this folder: the `herald` binary
//! started as a process (`herald run --config`), signalled and read over
//! its HTTP API, as an operator would.

#![allow(dead_code)] // each test binary uses a part

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use herald_testkit::log_tail;

/// One daemon slot: the process running now, and its past incarnations'
/// logs.
pub struct Daemon {
    pub name: &'static str,
    pub config: PathBuf,
    pub http: u16,
    dir: PathBuf,
    child: Option<Child>,
    incarnation: usize,
}

impl Daemon {
    /// A daemon slot with its config written to `dir`; not started.
    pub fn new(name: &'static str, dir: &Path, config: &str, http: u16) -> Daemon {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("a config file");
        Daemon {
            name,
            config: path,
            http,
            dir: dir.to_path_buf(),
            child: None,
            incarnation: 0,
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir
            .join(format!("{}-{}.log", self.name, self.incarnation))
    }

    pub fn spawn(&mut self) {
        self.incarnation += 1;
        let log = std::fs::File::create(self.log()).expect("a log file");
        let mut cmd = herald_testkit::herald_command(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("herald starts"));
    }

    /// Panics if the daemon exited on its own.
    pub fn assert_running(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "daemon {} exited by itself ({status}); its log:\n{}",
                self.name,
                log_tail(&self.log())
            );
        }
    }

    /// SIGKILL; checks it was the kill that ended it.
    pub fn kill(&mut self) {
        self.assert_running();
        let Some(mut child) = self.child.take() else {
            return;
        };
        child.kill().expect("SIGKILL sent");
        let status = child.wait().expect("reaped");
        assert_eq!(status.signal(), Some(9), "{} ended by {status}", self.name);
    }

    /// SIGTERM; the exit code (None: ended by a signal).
    pub async fn terminate(&mut self) -> Option<i32> {
        self.assert_running();
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait for herald") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "daemon {} did not exit within 60 s of SIGTERM; its log:\n{}",
                    self.name,
                    log_tail(&self.log())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A counter's value from `/metrics` (0 if absent).
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.http);
        let Ok(response) = client.get(&url).send().await else {
            return 0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until `/readyz` says `mode`.
    pub async fn wait_for_mode(&mut self, client: &reqwest::Client, mode: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            let url = format!("http://127.0.0.1:{}/readyz", self.http);
            if let Ok(response) = client.get(&url).send().await
                && let Ok(body) = response.json::<serde_json::Value>().await
                && body["mode"] == mode
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} not {mode} within {within:?}; its log:\n{}",
                self.name,
                log_tail(&self.log())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Daemon {
    /// SIGSTOP: the process stops where it is (timers, sockets and all)
    /// until [`Daemon::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Daemon::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let sent = Command::new("kill")
            .args([which, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {which} {}", self.name);
    }

    /// `/readyz` as JSON, if it answers.
    pub async fn ready(&self, client: &reqwest::Client) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/readyz", self.http);
        client.get(&url).send().await.ok()?.json().await.ok()
    }

    /// Waits until this daemon's heartbeat sees `n` daemons alive.
    pub async fn wait_for_peers(&mut self, client: &reqwest::Client, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            if let Some(body) = self.ready(client).await
                && body["peers"].as_array().is_some_and(|p| p.len() == n)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} did not see {n} daemons within {within:?}; its log:\n{}",
                self.name,
                log_tail(&self.log())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// This daemon's id among those sharing Redis (from `/readyz`).
    pub async fn id(&self, client: &reqwest::Client) -> String {
        let body = self.ready(client).await.expect("/readyz answers");
        body["daemon"].as_str().expect("a daemon id").to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The whole-second tick at or after `t`.
pub fn ceil_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t);
    if floor == t {
        t
    } else {
        floor + TimeDelta::seconds(1)
    }
}

/// What a checker found wrong with a stretch of every-second ticks.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Ticks checked.
    pub ticks: usize,
    /// Ticks that ran (a message reached the job's chat).
    pub ran: usize,
    /// Ticks recorded skipped (and not run).
    pub skipped: usize,
    /// Ticks whose message arrived more than once.
    pub twice: Vec<String>,
    /// Ticks that ran and were also recorded skipped.
    pub ran_and_skipped: Vec<String>,
    /// Ticks neither run nor recorded skipped.
    pub lost: Vec<String>,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.twice.is_empty() && self.ran_and_skipped.is_empty() && self.lost.is_empty()
    }
}

/// Judges every-second message jobs over `[from, to]` by what an operator
/// sees: `sent(job, tick)` is how often the tick's message reached the
/// job's chat, `skips` the skipped-tick entries in Redis. Every tick must
/// have run once or been recorded skipped, never both, never twice.
pub fn judge(
    jobs: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    sent: impl Fn(&str, DateTime<Utc>) -> usize,
    skips: &[herald_actors::record::SkippedTicks],
) -> Verdict {
    let mut verdict = Verdict::default();
    for job in jobs {
        let mut at = ceil_second(from);
        while at <= to {
            let name = format!("{job}@{}", at.format("%H:%M:%S"));
            let n = sent(job, at);
            let skipped = skips
                .iter()
                .any(|s| s.job_id == *job && s.first <= at && at <= s.last);
            verdict.ticks += 1;
            match (n, skipped) {
                (0, false) => verdict.lost.push(name),
                (0, true) => verdict.skipped += 1,
                (n, skipped) => {
                    verdict.ran += 1;
                    if n > 1 {
                        verdict.twice.push(format!("{name} x{n}"));
                    }
                    if skipped {
                        verdict.ran_and_skipped.push(name);
                    }
                }
            }
            at += TimeDelta::seconds(1);
        }
    }
    verdict
}

/// The config of a test daemon: Redis, the fake Bot API, its HTTP port,
/// and every-second jobs, each messaging its own chats (so a message
/// names one tick). One builder for every multi-daemon test.
pub struct DaemonConfig {
    head: String,
    redis: Vec<String>,
    jobs: String,
}

impl DaemonConfig {
    /// `bot`: the fake token's secret part, naming the test in its logs.
    pub fn new(redis_url: &str, telegram_url: &str, http: u16, bot: &str) -> DaemonConfig {
        DaemonConfig {
            head: format!(
                "[scheduler]\nshutdown_grace = \"5s\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n"
            ),
            redis: vec![format!("url = \"{redis_url}\"")],
            jobs: format!("\n[telegram]\ntoken = \"123456:{bot}\"\napi_url = \"{telegram_url}\"\n"),
        }
    }

    /// Guards the admin API with this bearer token.
    pub fn admin_token(mut self, token: &str) -> DaemonConfig {
        self.head.push_str(&format!("admin_token = \"{token}\"\n"));
        self
    }

    /// A line of the `[redis]` section, e.g. `visibility_timeout = "3s"`.
    pub fn redis(mut self, line: &str) -> DaemonConfig {
        self.redis.push(line.to_string());
        self
    }

    /// An every-second job messaging `chats`, its message naming the run;
    /// `extra`: more lines of its table (policies, timeouts).
    pub fn every_second_job(self, id: &str, chats: &[i64], extra: &[&str]) -> DaemonConfig {
        self.job(id, "* * * * * *", "tick {{ run_id }}", chats, extra)
    }

    /// A job messaging `chats`; `extra`: more lines of its table.
    pub fn job(
        mut self,
        id: &str,
        schedule: &str,
        template: &str,
        chats: &[i64],
        extra: &[&str],
    ) -> DaemonConfig {
        let include = chats
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.jobs.push_str(&format!(
            "\n[[jobs]]\nid = \"{id}\"\nschedule = \"{schedule}\"\ntemplate = \"{template}\"\n"
        ));
        for line in extra {
            self.jobs.push_str(line);
            self.jobs.push('\n');
        }
        self.jobs.push_str(&format!("include = [{include}]\n"));
        self
    }

    pub fn text(&self) -> String {
        format!(
            "{}\n[redis]\n{}\n{}",
            self.head,
            self.redis.join("\n"),
            self.jobs
        )
    }
}
