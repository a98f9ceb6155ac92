//! Simulated servers: plausible, reproducible vital signs.
//!
//! Each agent's readings follow a slow wave (a few minutes long, with its own phase) plus jitter, and
//! now and then a spike: cpu and network in jump by `--spike-multiplier` for a few samples. Everything
//! comes from a ChaCha random generator seeded from `--seed` and the agent's number, and the wave is a
//! function of the sample number, not of the clock: the same seed sends the same values, run after run,
//! on any machine.

use lab_core::{Metric, Network, Readings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Samples in one period of the slow wave.
const WAVE_SAMPLES: f64 = 300.0;

/// One simulated server.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its id, e.g. `server-3`.
    pub server_id: String,
    /// The `seq` of its next metric.
    pub next_seq: u64,
    rng: ChaCha8Rng,
    /// Where on the wave it starts, so that servers differ.
    phase: f64,
    /// Its baseline load, 10–50 %.
    baseline: f64,
    /// Samples of spike left.
    spike_left: u32,
    spike_probability: f64,
    spike_multiplier: f64,
}

impl Source {
    /// Agent number `index` (1-based) of a run seeded with `seed`.
    pub fn new(prefix: &str, index: u64, seed: u64, spike_probability: f64, spike_multiplier: f64) -> Self {
        // Distinct, well-mixed seeds per agent (splitmix64's constant).
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let phase = rng.random_range(0.0..std::f64::consts::TAU);
        let baseline = rng.random_range(10.0..50.0);
        Source {
            server_id: format!("{prefix}{index}"),
            next_seq: 0,
            rng,
            phase,
            baseline,
            spike_left: 0,
            spike_probability,
            spike_multiplier,
        }
    }

    /// The next metric, stamped `timestamp` (its due time, in epoch ms).
    pub fn next(&mut self, timestamp: f64) -> Metric {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.spike_left > 0 {
            self.spike_left -= 1;
        } else if self.rng.random_bool(self.spike_probability) {
            self.spike_left = self.rng.random_range(2..8);
        }
        let spike = if self.spike_left > 0 {
            self.spike_multiplier
        } else {
            1.0
        };
        let wave = (seq as f64 / WAVE_SAMPLES * std::f64::consts::TAU + self.phase).sin();
        let mut jitter = |amplitude: f64| self.rng.random_range(-amplitude..=amplitude);
        let cpu = ((self.baseline + 20.0 * wave + jitter(6.0)) * spike).clamp(0.0, 100.0);
        let memory = (self.baseline + 25.0 + 10.0 * wave + jitter(3.0)).clamp(0.0, 100.0);
        let disk = (self.baseline + 35.0 + 2.0 * wave + jitter(1.0)).clamp(0.0, 100.0);
        let rx = ((300.0 + 150.0 * wave + jitter(100.0)) * spike).max(0.0);
        let tx = (250.0 + 100.0 * wave + jitter(80.0)).max(0.0);
        Metric {
            server_id: self.server_id.clone(),
            timestamp,
            metrics: Readings {
                cpu: round2(cpu),
                memory: round2(memory),
                disk: round2(disk),
                network: Some(Network {
                    rx: rx.round(),
                    tx: tx.round(),
                }),
                extra: vec![],
            },
            seq: Some(seq),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_sends_the_same_values() {
        let mut a = Source::new("server-", 3, 42, 0.1, 2.5);
        let mut b = Source::new("server-", 3, 42, 0.1, 2.5);
        for i in 0..1000 {
            assert_eq!(a.next(i as f64), b.next(i as f64));
        }
    }

    #[test]
    fn seeds_and_agents_differ() {
        let first = |seed, index| Source::new("s", index, seed, 0.1, 2.5).next(0.0).metrics;
        assert_ne!(first(1, 1), first(2, 1));
        assert_ne!(first(1, 1), first(1, 2));
    }

    #[test]
    fn readings_are_always_valid_metrics_even_in_spikes() {
        let mut s = Source::new("server-", 1, 7, 0.5, 100.0);
        for i in 0..10_000 {
            let m = s.next(1_763_800_000_000.0 + i as f64);
            assert!(m.is_valid(), "{m:?}");
            assert_eq!(m.seq, Some(i));
        }
    }

    #[test]
    fn spikes_happen_at_about_the_asked_probability() {
        let mut quiet = Source::new("s", 1, 1, 0.0, 3.0);
        let mut spiky = Source::new("s", 1, 1, 0.2, 3.0);
        let max_rx = |s: &mut Source| {
            (0..2000)
                .map(|i| s.next(i as f64).metrics.network.unwrap().rx)
                .fold(0.0, f64::max)
        };
        assert!(max_rx(&mut quiet) <= 550.0);
        assert!(max_rx(&mut spiky) > 600.0);
    }
}
