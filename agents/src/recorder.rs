//! Everything a run measures, shared by its connections, its dashboard subscriber and its progress line.
//!
//! Latencies are recorded in microseconds in HdrHistograms (1 µs to 1 h, 3 significant digits), which
//! keep every percentile honest to 0.1 % without storing samples, and merge exactly across processes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::pacing::Clock;

pub use lab_core::report::{MAX_LATENCY_US, histogram};

/// Most `seq`s one coalesced update may say it covers (`lastSeq − firstSeq`). A wider range is not
/// believed: marking it would cost memory in proportion to a number the server chose.
pub const MAX_COALESCED_SPAN: u64 = 1 << 20;

/// Which metrics of which agent a dashboard has accounted for: one bit per `seq` seen in an update of
/// its own, and one per `seq` covered by a coalesced update (delivered as part of an aggregate).
#[derive(Debug, Default)]
pub struct SeqTracker {
    /// Per agent (index − 1), a bitset of `seq`s seen in their own update.
    seen: Vec<Vec<u64>>,
    /// Per agent, a bitset of `seq`s covered only by a coalesced update.
    covered: Vec<Vec<u64>>,
    /// Distinct metrics seen in their own update.
    pub distinct: u64,
    /// Metrics seen more than once.
    pub duplicates: u64,
    /// Distinct metrics never seen on their own but covered by a coalesced update.
    pub coalesced: u64,
}

/// Whether bit `seq` is set in `bits`, setting it.
fn test_and_set(bits: &mut Vec<u64>, seq: u64) -> bool {
    let (word, bit) = ((seq / 64) as usize, seq % 64);
    if bits.len() <= word {
        bits.resize(word + 1, 0);
    }
    let was = bits[word] & (1 << bit) != 0;
    bits[word] |= 1 << bit;
    was
}

/// Clears bit `seq` in `bits`; whether it was set.
fn test_and_clear(bits: &mut [u64], seq: u64) -> bool {
    let (word, bit) = ((seq / 64) as usize, seq % 64);
    match bits.get_mut(word) {
        Some(w) if *w & (1 << bit) != 0 => {
            *w &= !(1 << bit);
            true
        }
        _ => false,
    }
}

impl SeqTracker {
    fn agent(&mut self, index: usize) {
        if self.seen.len() < index {
            self.seen.resize_with(index, Vec::new);
            self.covered.resize_with(index, Vec::new);
        }
    }

    /// Records that agent `index` (1-based) delivered `seq`; returns whether it was a duplicate.
    pub fn see(&mut self, index: usize, seq: u64) -> bool {
        if index == 0 {
            return false;
        }
        self.agent(index);
        let duplicate = test_and_set(&mut self.seen[index - 1], seq);
        if duplicate {
            self.duplicates += 1;
        } else {
            self.distinct += 1;
            // Seen on its own after all (updates of one server can be reordered): no longer counted
            // as coalesced.
            if test_and_clear(&mut self.covered[index - 1], seq) {
                self.coalesced -= 1;
            }
        }
        duplicate
    }

    /// Records that an update of agent `index` stood for the `seq`s `first..=last`: each not seen on
    /// its own is counted as coalesced. Returns how many were newly counted, or `None` for a range
    /// wider than [`MAX_COALESCED_SPAN`] (not believed, nothing recorded).
    pub fn cover(&mut self, index: usize, first: u64, last: u64) -> Option<u64> {
        if index == 0 || last < first || last - first > MAX_COALESCED_SPAN {
            return None;
        }
        self.agent(index);
        let mut newly = 0;
        for seq in first..=last {
            let seen = &self.seen[index - 1];
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if seen.get(word).is_some_and(|w| w & (1 << bit) != 0) {
                continue;
            }
            if !test_and_set(&mut self.covered[index - 1], seq) {
                newly += 1;
            }
        }
        self.coalesced += newly;
        Some(newly)
    }
}

/// What a dashboard accounted for by `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCounts {
    /// Metrics seen in an update of their own.
    pub distinct: u64,
    /// Metrics seen more than once.
    pub duplicates: u64,
    /// Metrics only covered by a coalesced update.
    pub coalesced: u64,
}

