//! Signed webhook delivery.
//! (being written)
