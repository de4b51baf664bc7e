//! The Notifier actor: delivers what runs produce, at Telegram's limits.
//!
//! A run's messages arrive as one fan-out; the worker that ran the job is
//! already free. Telegram messages wait in a queue per chat: a chat is
//! served when its own limit (1/s for a private chat, 20/min for a group)
//! and the bot's overall limit (30/s) allow, round-robin over chats, with a
//! bounded number of requests in flight. Long messages go out as several
//! parts, in order. A 429 pauses the chat for its `retry_after`; 5xx and
//! network errors are retried with backoff; a 403 marks the user inactive;
//! a 400 fails that recipient with Telegram's words. Every part is claimed
//! in the delivery ledger before it is sent, so a retried or reclaimed run
//! never messages anyone twice. Webhooks go out beside, a few at a time.
//! Progress goes to the pool every second; the run's record completes when
//! the last message settles.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::AbortOnDrop;
use crate::delivery::{
    ChatRole, DeliveryReport, Message, MessageOutcome, SendResult, delivery_key, occurrences,
};
use crate::handler::BoxFuture;
use crate::handles::PoolHandle;
use crate::ledger::DeliveryLedger;
use crate::record::RunId;
use crate::redis_backend::DeliveryClaim;
use crate::telegram::html;
use crate::telemetry;
use crate::users::UserDirectory;
use crate::webhook::{WebhookEndpoint, WebhookOutcome, WebhookSender};

/// Sends one Telegram message part. Telegram (teloxide) in production;
/// dry-run without a token; test transports in tests.
pub trait Transport: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn send(&self, chat_id: i64, html: &str, silent: bool) -> BoxFuture<SendResult>;
}

/// Logs what it would send. The transport when no token is configured.
pub struct DryRun;

impl Transport for DryRun {
    fn name(&self) -> &'static str {
        "dry-run"
    }

    fn send(&self, chat_id: i64, html: &str, silent: bool) -> BoxFuture<SendResult> {
        tracing::info!(chat_id, silent, text = %html, "dry-run: would send");
        Box::pin(async { SendResult::Sent })
    }
}

/// Telegram's limits as herald keeps them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelegramLimits {
    /// Messages per second for the whole bot. Telegram says about 30;
    /// herald stays a hair under so request jitter never crosses it.
    pub overall_per_second: f64,
    /// At most one message per this interval to one private chat.
    pub private_chat_interval: Duration,
    /// Messages per minute to one group.
    pub group_per_minute: u32,
    /// Requests to Telegram in flight at once.
    pub max_in_flight: usize,
    /// Attempts of one part on 5xx or network errors.
    pub max_attempts: u32,
    /// First backoff after a 5xx or network error (doubles, capped at 30 s).
    pub backoff_base: Duration,
}

impl Default for TelegramLimits {
    fn default() -> Self {
        TelegramLimits {
            overall_per_second: 29.6,
            private_chat_interval: Duration::from_secs(1),
            group_per_minute: 20,
            max_in_flight: 64,
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
        }
    }
}

impl TelegramLimits {
    /// No limits: for dry-run and throughput measurements.
    pub fn unlimited() -> Self {
        TelegramLimits {
            overall_per_second: 1e9,
            private_chat_interval: Duration::from_nanos(1),
            group_per_minute: u32::MAX,
            max_in_flight: 256,
            ..TelegramLimits::default()
        }
    }
}

/// Webhook endpoints by name, and the client that posts to them.
pub struct Webhooks {
    pub sender: WebhookSender,
    pub endpoints: HashMap<String, WebhookEndpoint>,
}

/// Webhook posts in flight at once.
const MAX_WEBHOOKS_IN_FLIGHT: usize = 16;
/// How often a fan-out's progress goes to its run's record.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct NotifierArgs {
    pub transport: Arc<dyn Transport>,
    pub webhooks: Arc<Webhooks>,
    pub ledger: DeliveryLedger,
    pub limits: TelegramLimits,
    pub pool: PoolHandle,
    /// Where a 403 marks the user inactive.
    pub users: UserDirectory,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifierStats {
    pub fan_outs: usize,
    /// Messages waiting (all parts of a message count once).
    pub queued: usize,
    pub in_flight: usize,
}

