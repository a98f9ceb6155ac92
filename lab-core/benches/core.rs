//! Benchmarks of the shared core: parsing a metric, and adding one to the windows.
//!
//! Run with `cargo bench -p lab-core`. The aggregator is measured at buffer sizes 500 and 50 000: the
//! cost per metric must be flat (O(1) amortised), unlike the original's scan of the whole buffer.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lab_core::aggregate::{ServerWindows, WindowSpec};
use lab_core::parse::{parse_client_frame, parse_metrics_body};
use lab_core::{Network, Readings};

fn parsing(c: &mut Criterion) {
    let frame = br#"{"type":"metric","serverId":"server-1","timestamp":1763800000123.456,"metrics":{"cpu":12.5,"memory":40.1,"disk":55.0,"network":{"in":300,"out":250}},"seq":42}"#;
    let body = br#"{"serverId":"server-1","timestamp":1763800000123.456,"metrics":{"cpu":12.5,"memory":40.1,"disk":55.0,"network":{"in":300,"out":250}},"seq":42}"#;
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("system2 metric frame", |b| {
        b.iter(|| parse_client_frame(frame).unwrap())
    });
    g.bench_function("system1 metric body", |b| {
        b.iter(|| parse_metrics_body(body).unwrap())
    });
    let bad = br#"{"type":"metric","serverId":"","timestamp":"x","metrics":{"cpu":120}}"#;
    g.bench_function("system2 invalid metric (diagnosis)", |b| {
        b.iter(|| parse_client_frame(bad).unwrap_err())
    });
    g.finish();
}

fn aggregation(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate add+summary");
    g.throughput(Throughput::Elements(1));
    let readings = Readings {
        cpu: 50.0,
        memory: 40.0,
        disk: 30.0,
        network: Some(Network { rx: 300.0, tx: 250.0 }),
        extra: vec![],
    };
    for capacity in [500usize, 50_000] {
        g.bench_with_input(
            BenchmarkId::from_parameter(capacity),
            &capacity,
            |b, &capacity| {
                // 1 ms apart: the 10 s window holds 10 000 samples, so capacity 50 000 is really used.
                let mut w = ServerWindows::new(&WindowSpec::default(), capacity).unwrap();
                let mut ts = 0.0;
                b.iter(|| {
                    ts += 1.0;
                    w.add(ts, &readings);
                    w.summaries()
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, parsing, aggregation);
criterion_main!(benches);
