//! Telegram delivery: the HTML rules and (later) the transport.

pub mod html;
