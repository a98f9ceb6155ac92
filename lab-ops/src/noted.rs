//! A counter that also logs: one call records a noteworthy thing in the metrics *and* in the log, so
//! the two never disagree (the habit of Vector's `emit!`), and nothing the lab counts is silent.
//!
//! Invalid input is the typical case: a client sending garbage at 10 000 messages a second must not
//! turn the log into a second copy of its traffic. So every occurrence is logged at `debug` (with its
//! detail, for whoever turns debug on), and at most one `warn` per [`WARN_EVERY`] says that it is
//! happening, how often so far, and the latest detail.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

/// At most one `warn` line per noted kind in this time; the rest are `debug`.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A kind of noteworthy event: its counter (registered with Prometheus by the server, under the name
/// the server gives it) and when it may warn next.
#[derive(Debug, Default)]
pub struct Noted {
    /// The count, shared with the Prometheus registry and the monitoring JSON.
    counter: Counter,
    /// When the next `warn` may be written, in ms since the Unix epoch (0: at once).
    next_warn_ms: AtomicU64,
}

impl Noted {
    /// A kind of event counted in `counter` (a clone of one registered with Prometheus, or a fresh one).
    pub fn new(counter: Counter) -> Self {
        Noted {
            counter,
            next_warn_ms: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence and logs it (see the module docs for the levels): `what` it was, for a
    /// person (`"request refused as invalid"`), and its `detail` (the parse error, the bad value).
    pub fn note(&self, what: &str, detail: &dyn Display) {
        let total = self.counter.inc() + 1;
        tracing::debug!(total, %detail, "{what}");
        let now = lab_core::now_ms() as u64;
        let next = self.next_warn_ms.load(Ordering::Relaxed);
        // One caller wins the right to warn for this period; the others only log at debug.
        if now >= next
            && self
                .next_warn_ms
                .compare_exchange(
                    next,
                    now + WARN_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::warn!(total, latest = %detail, "{what} (counted; at most one such line per {} s, every one at debug)", WARN_EVERY.as_secs());
        }
    }

    /// How many were noted.
    pub fn get(&self) -> u64 {
        self.counter.get()
    }

    /// The counter, to register with Prometheus.
    pub fn counter(&self) -> &Counter {
        &self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noting_counts_in_the_shared_counter() {
        let counter = Counter::default();
        let noted = Noted::new(counter.clone());
        noted.note("odd thing", &"first");
        let next = noted.next_warn_ms.load(Ordering::Relaxed);
        assert!(next > 0, "the first one warned");
        noted.note("odd thing", &"second");
        assert_eq!(
            noted.next_warn_ms.load(Ordering::Relaxed),
            next,
            "the second, within WARN_EVERY, only at debug"
        );
        assert_eq!(noted.get(), 2);
        assert_eq!(counter.get(), 2, "the registry's clone sees the same count");
    }
}
