//! herald's state in Redis: connections, key names, the stored form of
//! jobs, and the store itself.

pub mod connect;
pub mod deliveries;
pub mod digests;
pub mod keys;
pub mod queue;
mod scripts;
mod shared;
pub mod store;
pub mod stored;
pub mod users;

pub use connect::{RedisSettings, connect};
pub use deliveries::{DeliveryClaim, DeliveryMark};
pub use keys::Keys;
pub use queue::{GROUP, QueueEntry, blocking_connection};
pub use store::{BackendError, CLAIM_TTL, PendingWrite, RedisStore};
pub use stored::{JobDefinition, JobOrigin, Overrides, StoredJob, overrides_for, sync_job};
