//! Test support for herald: real servers on free loopback ports.
//!
//! * [`RedisServer`]: a real `redis-server` (no persistence, unless started
//!   with [`RedisServer::start_persistent`]), which a test can stop,
//!   restart on the same port, or freeze (SIGSTOP: the port
//!   accepts connections and nothing answers) and thaw; optionally with a
//!   password ([`RedisServer::start_with_password`]).
//! * [`food`]: a fake food ordering service and an OpenAI-compatible
//!   completions API, for the food reminder.

pub mod food;
pub mod relay;
pub mod telegram;
pub mod webhook;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on 127.0.0.1 and a free port, killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// `--requirepass`, if any.
    password: Option<String>,
    /// Append-only file on: data outlives a stop and start.
    persistent: bool,
}

/// Every environment variable herald reads for its settings and secrets.
pub const HERALD_ENV: &[&str] = &[
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "TELEGRAM_BOT_TOKEN",
    "HERALD_ADMIN_TOKEN",
    "HERALD_HTTP_LISTEN",
    "FOOD_SERVICE_URL",
    "FOOD_SERVICE_TOKEN",
    "HERALD_RECOMMENDATION_API_KEY",
];

/// A `herald` command that does not inherit the test environment's herald
/// settings (a machine's REDIS_URL, a developer's token): a test sets
/// what it means to.
pub fn herald_command(binary: &str) -> Command {
    let mut cmd = Command::new(binary);
    for var in HERALD_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_inner(None)
    }

    /// Starts a server that requires `password` (`--requirepass`): a client
    /// must `AUTH` before any other command. [`RedisServer::url`] then
    /// carries the password (not percent-encoded: use URL-safe characters);
    /// a restart keeps it.
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_inner(Some(password.to_string()))
    }

    /// Starts a server with the append-only file on (`appendfsync
    /// everysec`, Redis's recommended setting), as a production Redis
    /// holding herald's state runs: [`RedisServer::shut_down`] then
    /// [`RedisServer::start_again`] keeps the data.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(None, true)
    }

    fn start_inner(password: Option<String>) -> RedisServer {
        Self::start_with(password, false)
    }

    fn start_with(password: Option<String>, persistent: bool) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("herald-redis-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            password,
            persistent,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.persistent { "yes" } else { "no" },
                "--dir",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `redis://:PASSWORD@127.0.0.1:PORT` for
    /// a server started with a password.
    pub fn url(&self) -> String {
        match &self.password {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
        }
    }

    /// Sends PING over a raw socket (after `AUTH` when the server has a
    /// password); true on +PONG.
    pub fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let Some(password) = &self.password else {
            if stream.write_all(b"PING\r\n").is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            return matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"));
        };
        // AUTH and PING as RESP arrays (the password may hold spaces).
        let mut request = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", password.len()).into_bytes();
        request.extend_from_slice(password.as_bytes());
        request.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        if stream.write_all(&request).is_err() {
            return false;
        }
        // "+OK\r\n+PONG\r\n", possibly in several reads.
        let mut answer = Vec::new();
        let mut buf = [0u8; 64];
        while answer.len() < 64 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.starts_with(b"+OK\r\n+PONG") {
                return true;
            }
            if answer.starts_with(b"-") || answer.windows(3).any(|w| w == b"\r\n-") {
                return false;
            }
        }
        false
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the way an operator does (SIGTERM: it writes what
    /// it holds, then exits) and waits for it to exit.
    pub fn shut_down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped server again on the same port and directory (with
    /// the append-only file of [`RedisServer::start_persistent`], its data).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// Kills the server and starts it again on the same port with no data
    /// at all (its append-only file deleted): a Redis that lost its disk,
    /// or a replica promoted empty.
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::create_dir_all(&self.dir);
        self.spawn();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// SIGSTOP: connections are accepted by the kernel, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.thaw();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last 40 lines of a log file, for failure messages.
pub fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