pub enum NotifierMsg {
    /// A run's messages: deliver them, report progress and the end to the
    /// pool. A fan-out for a run already going on is ignored.
    FanOut {
        run_id: RunId,
        job_id: String,
        messages: Vec<Message>,
        /// The run came from the shared queue: a peer may take it over.
        shared: bool,
    },
    /// Which parts of a new fan-out went out before (reclaimed runs).
    Prechecked {
        run_id: RunId,
        sent: Vec<Vec<bool>>,
    },
    /// Send what the limits allow now.
    Pump,
    /// One send ended (`chat`: None for a webhook).
    Attempted {
        run_id: RunId,
        index: usize,
        chat: Option<i64>,
        result: Attempt,
    },
    Progress,
    /// Stop delivering for these runs (cancelled, or shutting down).
    Abandon(Vec<RunId>),
    /// Which of these runs have a fan-out here.
    Known(Vec<RunId>, RpcReplyPort<Vec<bool>>),
    Stats(RpcReplyPort<NotifierStats>),
}

/// How one send task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Telegram answered (or the request failed).
    Telegram(SendResult),
    /// The part was sent by an earlier attempt of the run.
    AlreadySent,
    /// Another send of the part started and never reported.
    InDoubt,
    /// A webhook post, after its own retries.
    Webhook(MessageOutcome),
    /// Offline, a part of a run from the shared queue: held until Redis
    /// is back (see `DeliveryClaim::Held`).
    Held,
}

struct FanOut {
    job_id: String,
    messages: Vec<Message>,
    /// Telegram parts per message (empty for webhooks).
    parts: Vec<Vec<String>>,
    /// Per message: earlier messages to the same recipient (its key).
    nth: Vec<usize>,
    report: DeliveryReport,
    /// Progress not yet reported.
    changed: bool,
    /// Whether the parts sent before this fan-out began (an earlier
    /// attempt of the run) have been looked up and settled.
    prechecked: bool,
    /// The run came from the shared queue (see `DeliveryClaim::Held`).
    shared: bool,
}

/// One message in a chat's queue.
struct Item {
    run_id: RunId,
    index: usize,
    part: usize,
    attempts: u32,
    /// The chat's own limit already allowed this send.
    chat_permit: bool,
}

pub struct Notifier;

pub struct NotifierState {
    args: NotifierArgs,
    fan_outs: HashMap<RunId, FanOut>,
    chats: HashMap<i64, VecDeque<Item>>,
    ready: VecDeque<i64>,
    in_ready: HashSet<i64>,
    /// Chats paused (429, backoff, their own limit) until a time.
    paused: HashMap<i64, Instant>,
    wake_heap: BinaryHeap<Reverse<(Instant, i64)>>,
    /// Chats with a send in flight (parts of one chat go out in order).
    busy: HashSet<i64>,
    in_flight: usize,
    webhook_queue: VecDeque<Item>,
    /// Parts held while Redis is away (chat, or None for a webhook): put
    /// back first in their queues once it answers.
    held: Vec<(Option<i64>, Item)>,
    webhooks_in_flight: usize,
    overall: Pacer,
    private: DefaultKeyedRateLimiter<i64>,
    groups: DefaultKeyedRateLimiter<i64>,
    clock: DefaultClock,
    pump_timer: Option<(Instant, AbortOnDrop)>,
    _progress: AbortOnDrop,
    /// Runs whose fan-out ended lately: still "known", so the pool, whose
    /// FanOutDone may be in flight, does not hand them over again.
    finished: VecDeque<RunId>,
    finished_set: HashSet<RunId>,
}

/// Finished fan-outs remembered for the pool's checks.
const REMEMBER_FINISHED: usize = 10_000;

/// The bot's overall limit as a fixed timetable of send slots, one per
/// `period`. A send that goes late (timer granularity, a busy runtime)
/// does not move the later slots, so lateness never accumulates; after
/// an idle spell the timetable restarts from now, so there is no burst.
/// It also keeps the times of the last sends: a slot is taken only when
/// fewer than `per_window` sends happened in the `window` before it, for a
/// send taken late (a busy machine) and the on-time ones after it would
/// otherwise fit 31 sends into one second, which a strict sliding-window
/// limit refuses with a 429.
/// governor's GCRA does not fit here: with a burst of 1 every late wake-up
/// is lost for good (measured: 28.6/s instead of 29.7), and with a larger
/// burst it sends more than 30 in some second after an idle spell.
struct Pacer {
    period: Duration,
    next: Option<Instant>,
    window: Duration,
    per_window: usize,
    /// The last `per_window` sends, oldest first.
    recent: VecDeque<Instant>,
}

