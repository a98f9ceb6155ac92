//! Sliding-window aggregation of one server's metrics: the arithmetic both systems share.
//!
//! System 2 keeps one [`ServerWindows`] per server in memory; System 1's workers keep them too and
//! write the results to Redis. Same code, same input, same numbers: the lab compares transports and
//! state stores, never two different maths.
//!
//! # The model
//!
//! Each server has a buffer of its most recent samples (at most `capacity`, the original's
//! `SYSTEM2_BUFFER_SIZE`), **kept in timestamp order**. The server's "now" `T` is the newest
//! timestamp it has sent: event time, not the wall clock, so a replay gives the same answers. A window
//! of length `W` holds the buffered samples with `timestamp ≥ T − W` (inclusive, as the original).
//! For each window we report the number of samples and the average, minimum and maximum of cpu,
//! memory, disk, network in and network out. A sample without `network` counts as 0 for both, as in
//! the original.
//!
//! # Why adding a sample is O(1)
//!
//! The original recomputed every window by scanning the whole buffer on every metric: O(buffer ×
//! windows) per metric. Here each window keeps a running sum and the position where it starts in the
//! buffer. A new sample is added to every window's sum, then each window's start moves forward past
//! the samples that fell out of it, subtracting them. Every sample enters and leaves each window once,
//! so the cost per metric is O(windows), whatever the buffer size (the `core` benchmark shows it).
//!
//! Sums are kept as integers of millionths (`i128`), not floats: subtracting floats that were added
//! long ago leaves rounding residue that grows without bound, while integer sums are exact forever.
//! Averages are therefore exact to 10⁻⁶, the resolution of the fixed point.
//!
//! Minimum and maximum cannot be "un-added", so each field keeps a *monotonic deque* over the largest
//! window: the candidates for the minimum in increasing order of both position and value. The minimum
//! of any window is the first candidate at or after the window's start, found by binary search: O(log n).
//!
//! # Late, stale and future samples — the policy
//!
//! - **In order** (`timestamp ≥ T`): appended; the common case, O(1) amortised.
//! - **Late** (`T − largest window ≤ timestamp < T`): inserted at its place in time order, counted in
//!   exactly the windows it belongs to. Costs O(samples in the largest window), because the min/max
//!   deques are rebuilt; reported as [`Added::Late`] so servers can count them.
//! - **Stale** (`timestamp < T − largest window`): it belongs to no window, so it changes nothing and is
//!   not buffered; reported as [`Added::Stale`] and counted by the server — never silently.
//! - **Future** (`timestamp` far ahead of the receiving server's clock): refused at ingest with a
//!   precise error ([`crate::parse::check_not_future`]), because one such sample would make every honest
//!   sample after it stale.

use std::collections::VecDeque;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::metric::Readings;

/// Most windows one server may have. Each costs a running sum per field and work per sample.
pub const MAX_WINDOWS: usize = 8;

/// Longest window, in milliseconds: one day.
pub const MAX_WINDOW_MS: u64 = 86_400_000;

/// Largest per-server buffer capacity (samples). Memory is `48 bytes × capacity` per busy server.
pub const MAX_CAPACITY: usize = 1_000_000;

/// Fixed-point scale of the running sums: values are summed as integer millionths.
const SCALE: f64 = 1e6;

/// The number of aggregated fields: cpu, memory, disk, network in, network out.
const FIELDS: usize = 5;

/// The window lengths, in milliseconds, sorted and distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    lengths_ms: Vec<u64>,
}

/// A window configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowSpecError {
    /// No window at all.
    #[error("at least one window is required")]
    Empty,
    /// Too many windows.
    #[error("at most {MAX_WINDOWS} windows are allowed (got {0})")]
    TooMany(usize),
    /// A window of zero or absurd length.
    #[error("window length must be between 1 and {MAX_WINDOW_MS} ms (got {0})")]
    BadLength(u64),
    /// A buffer that cannot hold a sample, or is absurdly large.
    #[error("buffer capacity must be between 1 and {MAX_CAPACITY} samples (got {0})")]
    BadCapacity(usize),
}

