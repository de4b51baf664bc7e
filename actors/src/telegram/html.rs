//! Telegram HTML: the allowed-tags check and the long-message splitter.
//! (being written)