impl Pacer {
    fn new(period: Duration, per_window: usize, window: Duration) -> Self {
        Pacer {
            period,
            next: None,
            window,
            per_window: per_window.max(1),
            recent: VecDeque::new(),
        }
    }

    /// Takes the next slot if it is due; otherwise says when it will be.
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let slot = match self.next {
            // More than a period behind: idle, not late. Start afresh.
            Some(next) if next + self.period > now => next,
            _ => now,
        };
        let window_frees = match self.recent.front() {
            Some(oldest) if self.recent.len() >= self.per_window => *oldest + self.window,
            _ => now,
        };
        let at = slot.max(window_frees);
        if at > now {
            return Err(at);
        }
        self.next = Some(slot + self.period);
        self.recent.push_back(now);
        while self.recent.len() > self.per_window {
            self.recent.pop_front();
        }
        Ok(())
    }
}

fn quota_every(interval: Duration) -> Quota {
    Quota::with_period(interval.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = NotifierArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NotifierMsg>,
        args: NotifierArgs,
    ) -> Result<NotifierState, ActorProcessingErr> {
        let limits = args.limits;
        let group = quota_every(Duration::from_secs_f64(
            60.0 / f64::from(limits.group_per_minute.max(1)),
        ));
        let me = myself.clone();
        let progress = tokio::spawn(async move {
            let mut every = tokio::time::interval(PROGRESS_EVERY);
            loop {
                every.tick().await;
                if me.cast(NotifierMsg::Progress).is_err() {
                    break;
                }
            }
        });
        Ok(NotifierState {
            overall: Pacer::new(
                Duration::from_secs_f64(1.0 / limits.overall_per_second.max(1e-3)),
                // Telegram's limit is per whole second: 29.6 a second
                // paced, never more than 30 in any one second.
                limits.overall_per_second.ceil().clamp(1.0, 1e6) as usize,
                Duration::from_secs(1),
            ),
            private: DefaultKeyedRateLimiter::keyed(quota_every(limits.private_chat_interval)),
            groups: DefaultKeyedRateLimiter::keyed(group),
            clock: DefaultClock::default(),
            args,
            fan_outs: HashMap::new(),
            chats: HashMap::new(),
            ready: VecDeque::new(),
            in_ready: HashSet::new(),
            paused: HashMap::new(),
            wake_heap: BinaryHeap::new(),
            busy: HashSet::new(),
            in_flight: 0,
            webhook_queue: VecDeque::new(),
            held: Vec::new(),
            webhooks_in_flight: 0,
            pump_timer: None,
            _progress: AbortOnDrop::from(progress),
            finished: VecDeque::new(),
            finished_set: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NotifierMsg>,
        msg: NotifierMsg,
        state: &mut NotifierState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NotifierMsg::FanOut {
                run_id,
                job_id,
                messages,
                shared,
            } => fan_out(&myself, state, run_id, job_id, messages, shared),
            NotifierMsg::Prechecked { run_id, sent } => prechecked(state, run_id, sent),
            NotifierMsg::Pump => {
                state.pump_timer = None;
            }
            NotifierMsg::Attempted {
                run_id,
                index,
                chat,
                result,
            } => {
                match chat {
                    Some(chat) => {
                        state.busy.remove(&chat);
                        state.in_flight = state.in_flight.saturating_sub(1);
                    }
                    None => state.webhooks_in_flight = state.webhooks_in_flight.saturating_sub(1),
                }
                attempted(state, run_id, index, chat, result);
                if let Some(chat) = chat {
                    schedule_chat(state, chat);
                }
            }
            NotifierMsg::Progress => {
                if !state.held.is_empty() && state.args.ledger.can_claim() {
                    release_held(state);
                }
                for (run_id, f) in &mut state.fan_outs {
                    if f.changed {
                        f.changed = false;
                        let _ = state
                            .args
                            .pool
                            .fan_out_progress(run_id.clone(), f.report.clone());
                    }
                }
                // Forget the limiter state of chats not heard from lately.
                state.private.retain_recent();
                state.groups.retain_recent();
            }
            NotifierMsg::Abandon(run_ids) => {
                for run_id in &run_ids {
                    state.fan_outs.remove(run_id);
                }
                let gone: HashSet<&RunId> = run_ids.iter().collect();
                for queue in state.chats.values_mut() {
                    queue.retain(|item| !gone.contains(&item.run_id));
                }
                state
                    .webhook_queue
                    .retain(|item| !gone.contains(&item.run_id));
                state.held.retain(|(_, item)| !gone.contains(&item.run_id));
            }
            NotifierMsg::Known(run_ids, reply) => {
                let _ = reply.send(
                    run_ids
                        .iter()
                        .map(|r| state.fan_outs.contains_key(r) || state.finished_set.contains(r))
                        .collect(),
                );
            }
            NotifierMsg::Stats(reply) => {
                let queued = state.chats.values().map(VecDeque::len).sum::<usize>()
                    + state.webhook_queue.len()
                    + state.held.len();
                let _ = reply.send(NotifierStats {
                    fan_outs: state.fan_outs.len(),
                    queued,
                    in_flight: state.in_flight + state.webhooks_in_flight,
                });
            }
        }
        pump(&myself, state);
        Ok(())
    }
}

fn fan_out(
    myself: &ActorRef<NotifierMsg>,
    state: &mut NotifierState,
    run_id: RunId,
    job_id: String,
    messages: Vec<Message>,
    shared: bool,
) {
    if state.fan_outs.contains_key(&run_id) {
        tracing::debug!(run = %run_id, "fan-out already going on; ignoring the copy");
        return;
    }
    let parts: Vec<Vec<String>> = messages
        .iter()
        .map(|m| match m {
            Message::Telegram { html, .. } => html::split_message(html, html::MAX_MESSAGE_LEN),
            Message::Webhook { .. } => Vec::new(),
        })
        .collect();
    tracing::info!(run = %run_id, job = %job_id, messages = messages.len(), transport = state.args.transport.name(), "delivering");
    let nth = occurrences(&messages);
    let keys: Vec<Vec<String>> = messages
        .iter()
        .zip(&parts)
        .enumerate()
        .map(|(i, (m, p))| {
            (0..p.len().max(1))
                .map(|part| delivery_key(&run_id, m, nth[i], part))
                .collect()
        })
        .collect();
    state.fan_outs.insert(
        run_id.clone(),
        FanOut {
            job_id,
            report: DeliveryReport::expecting(&messages),
            messages,
            parts,
            nth,
            changed: true,
            prechecked: false,
            shared,
        },
    );
    // Parts an earlier attempt of this run sent are settled without
    // waiting for a rate-limit slot.
    let ledger = state.args.ledger.clone();
    let me = myself.clone();
    tokio::spawn(async move {
        let flat: Vec<String> = keys.iter().flatten().cloned().collect();
        let sent_flat = ledger.already_sent(&flat).await;
        let mut sent = Vec::with_capacity(keys.len());
        let mut at = 0;
        for k in &keys {
            sent.push(sent_flat.get(at..at + k.len()).unwrap_or_default().to_vec());
            at += k.len();
        }
        let _ = me.cast(NotifierMsg::Prechecked { run_id, sent });
    });
}

fn prechecked(state: &mut NotifierState, run_id: RunId, sent: Vec<Vec<bool>>) {
    let Some(f) = state.fan_outs.get_mut(&run_id) else {
        return;
    };
    if f.prechecked {
        return;
    }
    f.prechecked = true;
    let mut settled = Vec::new();
    for (index, message) in f.messages.iter().enumerate() {
        let done = sent.get(index).cloned().unwrap_or_default();
        match message {
            Message::Telegram { chat_id, html, .. } => {
                if let Err(e) = html::check_html(html) {
                    settled.push((index, MessageOutcome::Failed(format!("rendered HTML: {e}"))));
                    continue;
                }
                let parts = f.parts[index].len();
                if parts == 0 {
                    settled.push((
                        index,
                        MessageOutcome::Skipped("the message is empty".into()),
                    ));
                    continue;
                }
                let first_unsent = (0..parts).find(|p| !done.get(*p).copied().unwrap_or(false));
                match first_unsent {
                    None => settled.push((index, MessageOutcome::Sent)),
                    Some(part) => {
                        state.chats.entry(*chat_id).or_default().push_back(Item {
                            run_id: run_id.clone(),
                            index,
                            part,
                            attempts: 0,
                            chat_permit: false,
                        });
                        if !state.busy.contains(chat_id) && !state.in_ready.contains(chat_id) {
                            state.ready.push_back(*chat_id);
                            state.in_ready.insert(*chat_id);
                        }
                    }
                }
            }
            Message::Webhook { .. } => {
                if done.first().copied().unwrap_or(false) {
                    settled.push((index, MessageOutcome::Sent));
                } else {
                    state.webhook_queue.push_back(Item {
                        run_id: run_id.clone(),
                        index,
                        part: 0,
                        attempts: 0,
                        chat_permit: false,
                    });
                }
            }
        }
    }
    for (index, outcome) in settled {
        settle(state, &run_id, index, outcome);
    }
}

/// Starts every send the limits allow now, and arms one timer for the
/// next moment one could go.
fn pump(myself: &ActorRef<NotifierMsg>, state: &mut NotifierState) {
    let now = Instant::now();
    while let Some(Reverse((at, chat))) = state.wake_heap.peek().copied() {
        if at > now {
            break;
        }
        state.wake_heap.pop();
        if state.paused.get(&chat).is_some_and(|until| *until <= now) {
            state.paused.remove(&chat);
            schedule_chat(state, chat);
        }
    }
    let mut next_wake: Option<Instant> = None;
    while state.in_flight < state.args.limits.max_in_flight {
        let Some(chat) = state.ready.pop_front() else {
            break;
        };
        state.in_ready.remove(&chat);
        if state.busy.contains(&chat) || state.paused.contains_key(&chat) {
            continue;
        }
        let Some(item) = state.chats.get_mut(&chat).and_then(|q| q.front_mut()) else {
            continue;
        };
        if !item.chat_permit {
            let limiter = if chat > 0 {
                &state.private
            } else {
                &state.groups
            };
            match limiter.check_key(&chat) {
                Ok(()) => item.chat_permit = true,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(state.clock.now());
                    pause_chat(state, chat, now + wait);
                    continue;
                }
            }
        }
        if let Err(slot) = state.overall.take(now) {
            state.ready.push_front(chat);
            state.in_ready.insert(chat);
            next_wake = Some(slot);
            break;
        }
        item.chat_permit = false;
        let (run_id, index, part) = (item.run_id.clone(), item.index, item.part);
        start_telegram_send(myself, state, chat, run_id, index, part);
    }
    while state.webhooks_in_flight < MAX_WEBHOOKS_IN_FLIGHT {
        let Some(item) = state.webhook_queue.pop_front() else {
            break;
        };
        start_webhook(myself, state, item);
    }
    if let Some(Reverse((at, _))) = state.wake_heap.peek() {
        next_wake = Some(next_wake.map_or(*at, |n| n.min(*at)));
    }
    if let Some(at) = next_wake
        && state
            .pump_timer
            .as_ref()
            .is_none_or(|(armed, _)| at < *armed)
    {
        let delay = at.saturating_duration_since(Instant::now());
        let handle = myself.send_after(delay, || NotifierMsg::Pump);
        state.pump_timer = Some((at, AbortOnDrop::from(handle)));
    }
}