impl WindowSpec {
    /// Windows of these lengths (any order; duplicates are merged).
    pub fn new(lengths_ms: impl IntoIterator<Item = u64>) -> Result<Self, WindowSpecError> {
        let mut lengths_ms: Vec<u64> = lengths_ms.into_iter().collect();
        if let Some(&bad) = lengths_ms.iter().find(|&&l| l == 0 || l > MAX_WINDOW_MS) {
            return Err(WindowSpecError::BadLength(bad));
        }
        lengths_ms.sort_unstable();
        lengths_ms.dedup();
        match lengths_ms.len() {
            0 => Err(WindowSpecError::Empty),
            n if n > MAX_WINDOWS => Err(WindowSpecError::TooMany(n)),
            _ => Ok(WindowSpec { lengths_ms }),
        }
    }

    /// The original lab's windows: a base, 5× and 10× it (`SYSTEM2_AGG_WINDOW_MS`, default 1 000).
    pub fn from_base(base_ms: u64) -> Result<Self, WindowSpecError> {
        Self::new([base_ms, base_ms.saturating_mul(5), base_ms.saturating_mul(10)])
    }

    /// The window lengths, ascending.
    pub fn lengths_ms(&self) -> &[u64] {
        &self.lengths_ms
    }
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self::from_base(1_000).expect("the default windows are valid")
    }
}

/// One buffered sample: its time and its five aggregated values, as given (for min and max) and in
/// the fixed point of the running sums (computed once, when the sample arrives: the amount subtracted
/// when it leaves a window is then exactly the amount added when it entered).
#[derive(Debug, Clone, Copy)]
struct Sample {
    ts: f64,
    values: [f64; FIELDS],
    fixed: [i64; FIELDS],
}

impl Sample {
    fn of(ts: f64, r: &Readings) -> Self {
        let (rx, tx) = r.network.map_or((0.0, 0.0), |n| (n.rx, n.tx));
        let values = [r.cpu, r.memory, r.disk, rx, tx];
        Sample {
            ts,
            values,
            fixed: values.map(|v| round_to_i64(v * SCALE)),
        }
    }

    fn fixed(&self, f: usize) -> i128 {
        i128::from(self.fixed[f])
    }
}

/// Rounds half away from zero to an integer. `f64::round` is a library call on baseline x86-64 (no
/// SSE4.1); adding ±0.5 and truncating is an instruction each, and just as deterministic. Values are
/// bounded by validation ([`crate::limits::MAX_NETWORK_VALUE`] × 10⁶ fits an `i64`); the cast
/// saturates anyway.
fn round_to_i64(x: f64) -> i64 {
    (x + 0.5f64.copysign(x)) as i64
}

/// Converts an exact integer sum to `f64`, avoiding the slow software `i128 → f64` routine for the
/// sums that fit an `i64` (all but absurd ones).
fn sum_to_f64(sum: i128) -> f64 {
    match i64::try_from(sum) {
        Ok(small) => small as f64,
        Err(_) => sum as f64,
    }
}

/// One window's running state.
#[derive(Debug, Clone)]
struct Window {
    length_ms: f64,
    /// Index in the buffer of the first sample inside this window.
    start: usize,
    /// Running sums of the samples inside, in millionths.
    sums: [i128; FIELDS],
}

/// A monotonic deque of `(absolute position, value)` candidates for one field's minimum (or maximum).
#[derive(Debug, Clone, Default)]
struct Extremes {
    candidates: VecDeque<(u64, f64)>,
}

impl Extremes {
    /// Adds the newest value; `better(a, b)` is true when `a` beats or ties `b` (`<=` for a minimum).
    fn push(&mut self, pos: u64, value: f64, better: fn(f64, f64) -> bool) {
        while self.candidates.back().is_some_and(|&(_, v)| better(value, v)) {
            self.candidates.pop_back();
        }
        self.candidates.push_back((pos, value));
    }

    /// Forgets candidates before absolute position `first`.
    fn trim(&mut self, first: u64) {
        while self.candidates.front().is_some_and(|&(p, _)| p < first) {
            self.candidates.pop_front();
        }
    }

    /// The best value at or after absolute position `first`.
    fn best_from(&self, first: u64) -> Option<f64> {
        let i = self.candidates.partition_point(|&(p, _)| p < first);
        self.candidates.get(i).map(|&(_, v)| v)
    }
}

/// What happened to a sample given to [`ServerWindows::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// At or after the newest timestamp: the common case.
    InOrder,
    /// Older than the newest but inside the largest window: inserted in time order.
    Late,
    /// Older than every window: it changes nothing and was not buffered.
    Stale,
}

