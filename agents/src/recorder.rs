//! Everything a run measures, shared by its connections, its dashboard subscriber and its progress line.
//!
//! Latencies are recorded in microseconds in HdrHistograms (1 µs to 1 h, 3 significant digits), which
//! keep every percentile honest to 0.1 % without storing samples, and merge exactly across processes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::pacing::Clock;

/// The largest latency recorded, in µs (one hour); larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Which metrics of which agent a dashboard has seen: one bit per `seq`.
#[derive(Debug, Default)]
pub struct SeqTracker {
    /// Per agent (index − 1), a bitset of seen `seq`s.
    seen: Vec<Vec<u64>>,
    /// Distinct metrics seen.
    pub distinct: u64,
    /// Metrics seen more than once.
    pub duplicates: u64,
}

impl SeqTracker {
    /// Records that agent `index` (1-based) delivered `seq`; returns whether it was a duplicate.
    pub fn see(&mut self, index: usize, seq: u64) -> bool {
        if index == 0 {
            return false;
        }
        if self.seen.len() < index {
            self.seen.resize_with(index, Vec::new);
        }
        let bits = &mut self.seen[index - 1];
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let duplicate = bits[word] & (1 << bit) != 0;
        bits[word] |= 1 << bit;
        if duplicate {
            self.duplicates += 1;
        } else {
            self.distinct += 1;
        }
        duplicate
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
    pub fn delivered(&self, index: usize, seq: Option<u64>, timestamp: f64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let duplicate = match seq {
            Some(seq) => self
                .seqs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .see(index, seq),
            None => false,
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

    /// (distinct, duplicates) delivered.
    pub fn seq_counts(&self) -> (u64, u64) {
        let s = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        (s.distinct, s.duplicates)
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