fn schedule_chat(state: &mut NotifierState, chat: i64) {
    let has_work = state.chats.get(&chat).is_some_and(|q| !q.is_empty());
    if !has_work || state.busy.contains(&chat) || state.paused.contains_key(&chat) {
        return;
    }
    if state.in_ready.insert(chat) {
        state.ready.push_back(chat);
    }
}

fn pause_chat(state: &mut NotifierState, chat: i64, until: Instant) {
    state.paused.insert(chat, until);
    state.wake_heap.push(Reverse((until, chat)));
}

fn start_telegram_send(
    myself: &ActorRef<NotifierMsg>,
    state: &mut NotifierState,
    chat: i64,
    run_id: RunId,
    index: usize,
    part: usize,
) {
    let Some(f) = state.fan_outs.get(&run_id) else {
        return;
    };
    let (Some(Message::Telegram { silent, .. }), Some(text)) = (
        f.messages.get(index),
        f.parts.get(index).and_then(|p| p.get(part)),
    ) else {
        return;
    };
    let key = delivery_key(&run_id, &f.messages[index], f.nth[index], part);
    let (silent, text, shared) = (*silent, text.clone(), f.shared);
    state.busy.insert(chat);
    state.in_flight += 1;
    let transport = state.args.transport.clone();
    let ledger = state.args.ledger.clone();
    let me = myself.clone();
    tokio::spawn(async move {
        let claim = ledger.claim(std::slice::from_ref(&key), shared).await;
        let result = match claim.first().copied().unwrap_or(DeliveryClaim::InDoubt) {
            DeliveryClaim::Sent => Attempt::AlreadySent,
            DeliveryClaim::InDoubt | DeliveryClaim::Ours => Attempt::InDoubt,
            DeliveryClaim::Held => Attempt::Held,
            DeliveryClaim::Unavailable => Attempt::Telegram(SendResult::Transient(
                "the delivery ledger in redis did not answer".into(),
            )),
            DeliveryClaim::Mine => {
                let sent = send_guarded(transport, chat, text, silent).await;
                ledger.settle(key, sent == SendResult::Sent).await;
                Attempt::Telegram(sent)
            }
        };
        let _ = me.cast(NotifierMsg::Attempted {
            run_id,
            index,
            chat: Some(chat),
            result,
        });
    });
}