/// The sliding windows of one server.
#[derive(Debug, Clone)]
pub struct ServerWindows {
    /// Most samples kept; the oldest goes when a new one would exceed it.
    capacity: usize,
    /// Samples in timestamp order, oldest first.
    buffer: VecDeque<Sample>,
    /// Absolute position of `buffer[0]`: how many samples have ever left the front. Lets the
    /// min/max deques name samples by a number that does not change when the front moves.
    base: u64,
    /// One state per window, in the order of the spec (ascending length).
    windows: Vec<Window>,
    /// Per field, min and max candidates over the largest window.
    mins: [Extremes; FIELDS],
    maxs: [Extremes; FIELDS],
}

fn le(a: f64, b: f64) -> bool {
    a <= b
}
fn ge(a: f64, b: f64) -> bool {
    a >= b
}

impl ServerWindows {
    /// Empty windows per `spec`, keeping at most `capacity` samples.
    pub fn new(spec: &WindowSpec, capacity: usize) -> Result<Self, WindowSpecError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(WindowSpecError::BadCapacity(capacity));
        }
        let windows = spec
            .lengths_ms()
            .iter()
            .map(|&l| Window {
                length_ms: l as f64,
                start: 0,
                sums: [0; FIELDS],
            })
            .collect();
        Ok(ServerWindows {
            capacity,
            buffer: VecDeque::new(),
            base: 0,
            windows,
            mins: Default::default(),
            maxs: Default::default(),
        })
    }

    /// The newest timestamp seen: this server's "now". `None` before the first sample.
    pub fn newest(&self) -> Option<f64> {
        self.buffer.back().map(|s| s.ts)
    }

    /// How many samples are buffered.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether no sample is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Adds one sample. See the module docs for the late/stale policy.
    pub fn add(&mut self, timestamp: f64, readings: &Readings) -> Added {
        let added = self.add_one(timestamp, readings);
        if added == Added::Late {
            self.rebuild_extremes();
        }
        added
    }

    /// Adds samples in the order given, with the same result as one [`add`](Self::add) for each
    /// (`outcome` hears what happened to each), at a lower cost when some are late: a late sample
    /// shifts the positions the min/max bookkeeping names, and [`add`](Self::add) rebuilds that
    /// bookkeeping at once (O(buffer)); here it is rebuilt once, after the last sample. System 1's
    /// workers need this: a worker that has just read another worker's newer samples adds its own
    /// batch late, every sample of it.
    pub fn add_all<'r>(
        &mut self,
        samples: impl IntoIterator<Item = (f64, &'r Readings)>,
        mut outcome: impl FnMut(Added),
    ) {
        let mut late = false;
        for (timestamp, readings) in samples {
            let added = self.add_one(timestamp, readings);
            late |= added == Added::Late;
            outcome(added);
        }
        // Until now the min/max candidates may name shifted positions; nothing has read them.
        if late {
            self.rebuild_extremes();
        }
    }

    /// [`add`](Self::add), except that a late sample leaves the min/max candidates to be rebuilt.
    fn add_one(&mut self, timestamp: f64, readings: &Readings) -> Added {
        let sample = Sample::of(timestamp, readings);
        let outcome = match self.newest() {
            None => Added::InOrder,
            Some(t) if timestamp >= t => Added::InOrder,
            Some(t) if timestamp >= t - self.largest_ms() => Added::Late,
            Some(_) => return Added::Stale,
        };
        if outcome == Added::InOrder {
            self.buffer.push_back(sample);
            let pos = self.base + self.buffer.len() as u64 - 1;
            for f in 0..FIELDS {
                self.mins[f].push(pos, sample.values[f], le);
                self.maxs[f].push(pos, sample.values[f], ge);
            }
            for w in &mut self.windows {
                for (f, sum) in w.sums.iter_mut().enumerate() {
                    *sum += sample.fixed(f);
                }
            }
            self.advance_starts();
        } else {
            self.insert_late(sample);
        }
        // Drop what no window can see any more, then enforce the capacity.
        let oldest_useful = self.newest().unwrap_or(timestamp) - self.largest_ms();
        while self.buffer.front().is_some_and(|s| s.ts < oldest_useful) || self.buffer.len() > self.capacity {
            self.pop_front();
        }
        outcome
    }

    fn largest_ms(&self) -> f64 {
        self.windows.last().map_or(0.0, |w| w.length_ms)
    }

    /// Moves every window's start past the samples older than `T − length`, subtracting them.
    fn advance_starts(&mut self) {
        let Some(t) = self.newest() else { return };
        for w in &mut self.windows {
            while let Some(s) = self.buffer.get(w.start).filter(|s| s.ts < t - w.length_ms) {
                for (f, sum) in w.sums.iter_mut().enumerate() {
                    *sum -= s.fixed(f);
                }
                w.start += 1;
            }
        }
    }

    /// Inserts a late sample at its place in time order (after samples with an equal timestamp). The
    /// min/max candidates must be rebuilt afterwards: the positions after it have shifted.
    fn insert_late(&mut self, sample: Sample) {
        let t = self
            .newest()
            .expect("late samples only exist once there is a newest");
        let pos = self.buffer.partition_point(|s| s.ts <= sample.ts);
        self.buffer.insert(pos, sample);
        for w in &mut self.windows {
            if sample.ts >= t - w.length_ms {
                // Inside: the buffer is sorted and the window holds exactly the samples from `start`
                // on that are recent enough, so the new one lands at or after `start`.
                for (f, sum) in w.sums.iter_mut().enumerate() {
                    *sum += sample.fixed(f);
                }
            } else {
                // Outside: it landed before the window's first sample, which moved one place right.
                w.start += 1;
            }
        }
    }

    /// Rebuilds the min/max deques from the buffer: positions after a late insert have shifted.
    fn rebuild_extremes(&mut self) {
        let first = self.windows.last().map_or(0, |w| w.start);
        for f in 0..FIELDS {
            self.mins[f].candidates.clear();
            self.maxs[f].candidates.clear();
        }
        for (i, s) in self.buffer.iter().enumerate().skip(first) {
            let pos = self.base + i as u64;
            for f in 0..FIELDS {
                self.mins[f].push(pos, s.values[f], le);
                self.maxs[f].push(pos, s.values[f], ge);
            }
        }
    }

    /// Removes the oldest sample, taking it out of every window that held it.
    fn pop_front(&mut self) {
        let Some(s) = self.buffer.pop_front() else { return };
        for w in &mut self.windows {
            if w.start == 0 {
                for (f, sum) in w.sums.iter_mut().enumerate() {
                    *sum -= s.fixed(f);
                }
            } else {
                w.start -= 1;
            }
        }
        self.base += 1;
        for f in 0..FIELDS {
            self.mins[f].trim(self.base);
            self.maxs[f].trim(self.base);
        }
    }

    /// The current summary of every window. O(windows × log samples).
    pub fn summaries(&self) -> WindowSummaries {
        let windows = self
            .windows
            .iter()
            .map(|w| {
                let samples = (self.buffer.len() - w.start.min(self.buffer.len())) as u64;
                let summary = if samples == 0 {
                    WindowSummary {
                        samples,
                        averages: None,
                        min: None,
                        max: None,
                    }
                } else {
                    let first = self.base + w.start as u64;
                    let stats = |pick: &dyn Fn(usize) -> f64| Stats {
                        cpu: pick(0),
                        memory: pick(1),
                        disk: pick(2),
                        network_in: pick(3),
                        network_out: pick(4),
                    };
                    let n = samples as f64;
                    WindowSummary {
                        samples,
                        // Rounded to the fixed point's resolution: digits beyond it would be noise,
                        // and every one costs bytes and formatting time in each update.
                        averages: Some(stats(&|f| round_to_i64(sum_to_f64(w.sums[f]) / n) as f64 / SCALE)),
                        min: Some(stats(&|f| self.mins[f].best_from(first).unwrap_or(f64::NAN))),
                        max: Some(stats(&|f| self.maxs[f].best_from(first).unwrap_or(f64::NAN))),
                    }
                };
                (w.length_ms as u64, summary)
            })
            .collect();
        WindowSummaries(windows)
    }
}

