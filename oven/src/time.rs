//! Time stamps as Unix milliseconds: what both job tables store and compare in conditional
//! writes, so the two adapters agree to the millisecond.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Millis(since.as_millis() as i64)
    }

    pub fn plus(self, d: Duration) -> Self {
        Millis(self.0.saturating_add(d.as_millis() as i64))
    }

    /// Whole seconds since the epoch (what DynamoDB's TTL attribute expects).
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Seconds from `earlier` to `self`, as a float (durations in results).
    pub fn seconds_since(self, earlier: Millis) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }

    /// RFC 1123 HTTP date, the contract's format for `created_at` / `enqueued_at`.
    pub fn http_date(self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        httpdate::fmt_http_date(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_matches_contract_format() {
        // 2022-04-03 18:04:13 UTC, the contract's example.
        assert_eq!(
            Millis(1_649_009_053_000).http_date(),
            "Sun, 03 Apr 2022 18:04:13 GMT"
        );
    }
}