/// A transport that panics or whose task dies fails that one send (and
/// it is retried), rather than leaving the chat waiting forever.
async fn send_guarded(
    transport: Arc<dyn Transport>,
    chat: i64,
    text: String,
    silent: bool,
) -> SendResult {
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        transport.send(chat, &text, silent)
    }));
    match started {
        Ok(future) => match tokio::spawn(future).await {
            Ok(result) => result,
            Err(e) => SendResult::Transient(format!("the transport failed: {e}")),
        },
        Err(_) => SendResult::Transient("the transport panicked".to_string()),
    }
}

fn start_webhook(myself: &ActorRef<NotifierMsg>, state: &mut NotifierState, item: Item) {
    let Some(f) = state.fan_outs.get(&item.run_id) else {
        return;
    };
    let Some(Message::Webhook { endpoint, body }) = f.messages.get(item.index) else {
        return;
    };
    let key = delivery_key(&item.run_id, &f.messages[item.index], f.nth[item.index], 0);
    let shared = f.shared;
    let endpoint_name = endpoint.clone();
    let body = body.clone();
    state.webhooks_in_flight += 1;
    let webhooks = state.args.webhooks.clone();
    let ledger = state.args.ledger.clone();
    let me = myself.clone();
    let (run_id, index) = (item.run_id, item.index);
    tokio::spawn(async move {
        let result = match webhooks.endpoints.get(&endpoint_name) {
            None => Attempt::Webhook(MessageOutcome::Failed(format!(
                "no webhook endpoint named {endpoint_name:?} is configured"
            ))),
            Some(endpoint) => {
                let claim = ledger.claim(std::slice::from_ref(&key), shared).await;
                match claim.first().copied().unwrap_or(DeliveryClaim::InDoubt) {
                    DeliveryClaim::Sent => Attempt::AlreadySent,
                    DeliveryClaim::InDoubt | DeliveryClaim::Ours => Attempt::InDoubt,
                    DeliveryClaim::Held => Attempt::Held,
                    DeliveryClaim::Unavailable => Attempt::Webhook(MessageOutcome::Failed(
                        "the delivery ledger in redis did not answer".into(),
                    )),
                    DeliveryClaim::Mine => match webhooks.sender.post(endpoint, &body).await {
                        WebhookOutcome::Delivered { .. } => {
                            ledger.settle(key, true).await;
                            Attempt::Webhook(MessageOutcome::Sent)
                        }
                        WebhookOutcome::Failed { error, .. } => {
                            ledger.settle(key, false).await;
                            Attempt::Webhook(MessageOutcome::Failed(error))
                        }
                    },
                }
            }
        };
        let _ = me.cast(NotifierMsg::Attempted {
            run_id,
            index,
            chat: None,
            result,
        });
    });
}

