//! A TCP relay on loopback in front of one upstream port, whose link a
//! test breaks on demand: the network faults of a Jepsen-style test,
//! for one daemon at a time (each daemon gets its own relay to Redis).
//!
//! * [`Link::Open`]: bytes flow both ways.
//! * [`Link::Cut`]: every connection through it is closed, and each new
//!   one as it comes (the peer sees a reset or EOF at once).
//! * [`Link::BlackHole`]: connections stay up and new ones are accepted,
//!   but nothing is delivered either way until the link changes (as when
//!   packets are dropped and TCP keeps retransmitting): the client sees
//!   only timeouts. What was held flows once it opens, unless cut.
//! * [`Link::Delay`]: each chunk is delivered this much after it came in
//!   (latency; chunks behind it do not wait for it on top).
//!
//! The relay runs on the current tokio runtime and stops with it, or when
//! dropped.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The state of a relay's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Open,
    Cut,
    BlackHole,
    Delay(Duration),
}

/// A relay on `127.0.0.1`, forwarding to `127.0.0.1:upstream`.
pub struct Relay {
    port: u16,
    link: watch::Sender<Link>,
    task: JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a relay port");
        let port = listener.local_addr().expect("relay address").port();
        let (link, watching) = watch::channel(Link::Open);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay_one(client, upstream, watching.clone()));
            }
        });
        Relay { port, link, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.link.send_replace(Link::Cut);
        self.task.abort();
    }
}

/// Waits while the link is a black hole; false once it is cut.
async fn passable(link: &mut watch::Receiver<Link>) -> bool {
    match link.wait_for(|l| *l != Link::BlackHole).await {
        Ok(l) => *l != Link::Cut,
        Err(_) => false,
    }
}

async fn relay_one(client: TcpStream, upstream: u16, mut link: watch::Receiver<Link>) {
    if !passable(&mut link).await {
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let mut cut = link.clone();
    tokio::select! {
        _ = pump(client_read, server_write, link.clone()) => {}
        _ = pump(server_read, client_write, link) => {}
        _ = cut.wait_for(|l| *l == Link::Cut) => {}
    }
}

/// Copies one direction, chunk by chunk, as the link allows. A delay is
/// latency: each chunk goes out that long after it came in, however many
/// follow it (a backlog that grows without bound would be a link slower
/// than its traffic, not a slow one).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<Link>) {
    let (chunks, mut received) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if chunks.send((buf[..n].to_vec(), Instant::now())).is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((chunk, came_in)) = received.recv().await {
            if !passable(&mut link).await {
                return;
            }
            let current = *link.borrow();
            if let Link::Delay(d) = current {
                tokio::time::sleep_until(came_in + d).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // The writer drains what was read before the reader saw the end.
    let (_, ()) = tokio::join!(read, write);
}