impl SeqCounts {
    /// Metrics the dashboard reflected, one way or the other.
    pub fn accounted(&self) -> u64 {
        self.distinct + self.coalesced
    }
}

/// The shared measurements of one run.
#[derive(Debug)]
pub struct Recorder {
    /// The run's clock.
    pub clock: Clock,
    /// Metrics due before this (epoch ms) are warm-up: sent, counted, but not in the latency figures.
    pub measure_from_ms: f64,
    /// Metrics sent (written to a socket or in a request).
    pub sent: AtomicU64,
    /// Metrics acknowledged (`metric.ack` / `metrics.ack` / HTTP 202).
    pub acked: AtomicU64,
    /// Acknowledged metrics that were due inside the measured window: the achieved rate's numerator.
    pub acked_measured: AtomicU64,
    /// Metrics the target refused (an error frame, a 4xx, a final 5xx).
    pub refused: AtomicU64,
    /// Requests or connections tried again (after 429/503 or a disconnect).
    pub retries: AtomicU64,
    /// Updates a dashboard delivered for this run's agents (duplicates included).
    pub delivered: AtomicU64,
    /// The generator's worst lateness in sending, µs.
    pub max_lag_us: AtomicU64,
    /// Gap frames a dashboard received: the server said it could not deliver some events.
    pub gap_frames: AtomicU64,
    /// Events those gap frames reported missing, where the server knew how many.
    pub gap_events: AtomicU64,
    /// Gap frames that could not say how many (`"events":null`).
    pub gaps_uncounted: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    ack: Mutex<Histogram<u64>>,
    e2e: Mutex<Histogram<u64>>,
    seqs: Mutex<SeqTracker>,
}

impl Recorder {
    /// A recorder whose latency figures start with metrics due at `measure_from_ms`.
    pub fn new(clock: Clock, measure_from_ms: f64) -> Self {
        Recorder {
            clock,
            measure_from_ms,
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acked_measured: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            max_lag_us: AtomicU64::new(0),
            gap_frames: AtomicU64::new(0),
            gap_events: AtomicU64::new(0),
            gaps_uncounted: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            ack: Mutex::new(histogram()),
            e2e: Mutex::new(histogram()),
            seqs: Mutex::new(SeqTracker::default()),
        }
    }

    fn micros(&self, due_ms: f64) -> u64 {
        (((self.clock.now_ms() - due_ms) * 1000.0).max(1.0) as u64).min(MAX_LATENCY_US)
    }

    /// `count` metrics, due every `interval_ms` from `first_due_ms`, were acknowledged now.
    pub fn acked(&self, first_due_ms: f64, interval_ms: f64, count: u64) {
        self.acked.fetch_add(count, Ordering::Relaxed);
        let mut ack = self.ack.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..count {
            let due = first_due_ms + i as f64 * interval_ms;
            if due >= self.measure_from_ms {
                self.acked_measured.fetch_add(1, Ordering::Relaxed);
                let _ = ack.record(self.micros(due));
            }
        }
    }