/// Sets a held part aside (see [`Attempt::Held`]): the chat's next
/// messages (this daemon's own offline runs) go on meanwhile.
fn hold(state: &mut NotifierState, run_id: RunId, index: usize, chat: Option<i64>) {
    let item = match chat {
        Some(chat) => {
            let Some(q) = state.chats.get_mut(&chat) else {
                return;
            };
            if !q
                .front()
                .is_some_and(|i| i.run_id == run_id && i.index == index)
            {
                return;
            }
            let Some(item) = q.pop_front() else {
                return;
            };
            if q.is_empty() {
                state.chats.remove(&chat);
            }
            item
        }
        None => Item {
            run_id,
            index,
            part: 0,
            attempts: 0,
            chat_permit: false,
        },
    };
    if state.held.is_empty() {
        tracing::info!(
            "holding messages until Redis can tell what was sent (offline: runs from the shared queue, a peer may take them over; or Redis lost its data and the daemons are writing back what they sent)"
        );
    }
    state.held.push((chat, item));
}

/// Redis is back: held parts go first in their queues, oldest first.
fn release_held(state: &mut NotifierState) {
    let held = std::mem::take(&mut state.held);
    tracing::info!(
        parts = held.len(),
        "Redis can tell what was sent again: sending the held messages"
    );
    for (chat, item) in held.into_iter().rev() {
        match chat {
            Some(chat) => {
                state.chats.entry(chat).or_default().push_front(item);
                schedule_chat(state, chat);
            }
            None => state.webhook_queue.push_front(item),
        }
    }
}