/// Five aggregated values: the same field names as the original's `averages`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// CPU, percent.
    pub cpu: f64,
    /// Memory, percent.
    pub memory: f64,
    /// Disk, percent.
    pub disk: f64,
    /// Network in, bytes per second.
    #[serde(rename = "networkIn")]
    pub network_in: f64,
    /// Network out, bytes per second.
    #[serde(rename = "networkOut")]
    pub network_out: f64,
}

/// One window's summary: `{"samples":N,"averages":{...},"min":{...},"max":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSummary {
    /// How many samples the window holds.
    pub samples: u64,
    /// Averages; `null` for an empty window (as the original).
    pub averages: Option<Stats>,
    /// **(ext)** Minimums; absent for an empty window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Stats>,
    /// **(ext)** Maximums; absent for an empty window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Stats>,
}

/// Every window's summary, keyed by window length in ms, ascending: `{"1000":{...},"5000":{...}}`.
/// Ascending order matters: the original dashboard plots `Object.keys(windows)[0]`, the shortest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowSummaries(pub Vec<(u64, WindowSummary)>);

impl WindowSummaries {
    /// The summary of the window of this length, if there is one.
    pub fn get(&self, length_ms: u64) -> Option<&WindowSummary> {
        self.0.iter().find(|(l, _)| *l == length_ms).map(|(_, s)| s)
    }
}

