//! The `herald` command line as a user meets it: output, exit codes, signals.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn herald() -> Command {
    let mut cmd = herald_testkit::herald_command(env!("CARGO_BIN_EXE_herald"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    // Hermetic: no Redis the machine may run; tests that want one set it.
    cmd.env(
        "REDIS_URL",
        format!("redis://127.0.0.1:{}", herald_testkit::free_port()),
    );
    // Each daemon its own admin API port: tests run in parallel.
    cmd.env(
        "HERALD_HTTP_LISTEN",
        format!("127.0.0.1:{}", herald_testkit::free_port()),
    );
    cmd
}

fn run(args: &[&str]) -> Output {
    herald().args(args).output().expect("herald runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn next_prints_rfc3339_with_offsets_across_a_gap() {
    let out = run(&[
        "next",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--after",
        "2021-03-13T12:00:00-05:00",
        "--count",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2021-03-14T03:00:00-04:00\n2021-03-15T02:30:00-04:00\n2021-03-16T02:30:00-04:00\n"
    );
}

#[test]
fn next_defaults_to_utc_five_lines_from_now() {
    let before = chrono::Utc::now();
    let out = run(&["next", "* * * * *"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<_> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5);
    let first = chrono::DateTime::parse_from_rfc3339(&lines[0]).expect("RFC 3339");
    assert!(lines[0].ends_with("+00:00"), "{}", lines[0]);
    assert!(first > before && first <= before + chrono::TimeDelta::seconds(61));
}

#[test]
fn next_rejects_bad_input_with_exit_2_and_names_the_fault() {
    for (args, message) in [
        (
            vec!["next", "61 * * * *"],
            "minute field: 61 is out of range 0-59",
        ),
        (
            vec!["next", "* * * * fri-mon"],
            "day-of-week field: range \"fri-mon\" runs backwards",
        ),
        (
            vec!["next", "@daily", "--tz", "Mars/Base"],
            "time zone: \"Mars/Base\" is not a known IANA time zone",
        ),
        (
            vec!["next", "@daily", "--after", "tomorrow"],
            "--after: \"tomorrow\" is not an RFC 3339 timestamp",
        ),
        (vec!["next", "@daily", "--count", "0"], "--count"),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}");
    }
}

#[test]
fn check_accepts_the_shipped_configs() {
    for path in ["config/herald.toml", "config/example.toml"] {
        let out = run(&["check", "--config", path]);
        assert_eq!(out.status.code(), Some(0), "{path}: {}", stderr(&out));
        assert!(
            stdout(&out).starts_with(&format!("{path}: ok: ")),
            "{}",
            stdout(&out)
        );
    }
    // the default path is config/herald.toml
    let out = run(&["check"]);
    assert!(
        stdout(&out).contains("1 job (heartbeat)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("telegram dry-run"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn check_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[scheduler]\ntimezone = \"Europe/Berln\"\n\n[[jobs]]\nid = \"x\"\nschedule = \"0 25 * * *\"\ntemplate = \"{{ a\"\ncolour = 1\n",
    )
    .unwrap();
    let out = herald()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let p = path.display();
    for line in [
        format!("{p}:8:1: jobs[0].colour: unknown key"),
        format!("{p}:2:12: scheduler.timezone: time zone: \"Europe/Berln\""),
        format!("{p}:6:12: jobs[0].schedule: hour field: 25 is out of range 0-23"),
        format!("{p}:7:12: jobs[0].template: template does not parse"),
        format!("4 problems in {p}"),
    ] {
        assert!(err.contains(&line), "missing {line:?} in\n{err}");
    }
}

#[test]
fn check_names_the_environment_variable_at_fault() {
    let out = herald()
        .args(["check"])
        .env_remove("REDIS_URL")
        .env("REDIS_PORT", "99999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("environment REDIS_PORT: \"99999\" is not a port number"),
        "{}",
        stderr(&out)
    );
}

/// Starts `herald run`, waits until it has logged `wanted` lines matching
/// `pattern` on stderr, and returns the child with what it logged.
fn start_run(config: &str, pattern: &str, wanted: usize) -> (Child, Vec<String>) {
    start_run_with(herald(), config, pattern, wanted)
}

fn start_run_with(
    mut cmd: Command,
    config: &str,
    pattern: &str,
    wanted: usize,
) -> (Child, Vec<String>) {
    let mut child = cmd
        .args(["run", "--config", config])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("herald run starts");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains(pattern))
        .count()
        < wanted
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no {pattern:?} within 20s; logged:\n{}", lines.join("\n"));
            }
        }
    }
    (child, lines)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_exit(mut child: Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald did not exit within 10s of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_fires_the_example_job_in_dry_run_and_exits_0_on_sigterm() {
    // The heartbeat fires every 10 s: wait for one run's outcome.
    let (child, lines) = start_run("config/herald.toml", "run finished", 1);
    let loaded = lines
        .iter()
        .find(|l| l.contains("job loaded"))
        .expect("job loaded line");
    assert!(
        loaded.contains("job=heartbeat") && loaded.contains("next_fire="),
        "{loaded}"
    );
    let sent = lines
        .iter()
        .find(|l| l.contains("dry-run: would send"))
        .expect("dry-run line");
    assert!(
        sent.contains("herald heartbeat: heartbeat fired at"),
        "{sent}"
    );
    let finished = lines.iter().find(|l| l.contains("run finished")).unwrap();
    assert!(
        finished.contains("job=heartbeat") && finished.contains("SUCCESS"),
        "{finished}"
    );
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child), Some(0));
}

