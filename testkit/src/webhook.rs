//! A local webhook receiver that verifies signatures.
//! (being written)