impl Serialize for WindowSummaries {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (length, summary) in &self.0 {
            map.serialize_entry(&length.to_string(), summary)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for WindowSummaries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WindowSummaries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from window length (ms) to window summary")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WindowSummaries, A::Error> {
                let mut out = Vec::new();
                while let Some((key, summary)) = map.next_entry::<String, WindowSummary>()? {
                    let length = key.parse::<u64>().map_err(|_| {
                        de::Error::custom(format_args!("window key {key:?} is not a length in ms"))
                    })?;
                    out.push((length, summary));
                }
                out.sort_by_key(|(l, _)| *l);
                Ok(WindowSummaries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(v: f64) -> Readings {
        Readings {
            cpu: v,
            memory: 50.0,
            disk: 50.0,
            network: None,
            extra: vec![],
        }
    }

    fn windows(base: u64, capacity: usize) -> ServerWindows {
        ServerWindows::new(&WindowSpec::from_base(base).unwrap(), capacity).unwrap()
    }

    fn avg_cpu(w: &ServerWindows, length: u64) -> Option<f64> {
        w.summaries().get(length).unwrap().averages.map(|a| a.cpu)
    }

    #[test]
    fn a_window_holds_samples_at_or_after_its_start() {
        let mut w = windows(1000, 500);
        for (ts, v) in [(0.0, 10.0), (500.0, 20.0), (1000.0, 30.0), (1500.0, 40.0)] {
            assert_eq!(w.add(ts, &cpu(v)), Added::InOrder);
        }
        // T = 1500: the 1 s window starts at 500 (inclusive, as the original): 20, 30, 40.
        let s = w.summaries();
        assert_eq!(s.get(1000).unwrap().samples, 3);
        assert_eq!(avg_cpu(&w, 1000), Some(30.0));
        assert_eq!(s.get(1000).unwrap().min.unwrap().cpu, 20.0);
        assert_eq!(s.get(1000).unwrap().max.unwrap().cpu, 40.0);
        assert_eq!(s.get(5000).unwrap().samples, 4);
        assert_eq!(avg_cpu(&w, 5000), Some(25.0));
    }

    #[test]
    fn a_missing_network_counts_as_zero_as_in_the_original() {
        let mut w = windows(1000, 10);
        let mut with_net = cpu(0.0);
        with_net.network = Some(crate::Network { rx: 100.0, tx: 50.0 });
        w.add(0.0, &with_net);
        w.add(1.0, &cpu(0.0));
        let avg = w.summaries().get(1000).unwrap().averages.unwrap();
        assert_eq!((avg.network_in, avg.network_out), (50.0, 25.0));
    }

    #[test]
    fn a_late_sample_counts_only_in_the_windows_that_reach_back_to_it() {
        let mut w = windows(1000, 500);
        w.add(10_000.0, &cpu(10.0));
        // 3 s late: outside the 1 s window, inside the 5 s and 10 s ones.
        assert_eq!(w.add(7_000.0, &cpu(90.0)), Added::Late);
        assert_eq!(
            w.newest(),
            Some(10_000.0),
            "a late sample does not move time back"
        );
        assert_eq!(avg_cpu(&w, 1000), Some(10.0));
        assert_eq!(avg_cpu(&w, 5000), Some(50.0));
        assert_eq!(w.summaries().get(5000).unwrap().max.unwrap().cpu, 90.0);
        // When time moves on by 2.5 s the late sample leaves the 5 s window exactly when it should.
        w.add(12_500.0, &cpu(30.0));
        assert_eq!(w.summaries().get(5000).unwrap().samples, 2);
        assert_eq!(avg_cpu(&w, 5000), Some(20.0));
    }

    #[test]
    fn a_stale_sample_changes_nothing_and_says_so() {
        let mut w = windows(1000, 500);
        w.add(20_000.0, &cpu(10.0));
        let before = w.summaries();
        assert_eq!(w.add(9_999.0, &cpu(99.0)), Added::Stale);
        assert_eq!(w.summaries(), before);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_buffer_capacity_bounds_what_windows_see() {
        let mut w = windows(1000, 3);
        for (i, v) in [10.0, 20.0, 30.0, 40.0, 50.0].into_iter().enumerate() {
            w.add(i as f64, &cpu(v));
        }
        assert_eq!(w.len(), 3);
        let s = w.summaries();
        assert_eq!(s.get(1000).unwrap().samples, 3);
        assert_eq!(avg_cpu(&w, 1000), Some(40.0));
        assert_eq!(
            s.get(1000).unwrap().min.unwrap().cpu,
            30.0,
            "the evicted minimum is forgotten"
        );
    }

    #[test]
    fn samples_older_than_every_window_are_not_kept() {
        let mut w = windows(100, 500);
        for i in 0..100 {
            w.add(f64::from(i) * 100.0, &cpu(1.0));
        }
        // Windows 100, 500, 1000 ms at T = 9900: samples at 8900..=9900 are useful, 11 of them.
        assert_eq!(w.len(), 11);
    }

    #[test]
    fn empty_windows_report_null_averages_like_the_original() {
        let mut w = windows(1000, 500);
        w.add(0.0, &cpu(1.0));
        // Nothing can make a window empty while T's own sample is in it; a fresh server has none.
        let fresh = windows(1000, 500);
        let s = fresh.summaries();
        assert_eq!(
            s.get(1000).unwrap(),
            &WindowSummary {
                samples: 0,
                averages: None,
                min: None,
                max: None
            }
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"1000":{"samples":0,"averages":null},"5000":{"samples":0,"averages":null},"10000":{"samples":0,"averages":null}}"#
        );
        assert_eq!(w.summaries().get(1000).unwrap().samples, 1);
    }

    #[test]
    fn sums_do_not_drift_over_millions_of_samples() {
        // Values that are not exact in binary, added and removed millions of times: a float running
        // sum would drift; the fixed-point one returns to the exact average.
        let mut w = windows(10, 1_000);
        for i in 0..2_000_000u32 {
            let v = if i % 2 == 0 { 0.1 } else { 99.7 };
            w.add(f64::from(i), &cpu(v));
        }
        w.add(3_000_000.0, &cpu(33.3));
        assert_eq!(avg_cpu(&w, 10), Some(33.3));
    }

    #[test]
    fn window_specs_are_validated() {
        assert_eq!(WindowSpec::new([]), Err(WindowSpecError::Empty));
        assert_eq!(WindowSpec::new([0]), Err(WindowSpecError::BadLength(0)));
        assert_eq!(WindowSpec::new(1..=9), Err(WindowSpecError::TooMany(9)));
        assert_eq!(
            WindowSpec::new([5000, 1000, 5000]).unwrap().lengths_ms(),
            &[1000, 5000]
        );
        assert_eq!(WindowSpec::default().lengths_ms(), &[1000, 5000, 10000]);
        assert_eq!(
            WindowSpec::from_base(u64::MAX),
            Err(WindowSpecError::BadLength(u64::MAX))
        );
        assert!(matches!(
            ServerWindows::new(&WindowSpec::default(), 0),
            Err(WindowSpecError::BadCapacity(0))
        ));
    }

    #[test]
    fn summaries_round_trip_through_json() {
        let mut w = windows(1000, 500);
        w.add(1.0, &cpu(12.5));
        let s = w.summaries();
        let back: WindowSummaries = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let err =
            serde_json::from_str::<WindowSummaries>(r#"{"soon":{"samples":0,"averages":null}}"#).unwrap_err();
        assert!(err.to_string().contains("not a length in ms"), "{err}");
    }
}