/// `start_run` stops reading stderr once it has its line, so herald's
/// stderr is a closed pipe from then on: logging must not take it down.
#[test]
fn run_survives_a_closed_stderr_and_exits_0_on_sigint() {
    let (child, _) = start_run("config/herald.toml", "job loaded", 1);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, "-INT");
    assert_eq!(wait_exit(child), Some(0));
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[jobs]]\nid = \"x\"\nschedule = \"nope\"\ntemplate = \"\"\n",
    )
    .unwrap();
    let out = herald()
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("jobs[0].schedule"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_without_redis_is_offline_and_with_redis_online_and_records_runs_there() {
    let (child, lines) = start_run("config/herald.toml", "herald running", 1);
    let running = lines.iter().find(|l| l.contains("herald running")).unwrap();
    assert!(running.contains("mode=offline"), "{running}");
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child), Some(0));

    let server = herald_testkit::RedisServer::start();
    let mut cmd = herald();
    cmd.env("REDIS_URL", server.url());
    let (child, lines) = start_run_with(cmd, "config/herald.toml", "run finished", 1);
    let running = lines.iter().find(|l| l.contains("herald running")).unwrap();
    assert!(running.contains("mode=online"), "{running}");
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child), Some(0));
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &server.port().to_string(),
            "--raw",
            "ZRANGE",
            "herald:exec:recent",
            "0",
            "-1",
        ])
        .output()
        .expect("redis-cli runs");
    let ids = String::from_utf8_lossy(&out.stdout);
    assert!(
        ids.contains("heartbeat@"),
        "no heartbeat record in redis: {ids:?}"
    );
}

/// One HTTP/1.1 request over a plain TCP socket: (status, body).
fn http(addr: &str, request_line: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the admin API accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{request_line} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The daemon serves its admin API: `/api` needs the token from
/// HERALD_ADMIN_TOKEN, health is open, and the token appears in no log
/// line (debug level, the whole run) and no answer.
#[test]
fn run_serves_the_admin_api_with_the_token_and_never_logs_it() {
    let token = "cli-test-admin-token-5f1c2b";
    let addr = format!("127.0.0.1:{}", herald_testkit::free_port());
    let log = tempfile::NamedTempFile::new().expect("temp file");
    let child = herald()
        .env("HERALD_ADMIN_TOKEN", token)
        .env("HERALD_HTTP_LISTEN", &addr)
        .env("RUST_LOG", "debug")
        .args(["run", "--config", "config/herald.toml"])
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log file"))
        .spawn()
        .expect("herald run starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the admin API did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = http(&addr, "GET /healthz", None);
    assert_eq!((status, body.contains("alive")), (200, true), "{body}");
    let (status, body) = http(&addr, "GET /api/jobs", None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = http(&addr, "GET /api/jobs", Some("wrong-token-wrong-token"));
    assert_eq!(status, 401);
    let (status, body) = http(&addr, "GET /api/jobs", Some(token));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("heartbeat") && !body.contains(token));
    let (status, body) = http(&addr, "GET /", None);
    assert_eq!(status, 200);
    assert!(body.contains("<title>herald</title>"));
    signal(&child, "-TERM");
    assert_eq!(wait_exit(child), Some(0));
    let logged = std::fs::read_to_string(log.path()).expect("log read");
    assert!(logged.contains("admin API listening"), "{logged}");
    assert!(!logged.contains(token), "the token was logged:\n{logged}");
}
