//! When each metric is due, and waking senders on time.
//!
//! **Open loop.** Metric k of a connection is due at `start + k / rate`, whatever happened before: a
//! sender that fell behind (because the server stalled, or the machine did) sends what is overdue at
//! once, and each metric's latency counts from its due time. A closed-loop generator would instead wait
//! for the server and then measure only the metrics it got round to sending: the "coordinated
//! omission" that makes a stalled server look fast.
//!
//! **Waking on time.** tokio's timer has a 1 ms resolution, so a sender sleeping on it sends up to a
//! millisecond late, and that lateness would be counted as the server's latency. Spinning instead
//! would steal the cores the server needs. So one OS thread ([`Pacer`]) sleeps in short, precise steps
//! (`std::thread::sleep`, about 60 µs on Linux) and wakes exactly the senders whose next metric is due.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How often the pacer thread looks at the clock.
const PACER_STEP: Duration = Duration::from_micros(50);

/// One clock for a whole run: the wall time at the start plus a monotonic offset, so that timestamps
/// are epoch milliseconds (as the protocol wants) and never jump backwards.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_ms: f64,
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Clock {
            wall_ms: lab_core::now_ms(),
            start: Instant::now(),
        }
    }

    /// Epoch milliseconds, with a fraction.
    pub fn now_ms(&self) -> f64 {
        self.wall_ms + self.start.elapsed().as_secs_f64() * 1000.0
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A fixed-rate schedule: slot `k` is due at `start_ms + k × interval_ms`, moved by its jitter.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// When slot 0 is due, epoch ms.
    pub start_ms: f64,
    /// Milliseconds between slots.
    pub interval_ms: f64,
    /// Each slot moves by up to ± this many ms (`--jitter-ms`), at most half an interval so that slots
    /// keep their order. The due time itself moves: jitter is never counted as latency.
    pub jitter_ms: f64,
    /// Seeds the jitter, so that a run is reproducible.
    pub seed: u64,
}

impl Schedule {
    /// A schedule without jitter.
    pub fn fixed(start_ms: f64, interval_ms: f64) -> Self {
        Schedule {
            start_ms,
            interval_ms,
            jitter_ms: 0.0,
            seed: 0,
        }
    }

    /// When slot `k` is due.
    pub fn due(&self, k: u64) -> f64 {
        let base = self.start_ms + k as f64 * self.interval_ms;
        if self.jitter_ms == 0.0 {
            return base;
        }
        let amplitude = self.jitter_ms.min(self.interval_ms / 2.0);
        base + amplitude * (2.0 * unit(self.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15)) - 1.0)
    }
}

/// A deterministic number in [0, 1) from `x` (splitmix64's finalizer): cheap, and the same everywhere.
fn unit(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Wakes senders when their next metric is due; see the module docs.
#[derive(Debug)]
pub struct Pacer {
    /// Per sender: the due time (µs on the clock) it waits for, `u64::MAX` when not waiting.
    waiting_for: Vec<AtomicU64>,
    wake: Vec<Notify>,
    stop: AtomicBool,
}

impl Pacer {
    /// Starts the pacer thread for `senders` senders; it ends when the pacer is dropped or stopped.
    pub fn start(senders: usize, clock: Clock) -> Arc<Pacer> {
        let pacer = Arc::new(Pacer {
            waiting_for: (0..senders).map(|_| AtomicU64::new(u64::MAX)).collect(),
            wake: (0..senders).map(|_| Notify::new()).collect(),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&pacer);
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || {
                while let Some(p) = weak.upgrade() {
                    if p.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let now_us = (clock.now_ms() * 1000.0) as u64;
                    for (due, wake) in p.waiting_for.iter().zip(&p.wake) {
                        if due.load(Ordering::Acquire) <= now_us {
                            due.store(u64::MAX, Ordering::Release);
                            wake.notify_one();
                        }
                    }
                    drop(p);
                    std::thread::sleep(PACER_STEP);
                }
            })
            .expect("start the pacer thread");
        pacer
    }

    /// Stops the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until `due_ms` on `clock` (returns at once if it has passed).
    pub async fn wait_until(&self, sender: usize, clock: Clock, due_ms: f64) {
        while clock.now_ms() < due_ms {
            self.waiting_for[sender].store((due_ms * 1000.0) as u64, Ordering::Release);
            self.wake[sender].notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pacer_wakes_close_to_the_due_time() {
        let clock = Clock::new();
        let pacer = Pacer::start(1, clock);
        let mut worst: f64 = 0.0;
        for i in 1..=50 {
            let due = clock.now_ms() + 2.0 + f64::from(i % 3);
            pacer.wait_until(0, clock, due).await;
            let late = clock.now_ms() - due;
            assert!(late >= 0.0, "woke {late} ms early");
            worst = worst.max(late);
        }
        pacer.stop();
        // A generous bound: this asserts the mechanism works (no 1 ms timer rounding on every wake),
        // not a speed; precise figures belong to the benchmarks.
        assert!(worst < 50.0, "woke up to {worst} ms late");
    }

    #[test]
    fn a_schedule_is_a_fixed_rate() {
        let s = Schedule::fixed(1000.0, 0.5);
        assert_eq!((s.due(0), s.due(1), s.due(10)), (1000.0, 1000.5, 1005.0));
    }

    #[test]
    fn jitter_is_bounded_reproducible_and_keeps_the_order() {
        let s = Schedule {
            start_ms: 0.0,
            interval_ms: 100.0,
            jitter_ms: 20.0,
            seed: 7,
        };
        let dues: Vec<f64> = (0..10_000).map(|k| s.due(k)).collect();
        for (k, due) in dues.iter().enumerate() {
            assert!((due - k as f64 * 100.0).abs() <= 20.0);
        }
        assert!(dues.iter().any(|d| d.fract() != 0.0), "it does move");
        assert_eq!(dues, (0..10_000).map(|k| s.due(k)).collect::<Vec<_>>());
        let wide = Schedule {
            jitter_ms: 1_000.0,
            ..s
        };
        assert!(
            (0..10_000).all(|k| wide.due(k) <= wide.due(k + 1)),
            "capped at half an interval"
        );
    }
}
