//! Digest inboxes and windows in Redis: a stream per profile, the end of
//! the last collected window per (profile, schedule), and each run's window.

use deadpool_redis::redis;

use super::scripts::CLAIM_DIGEST_WINDOW;
use super::store::{BackendError, RedisStore};
use crate::digest::{InboxItem, Window};

/// Items read per `XRANGE`: a window of any size is read in pages.
const PAGE: usize = 1_000;

/// Items counted per window at most: a flooded inbox cannot make a digest
/// run outlast its timeout just counting (the count is then a floor).
pub const MAX_COUNTED: u64 = 100_000;

impl RedisStore {
    /// Adds an item to a profile's inbox; returns its stream id.
    pub async fn digest_add(
        &self,
        profile: &str,
        fields: &[(String, String)],
    ) -> Result<String, BackendError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.digest_inbox(profile)).arg("*");
        for (name, value) in fields {
            cmd.arg(name).arg(value);
        }
        let mut c = self.conn().await?;
        Ok(cmd.query_async::<String>(&mut c).await?)
    }

    /// The window run `run_id` of (profile, schedule) owns, claimed on its
    /// first call (see `CLAIM_DIGEST_WINDOW`).
    pub async fn claim_digest_window(
        &self,
        profile: &str,
        schedule: &str,
        run_id: &str,
        wanted_end_ms: i64,
    ) -> Result<Window, BackendError> {
        let mut c = self.conn().await?;
        let owned: String = CLAIM_DIGEST_WINDOW
            .key(self.keys.digest_last_run(profile, schedule))
            .key(self.keys.digest_window(run_id))
            .arg(wanted_end_ms)
            .arg(self.limits.record_ttl.as_secs().max(1))
            .invoke_async(&mut c)
            .await?;
        let corrupt = || BackendError::Corrupt {
            key: self.keys.digest_window(run_id),
            message: format!("{owned:?} is not \"start end\" in unix ms"),
        };
        let (start, end) = owned.split_once(' ').ok_or_else(corrupt)?;
        let start: i64 = start.parse().map_err(|_| corrupt())?;
        let end: i64 = end.parse().map_err(|_| corrupt())?;
        Ok(Window {
            start_ms: (start >= 0).then_some(start),
            end_ms: end,
        })
    }

    /// The items in `window`, oldest first: at most `keep` of them, and how
    /// many the window holds in all.
    pub async fn digest_items(
        &self,
        profile: &str,
        window: Window,
        keep: usize,
    ) -> Result<(Vec<InboxItem>, u64), BackendError> {
        let key = self.keys.digest_inbox(profile);
        let mut items = Vec::new();
        let mut total = 0u64;
        if window.is_empty() {
            return Ok((items, total));
        }
        // Stream ids are "ms-seq": "ms" alone means ms-0 as a start and
        // ms-max as an end, so (start, end] is [start+1, end].
        let mut from = match window.start_ms {
            Some(start) => (start + 1).to_string(),
            None => "-".to_string(),
        };
        let mut c = self.conn().await?;
        loop {
            let page: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&from)
                .arg(window.end_ms)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut c)
                .await?;
            let full = page.len() == PAGE;
            for (id, flat) in page {
                total += 1;
                from = format!("({id}");
                if items.len() < keep {
                    items.push(InboxItem::from_stream(id, flat));
                }
            }
            if !full || total >= MAX_COUNTED {
                return Ok((items, total));
            }
            self.count_round_trip();
        }
    }

    /// Drops inbox items older than `min_ms` (unix ms); returns how many.
    pub async fn trim_digest_inbox(&self, profile: &str, min_ms: i64) -> Result<u64, BackendError> {
        let mut c = self.conn().await?;
        Ok(redis::cmd("XTRIM")
            .arg(self.keys.digest_inbox(profile))
            .arg("MINID")
            .arg(min_ms.max(0))
            .query_async::<u64>(&mut c)
            .await?)
    }

    /// The end of the last window (profile, schedule) collected, unix ms.
    pub async fn digest_last_run(
        &self,
        profile: &str,
        schedule: &str,
    ) -> Result<Option<i64>, BackendError> {
        let mut c = self.conn().await?;
        Ok(redis::cmd("GET")
            .arg(self.keys.digest_last_run(profile, schedule))
            .query_async::<Option<i64>>(&mut c)
            .await?)
    }
}