    /// A dashboard delivered the metric `seq` of agent `index`, stamped `timestamp` (its due time).
    /// `covers` is the `firstSeq..=lastSeq` range of a coalesced update: the earlier metrics it stands
    /// for are counted as coalesced, not lost (their latency is unknown: only this one's is recorded).
    pub fn delivered(&self, index: usize, seq: Option<u64>, timestamp: f64, covers: Option<(u64, u64)>) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let duplicate = {
            let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
            let duplicate = seq.is_some_and(|seq| seqs.see(index, seq));
            if let Some((first, last)) = covers
                && seqs.cover(index, first, last).is_none()
            {
                drop(seqs);
                self.error("dashboard: implausible coalesced range", 1);
            }
            duplicate
        };
        if !duplicate && timestamp >= self.measure_from_ms {
            let _ = self
                .e2e
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(self.micros(timestamp));
        }
    }

    /// A dashboard was told that `events` events (`None`: an unknown number) could not be delivered.
    pub fn gap(&self, events: Option<u64>) {
        self.gap_frames.fetch_add(1, Ordering::Relaxed);
        match events {
            Some(n) => self.gap_events.fetch_add(n, Ordering::Relaxed),
            None => self.gaps_uncounted.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// What the gap frames said so far.
    pub fn gaps(&self) -> crate::report::Gaps {
        crate::report::Gaps {
            frames: self.gap_frames.load(Ordering::Relaxed),
            events: self.gap_events.load(Ordering::Relaxed),
            uncounted: self.gaps_uncounted.load(Ordering::Relaxed),
        }
    }

    /// Counts an error of `kind` (e.g. `http 503`, `close 1008`, `timeout`).
    pub fn error(&self, kind: impl Into<String>, count: u64) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.into())
            .or_default() += count;
    }

    /// Notes how late the generator was in sending something due at `due_ms`.
    pub fn lag(&self, due_ms: f64) {
        let lag = ((self.clock.now_ms() - due_ms).max(0.0) * 1000.0) as u64;
        self.max_lag_us.fetch_max(lag, Ordering::Relaxed);
    }

    /// The errors so far, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the ack-latency histogram.
    pub fn ack_histogram(&self) -> Histogram<u64> {
        self.ack.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A copy of the end-to-end-latency histogram.
    pub fn e2e_histogram(&self) -> Histogram<u64> {
        self.e2e.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// What the dashboard accounted for by `seq`.
    pub fn seq_counts(&self) -> SeqCounts {
        let s = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        SeqCounts {
            distinct: s.distinct,
            duplicates: s.duplicates,
            coalesced: s.coalesced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_counts_distinct_and_duplicate_seqs_per_agent() {
        let mut t = SeqTracker::default();
        assert!(!t.see(1, 0));
        assert!(!t.see(1, 1000));
        assert!(!t.see(2, 0), "another agent's seq 0 is another metric");
        assert!(t.see(1, 0));
        assert!(t.see(1, 1000));
        assert_eq!((t.distinct, t.duplicates), (3, 2));
    }

    #[test]
    fn a_coalesced_range_counts_what_was_not_seen_on_its_own() {
        let mut t = SeqTracker::default();
        t.see(1, 0);
        t.see(1, 5);
        // The update of seq 5 stood for 1..=5: 1–4 are coalesced; 5 was seen.
        assert_eq!(t.cover(1, 1, 5), Some(4));
        assert_eq!((t.distinct, t.coalesced), (2, 4));
        assert_eq!(t.cover(1, 3, 5), Some(0), "covered twice counts once");
        // Seq 3 arrives on its own after all: it moves from coalesced to distinct.
        assert!(!t.see(1, 3));
        assert_eq!((t.distinct, t.coalesced), (3, 3));
        assert_eq!(t.cover(1, 7, 6), None, "an inverted range");
        assert_eq!(t.cover(1, 0, MAX_COALESCED_SPAN + 1), None, "too wide to believe");
        assert_eq!(t.coalesced, 3, "nothing recorded for a range not believed");
    }

    #[test]
    fn warm_up_metrics_are_counted_but_not_timed() {
        let clock = Clock::new();
        let r = Recorder::new(clock, clock.now_ms() - 1_000.0);
        r.acked(clock.now_ms() - 10_000.0, 1.0, 5);
        assert_eq!(r.acked.load(Ordering::Relaxed), 5);
        assert_eq!(r.ack_histogram().len(), 0);
        r.acked(clock.now_ms() - 0.5, 0.1, 3);
        assert_eq!(r.ack_histogram().len(), 3);
        assert_eq!(r.acked_measured.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn latency_counts_from_the_due_time() {
        let clock = Clock::new();
        let r = Recorder::new(clock, 0.0);
        r.acked(clock.now_ms() - 250.0, 0.0, 1);
        let h = r.ack_histogram();
        let ms = h.max() as f64 / 1000.0;
        assert!((250.0..300.0).contains(&ms), "{ms}");
    }
}
