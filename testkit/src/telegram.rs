//! A fake Telegram Bot API server on loopback.
//! (being written)
