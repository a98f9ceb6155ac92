//! Property tests: what must hold for *every* input, not just the ones we thought of.

use lab_core::aggregate::{Added, ServerWindows, WindowSpec};
use lab_core::metric::diagnose_metric;
use lab_core::parse::{parse_client_frame, parse_dashboard_request, parse_metrics_body};
use lab_core::wire::system2::ClientFrame;
use lab_core::{Metric, Network, Readings};
use proptest::prelude::*;
use serde_json::{Value, json};

fn finite() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite", |f| f.is_finite())
}

prop_compose! {
    fn valid_readings()(
        cpu in 0.0..=100.0f64,
        memory in 0.0..=100.0f64,
        disk in 0.0..=100.0f64,
        network in proptest::option::of((0.0..=1e12f64, 0.0..=1e12f64)),
        extra in proptest::collection::btree_map("x[a-z0-9_.:-]{0,20}", finite(), 0..5),
    ) -> Readings {
        Readings { cpu, memory, disk, network: network.map(|(rx, tx)| Network { rx, tx }), extra: extra.into_iter().collect() }
    }
}

prop_compose! {
    fn valid_metric()(
        server_id in "[A-Za-z0-9._:-]{1,128}",
        timestamp in prop_oneof![0.0..=9_007_199_254_740_991.0f64, (0u64..=9_007_199_254_740_991).prop_map(|t| t as f64)],
        metrics in valid_readings(),
        seq in proptest::option::of(any::<u64>()),
    ) -> Metric {
        Metric { server_id, timestamp, metrics, seq }
    }
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        finite().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        (0.0..=150.0f64).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid metric with one part replaced, removed or added: the inputs that test validation hardest.
fn near_metric() -> impl Strategy<Value = Value> {
    let paths = prop_oneof![
        Just(vec!["serverId"]),
        Just(vec!["timestamp"]),
        Just(vec!["metrics"]),
        Just(vec!["seq"]),
        Just(vec!["extra"]),
        Just(vec!["metrics", "cpu"]),
        Just(vec!["metrics", "memory"]),
        Just(vec!["metrics", "disk"]),
        Just(vec!["metrics", "network"]),
        Just(vec!["metrics", "network", "in"]),
        Just(vec!["metrics", "temp"]),
    ];
    (valid_metric(), paths, proptest::option::of(json_value())).prop_map(|(m, path, replacement)| {
        let mut v = serde_json::to_value(&m).unwrap();
        let mut target = &mut v;
        for key in &path[..path.len() - 1] {
            if target.get(key).is_none() {
                target[key] = json!({"in": 1, "out": 2});
            }
            target = target.get_mut(key).unwrap();
        }
        let last = path[path.len() - 1];
        match replacement {
            Some(r) => target[last] = r,
            None => {
                target.as_object_mut().unwrap().remove(last);
            }
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn valid_metrics_round_trip_through_a_body(m in valid_metric()) {
        let text = serde_json::to_string(&m).unwrap();
        prop_assert_eq!(parse_metrics_body(text.as_bytes()).unwrap(), vec![m]);
    }

    #[test]
    fn valid_batches_round_trip_through_a_frame(items in proptest::collection::vec(valid_metric(), 1..20)) {
        let text = json!({"type": "metrics", "items": items}).to_string();
        prop_assert_eq!(parse_client_frame(text.as_bytes()).unwrap(), ClientFrame::Metrics(items));
    }

    #[test]
    fn valid_metrics_round_trip_through_a_frame(m in valid_metric()) {
        let mut v = serde_json::to_value(&m).unwrap();
        v["type"] = json!("metric");
        prop_assert_eq!(parse_client_frame(v.to_string().as_bytes()).unwrap(), ClientFrame::Metric(m));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_metrics_body(&bytes);
        let _ = parse_client_frame(&bytes);
        let _ = parse_dashboard_request(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_and_errors_always_say_something(v in json_value()) {
        let text = v.to_string();
        let errors = [
            parse_metrics_body(text.as_bytes()).err(),
            parse_client_frame(text.as_bytes()).err(),
            parse_dashboard_request(text.as_bytes()).err(),
        ];
        for err in errors.into_iter().flatten() {
            prop_assert!(!err.problems().is_empty(), "an error without details: {:?}", err);
        }
    }

    /// The fast typed path and the diagnosing walker must agree on every input: same verdict, and the
    /// same metric when both accept. A mutated valid metric is the input most likely to split them.
    #[test]
    fn fast_and_diagnosing_paths_agree(v in prop_oneof![near_metric(), json_value()]) {
        let fast = serde_json::from_value::<Metric>(v.clone()).ok().filter(Metric::is_valid);
        let mut problems = Vec::new();
        let slow = diagnose_metric(&v, "", None, &[], &mut problems);
        prop_assert_eq!(&fast, &slow, "problems: {:?}", problems);
        prop_assert_eq!(slow.is_some(), problems.is_empty());
        // And the public entry point agrees with both.
        let entry = parse_metrics_body(v.to_string().as_bytes()).ok();
        prop_assert_eq!(entry, fast.map(|m| vec![m]));
    }
}

// ---- the aggregator against a brute-force oracle ----

/// The windows' definition, computed the slow and obvious way: keep every accepted sample sorted,
/// apply the same buffer rules, and for each window scan the buffer.
struct Oracle {
    capacity: usize,
    windows: Vec<u64>,
    buffer: Vec<(f64, [f64; 5])>,
}

impl Oracle {
    fn add(&mut self, ts: f64, v: [f64; 5]) -> Added {
        let largest = *self.windows.last().unwrap() as f64;
        let outcome = match self.buffer.last() {
            None => Added::InOrder,
            Some(&(t, _)) if ts >= t => Added::InOrder,
            Some(&(t, _)) if ts >= t - largest => Added::Late,
            Some(_) => return Added::Stale,
        };
        let pos = self.buffer.partition_point(|(t, _)| *t <= ts);
        self.buffer.insert(pos, (ts, v));
        let newest = self.buffer.last().unwrap().0;
        while self.buffer.len() > self.capacity
            || self.buffer.first().is_some_and(|(t, _)| *t < newest - largest)
        {
            self.buffer.remove(0);
        }
        outcome
    }

    /// (window length, samples, (averages, mins, maxs)) per window.
    #[allow(clippy::type_complexity)]
    fn summary(&self) -> Vec<(u64, u64, Option<([f64; 5], [f64; 5], [f64; 5])>)> {
        let newest = self.buffer.last().map_or(0.0, |s| s.0);
        self.windows
            .iter()
            .map(|&w| {
                let inside: Vec<&[f64; 5]> = self
                    .buffer
                    .iter()
                    .filter(|(t, _)| *t >= newest - w as f64)
                    .map(|(_, v)| v)
                    .collect();
                if inside.is_empty() {
                    return (w, 0, None);
                }
                let n = inside.len() as f64;
                let mut avg = [0.0; 5];
                let mut min = [f64::INFINITY; 5];
                let mut max = [f64::NEG_INFINITY; 5];
                for v in &inside {
                    for f in 0..5 {
                        avg[f] += v[f] / n;
                        min[f] = min[f].min(v[f]);
                        max[f] = max[f].max(v[f]);
                    }
                }
                (w, inside.len() as u64, Some((avg, min, max)))
            })
            .collect()
    }
}

fn stats_array(s: &lab_core::aggregate::Stats) -> [f64; 5] {
    [s.cpu, s.memory, s.disk, s.network_in, s.network_out]
}

prop_compose! {
    /// A step in time (mostly forward, sometimes back: late and stale samples) and readings.
    fn step()(
        dt in prop_oneof![8 => 0.0..300.0f64, 1 => -3000.0..0.0f64, 1 => -30_000.0..-9_000.0f64],
        cpu in 0.0..=100.0f64, memory in 0.0..=100.0f64, disk in 0.0..=100.0f64,
        network in proptest::option::of((0.0..=1e9f64, 0.0..=1e9f64)),
    ) -> (f64, Readings) {
        (dt, Readings { cpu, memory, disk, network: network.map(|(rx, tx)| Network { rx, tx }), extra: vec![] })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn windows_match_the_brute_force_oracle(
        steps in proptest::collection::vec(step(), 1..300),
        capacity in prop_oneof![1usize..5, 5usize..50, Just(500usize)],
        base in prop_oneof![Just(100u64), Just(1000u64)],
    ) {
        let spec = WindowSpec::from_base(base).unwrap();
        let mut windows = ServerWindows::new(&spec, capacity).unwrap();
        let mut oracle = Oracle { capacity, windows: spec.lengths_ms().to_vec(), buffer: vec![] };
        let mut ts = 1_000_000.0;
        for (dt, readings) in &steps {
            ts += dt;
            let (rx, tx) = readings.network.map_or((0.0, 0.0), |n| (n.rx, n.tx));
            let expected = oracle.add(ts, [readings.cpu, readings.memory, readings.disk, rx, tx]);
            prop_assert_eq!(windows.add(ts, readings), expected);
            prop_assert_eq!(windows.len(), oracle.buffer.len());
            let got = windows.summaries();
            let want = oracle.summary();
            prop_assert_eq!(got.0.len(), want.len());
            for ((length, summary), (olength, osamples, osummary)) in got.0.iter().zip(want) {
                prop_assert_eq!(*length, olength);
                prop_assert_eq!(summary.samples, osamples);
                match (&summary.averages, osummary) {
                    (None, None) => {}
                    (Some(avg), Some((oavg, omin, omax))) => {
                        for (f, (got, want)) in stats_array(avg).iter().zip(oavg).enumerate() {
                            // Fixed point of 1e-6 per value, plus float noise of the oracle's own sum.
                            prop_assert!((got - want).abs() <= 1e-6 + want.abs() * 1e-12, "field {}: {} vs {}", f, got, want);
                        }
                        prop_assert_eq!(stats_array(summary.min.as_ref().unwrap()), omin);
                        prop_assert_eq!(stats_array(summary.max.as_ref().unwrap()), omax);
                    }
                    (got, want) => prop_assert!(false, "window {}: {:?} vs {:?}", length, got, want),
                }
            }
        }
    }

    /// Adding a whole batch at once (the min/max bookkeeping rebuilt once) ends exactly where adding
    /// the samples one by one does.
    #[test]
    fn adding_all_at_once_equals_adding_one_by_one(
        steps in proptest::collection::vec(step(), 1..300),
        capacity in prop_oneof![1usize..5, 5usize..50, Just(500usize)],
        split in 0usize..300,
    ) {
        let spec = WindowSpec::from_base(1000).unwrap();
        let mut one_by_one = ServerWindows::new(&spec, capacity).unwrap();
        let mut all_at_once = ServerWindows::new(&spec, capacity).unwrap();
        let mut ts = 1_000_000.0;
        let samples: Vec<(f64, &Readings)> = steps.iter().map(|(dt, r)| { ts += dt; (ts, r) }).collect();
        let expected: Vec<Added> = samples.iter().map(|(t, r)| one_by_one.add(*t, r)).collect();
        let mut got = Vec::new();
        let split = split.min(samples.len());
        all_at_once.add_all(samples[..split].iter().copied(), |a| got.push(a));
        all_at_once.add_all(samples[split..].iter().copied(), |a| got.push(a));
        prop_assert_eq!(got, expected);
        prop_assert_eq!(all_at_once.len(), one_by_one.len());
        prop_assert_eq!(all_at_once.summaries(), one_by_one.summaries());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The servers' fast writers (`lab_core::wire`) write, for every valid metric, the very bytes serde
    /// writes for the protocol's typed messages.
    #[test]
    fn the_fast_writers_write_what_serde_writes(m in valid_metric(), entry in "[0-9]{1,13}-[0-9]{1,3}") {
        use lab_core::wire::{system1, system2};
        let mut buffer = Vec::new();
        let readings = system1::write_ingested_payload(&m, &mut buffer);
        let payload = String::from_utf8(buffer.clone()).unwrap();
        prop_assert_eq!(&payload, &serde_json::to_string(&m).unwrap());
        let field = serde_json::to_string(&m.metrics).unwrap();
        prop_assert_eq!(&buffer[readings], field.as_bytes());
        let ingested = system1::Event::Ingested { entry_id: entry.clone(), payload: m.clone() };
        prop_assert_eq!(system1::ingested_event(&entry, &payload), serde_json::to_string(&ingested).unwrap());

        let mut windows = ServerWindows::new(&WindowSpec::default(), 10).unwrap();
        windows.add(m.timestamp, &m.metrics);
        let summaries = windows.summaries();
        let mut processed = Vec::new();
        system1::write_processed(&mut processed, &entry, &m, Some(&summaries));
        let typed = system1::Event::Processed {
            entry_id: entry.clone(),
            payload: system1::Processed {
                server_id: m.server_id.clone(),
                timestamp: m.timestamp,
                metrics: m.metrics.clone(),
                seq: m.seq,
                windows: Some(summaries.clone()),
            },
        };
        prop_assert_eq!(processed, serde_json::to_vec(&typed).unwrap());

        let fast = system2::UpdatePayloadRef { server_id: &m.server_id, timestamp: m.timestamp, windows: &summaries, seq: m.seq };
        let owned = system2::UpdatePayload {
            server_id: m.server_id.clone(),
            timestamp: m.timestamp,
            windows: summaries.clone(),
            seq: m.seq,
            coalesced: None,
            first_seq: None,
            last_seq: None,
        };
        prop_assert_eq!(fast.to_json(), serde_json::to_string(&owned).unwrap());
        let ack = system2::ServerFrame::MetricAck { server_id: m.server_id.clone(), seq: m.seq };
        prop_assert_eq!(system2::metric_ack_json(&m.server_id, m.seq), ack.to_json());
    }
}