/// Applies one send's result to its message (the slot it held is freed).
fn attempted(
    state: &mut NotifierState,
    run_id: RunId,
    index: usize,
    chat: Option<i64>,
    result: Attempt,
) {
    let Some(f) = state.fan_outs.get(&run_id) else {
        // Abandoned meanwhile.
        return;
    };
    if matches!(result, Attempt::Held) {
        hold(state, run_id, index, chat);
        return;
    }
    let Some(chat) = chat else {
        let outcome = match result {
            Attempt::Webhook(outcome) => outcome,
            Attempt::AlreadySent => MessageOutcome::Sent,
            Attempt::InDoubt => MessageOutcome::Skipped(
                "outcome unknown: an earlier send of it never reported".into(),
            ),
            Attempt::Telegram(_) | Attempt::Held => {
                MessageOutcome::Failed("unexpected result".into())
            }
        };
        settle(state, &run_id, index, outcome);
        return;
    };
    let parts = f.parts.get(index).map_or(1, Vec::len);
    let limits = state.args.limits;
    let Some(item) = state
        .chats
        .get_mut(&chat)
        .and_then(|q| q.front_mut())
        .filter(|i| i.run_id == run_id && i.index == index)
    else {
        return;
    };
    let outcome = match result {
        Attempt::Telegram(SendResult::Sent) | Attempt::AlreadySent => {
            if item.part + 1 < parts {
                item.part += 1;
                item.attempts = 0;
                None
            } else {
                Some(MessageOutcome::Sent)
            }
        }
        Attempt::InDoubt => Some(MessageOutcome::Skipped(
            "outcome unknown: an earlier send of it never reported".into(),
        )),
        Attempt::Telegram(SendResult::RetryAfter(wait)) => {
            tracing::warn!(chat, ?wait, "telegram asked to slow down (429)");
            telemetry::telegram_rate_limited(wait);
            pause_chat(state, chat, Instant::now() + wait);
            None
        }
        Attempt::Telegram(SendResult::Transient(error)) => {
            item.attempts += 1;
            if item.attempts >= limits.max_attempts {
                Some(MessageOutcome::Failed(format!(
                    "{error} (after {} attempts)",
                    item.attempts
                )))
            } else {
                let exp = limits
                    .backoff_base
                    .saturating_mul(1 << item.attempts.min(16));
                let delay = exp.min(Duration::from_secs(30));
                tracing::warn!(chat, %error, retry_in = ?delay, "telegram send failed; retrying");
                pause_chat(state, chat, Instant::now() + delay);
                None
            }
        }
        Attempt::Telegram(SendResult::Deactivated(why)) => {
            let users = state.args.users.clone();
            let reason = why.clone();
            tokio::spawn(async move { users.deactivate(chat, &reason).await });
            Some(MessageOutcome::Deactivated(why))
        }
        Attempt::Telegram(SendResult::Rejected(why)) => Some(MessageOutcome::Failed(why)),
        Attempt::Webhook(outcome) => Some(outcome),
        // Handled above.
        Attempt::Held => None,
    };
    if let Some(outcome) = outcome {
        if let Some(q) = state.chats.get_mut(&chat) {
            q.pop_front();
            if q.is_empty() {
                state.chats.remove(&chat);
            }
        }
        settle(state, &run_id, index, outcome);
    }
}

