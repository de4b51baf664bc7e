//! Telegram delivery: the HTML rules ([`html`]) and the teloxide transport.

pub mod html;

use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::ParseMode;
use teloxide::{ApiError, RequestError};

use crate::delivery::{SendResult, classify_api_error};
use crate::handler::BoxFuture;
use crate::notifier::Transport;

/// How long one Bot API request may take before it counts as a network
/// error (and is retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends through the Bot API with teloxide.
pub struct TelegramTransport {
    bot: Bot,
}

#[derive(Debug, thiserror::Error)]
pub enum TelegramSetupError {
    #[error("telegram.api_url {url:?} is not a URL: {message}")]
    ApiUrl { url: String, message: String },
    #[error("cannot build the HTTP client for Telegram: {0}")]
    Client(String),
}

impl TelegramTransport {
    /// `api_url`: another Bot API server (self-hosted, or a test's fake);
    /// None is Telegram's.
    pub fn new(token: &str, api_url: Option<&str>) -> Result<Self, TelegramSetupError> {
        Self::with_timeout(token, api_url, REQUEST_TIMEOUT)
    }

    /// As [`TelegramTransport::new`], with another time limit per request.
    pub fn with_timeout(
        token: &str,
        api_url: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, TelegramSetupError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TelegramSetupError::Client(e.to_string()))?;
        let mut bot = Bot::with_client(token, client);
        if let Some(url) = api_url {
            let parsed = reqwest::Url::parse(url).map_err(|e| TelegramSetupError::ApiUrl {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            bot = bot.set_api_url(parsed);
        }
        Ok(TelegramTransport { bot })
    }
}

impl TelegramTransport {
    /// The Bot API client (for polling updates).
    pub fn bot(&self) -> Bot {
        self.bot.clone()
    }
}

impl Transport for TelegramTransport {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn send(&self, chat_id: i64, html: &str, silent: bool) -> BoxFuture<SendResult> {
        let request = self
            .bot
            .send_message(ChatId(chat_id), html.to_string())
            .parse_mode(ParseMode::Html)
            .disable_notification(silent);
        Box::pin(async move {
            match request.await {
                Ok(_) => SendResult::Sent,
                Err(e) => classify_request_error(e),
            }
        })
    }
}

fn classify_request_error(e: RequestError) -> SendResult {
    match e {
        RequestError::RetryAfter(after) => SendResult::RetryAfter(after.duration()),
        // The description is Telegram's own text ("Forbidden: ...",
        // "Bad Request: ..."), whichever variant teloxide parsed it into.
        // (teloxide wraps texts it does not know: `Unknown error: "..."`;
        // classify the text itself.)
        RequestError::Api(ApiError::Unknown(description)) => classify_api_error(&description),
        RequestError::Api(api) => classify_api_error(&api.to_string()),
        RequestError::MigrateToChatId(to) => {
            SendResult::Rejected(format!("the group moved to supergroup {to}"))
        }
        RequestError::Network(e) => SendResult::Transient(format!("network: {e}")),
        // A proxy's HTML error page, a truncated body: worth another try.
        RequestError::InvalidJson { raw, .. } => SendResult::Transient(format!(
            "unreadable answer from the Bot API: {}",
            raw.chars().take(200).collect::<String>()
        )),
        RequestError::Io(e) => SendResult::Transient(format!("i/o: {e}")),
    }
}