fn settle(state: &mut NotifierState, run_id: &RunId, index: usize, outcome: MessageOutcome) {
    let Some(f) = state.fan_outs.get_mut(run_id) else {
        return;
    };
    let Some(message) = f.messages.get(index) else {
        return;
    };
    match &outcome {
        MessageOutcome::Failed(e) => {
            tracing::warn!(run = %run_id, to = %message.recipient(), error = %e, "delivery failed")
        }
        MessageOutcome::Deactivated(e) => {
            tracing::info!(run = %run_id, to = %message.recipient(), reason = %e, "recipient is gone; marked inactive")
        }
        _ => {}
    }
    let channel = match message {
        Message::Telegram { .. } if state.args.transport.name() == DryRun.name() => "dry_run",
        Message::Telegram {
            role: ChatRole::Save,
            ..
        } => "save",
        Message::Telegram { .. } => "dm",
        Message::Webhook { .. } => "webhook",
    };
    telemetry::delivered(
        channel,
        match &outcome {
            MessageOutcome::Sent => "sent",
            MessageOutcome::Failed(_) => "failed",
            MessageOutcome::Deactivated(_) => "deactivated",
            MessageOutcome::Skipped(_) => "skipped",
        },
    );
    f.report.settle(message, &outcome);
    f.changed = true;
    if f.report.pending == 0
        && let Some(done) = state.fan_outs.remove(run_id)
    {
        let totals = done.report.totals();
        tracing::info!(run = %run_id, job = %done.job_id, sent = totals.sent, failed = totals.failed, deactivated = totals.deactivated, skipped = totals.skipped, "delivery finished");
        if state.finished_set.insert(run_id.clone()) {
            state.finished.push_back(run_id.clone());
            while state.finished.len() > REMEMBER_FINISHED {
                if let Some(old) = state.finished.pop_front() {
                    state.finished_set.remove(&old);
                }
            }
        }
        let _ = state.args.pool.fan_out_done(run_id.clone(), done.report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_keeps_its_timetable_through_late_sends_and_never_bursts() {
        let period = Duration::from_millis(100);
        let mut pacer = Pacer::new(period, 1_000, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(pacer.take(t0), Ok(()));
        // the next slot is one period on
        assert_eq!(pacer.take(t0 + Duration::from_millis(50)), Err(t0 + period));
        // taken 30 ms late: the slot after stays on the timetable
        assert_eq!(pacer.take(t0 + Duration::from_millis(130)), Ok(()));
        assert_eq!(
            pacer.take(t0 + Duration::from_millis(150)),
            Err(t0 + 2 * period)
        );
        assert_eq!(pacer.take(t0 + 2 * period), Ok(()));
        // 30 slots, each taken a little late, span at least 29 periods
        let mut sent = Vec::new();
        let mut now = t0 + 3 * period;
        while sent.len() < 30 {
            match pacer.take(now) {
                Ok(()) => sent.push(now),
                Err(slot) => now = slot + Duration::from_millis(7),
            }
        }
        assert!(sent[29] - sent[0] >= 29 * period - Duration::from_millis(7));
        // idle for a while: one send now, the next a full period later
        let later = now + 10 * period;
        assert_eq!(pacer.take(later), Ok(()));
        assert_eq!(pacer.take(later), Err(later + period));
    }

    /// One send taken late and thirty on time after it: without the window
    /// check the thirty-first of them lands within a second of the late one.
    #[test]
    fn the_pacer_never_fits_more_than_its_limit_into_a_window() {
        let period = Duration::from_secs_f64(1.0 / 29.6);
        let window = Duration::from_secs(1);
        let mut pacer = Pacer::new(period, 30, window);
        let t0 = Instant::now();
        assert_eq!(pacer.take(t0), Ok(()));
        let late = t0 + period + Duration::from_millis(15);
        assert_eq!(pacer.take(late), Ok(()));
        let mut sent = vec![t0, late];
        let mut now = late;
        while sent.len() < 200 {
            match pacer.take(now) {
                Ok(()) => sent.push(now),
                Err(at) => now = at,
            }
        }
        for (i, first) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|t| **t < *first + window)
                .count();
            assert!(
                in_window <= 30,
                "{in_window} sends within a second from send {i}"
            );
        }
        // and it still keeps the pace: 200 sends in about 200 periods
        assert!(sent[199] - sent[0] < 201 * period + Duration::from_millis(20));
    }
}
