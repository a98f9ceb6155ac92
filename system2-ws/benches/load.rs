//! Load benchmark of System 2: throughput and latency, measured honestly.
//!
//! Run with `cargo bench -p system2-ws --bench load` (add `-- --quick` for a short run). It starts the
//! release `system2` binary on a free port and drives it from this process, on the same cores: that
//! is the lab's setting, so the numbers include the load generator's own cost.
//!
//! - **Open loop** (the ladder): 10 producers send at a fixed total rate. Every metric has a *due
//!   time*; its `timestamp` is that due time, and latency counts from it. A server that stalls makes
//!   metrics late, and that shows as latency: no coordinated omission.
//!   - ack latency: the producer receives `metric.ack` − due time;
//!   - end-to-end latency: one dashboard receives `metric.update` − due time (the lab's definition).
//!
//!   The rate climbs until the server no longer keeps up (acks or dashboard updates below 95 % of
//!   what was sent, or e2e p99 above 100 ms): the last rate it kept up with is its saturation point.
//! - **Closed loop** (the ceiling): each producer keeps N frames in flight (single metrics, or batches
//!   of 100) and sends one more per ack: the most the server can take, unbatched and batched.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Mutex;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message;

const PRODUCERS: u64 = 10;

/// The server under test, killed when dropped.
struct ServerProcess {
    child: Child,
    url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> ServerProcess {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_system2"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "warn",
        ])
        .args(["--max-messages-per-sec", "0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start system2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "system2 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    ServerProcess {
        child,
        url: format!("ws://127.0.0.1:{port}/"),
    }
}

/// The clients' WebSocket settings: a small read buffer, for the reason given in the server's lib.rs.
fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024)
}

/// One clock for the whole run: wall time at start plus a monotonic offset, so that timestamps are
/// epoch milliseconds (as the protocol wants) but never jump.
#[derive(Clone, Copy)]
struct Clock {
    wall_ms: f64,
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Clock {
            wall_ms: lab_core::now_ms(),
            start: Instant::now(),
        }
    }
    fn now_ms(&self) -> f64 {
        self.wall_ms + self.start.elapsed().as_secs_f64() * 1000.0
    }
}

fn metric_json(server: u64, timestamp: f64, seq: u64) -> String {
    let cpu = (seq % 100) as f64;
    format!(
        r#"{{"type":"metric","serverId":"server-{server}","timestamp":{timestamp},"metrics":{{"cpu":{cpu},"memory":40.5,"disk":55.25,"network":{{"in":300,"out":250}}}},"seq":{seq}}}"#
    )
}

/// Reads `"timestamp":<number>` out of an update without parsing the rest: the dashboard must not be
/// the bottleneck of the measurement.
fn update_timestamps(text: &str) -> impl Iterator<Item = f64> + '_ {
    text.match_indices(r#""timestamp":"#).filter_map(|(i, key)| {
        let rest = &text[i + key.len()..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()
}

/// Latency in microseconds between a due time and now, both in ms.
fn micros(due_ms: f64, now_ms: f64) -> u64 {
    ((now_ms - due_ms) * 1000.0).max(1.0) as u64
}

struct Outcome {
    intended: f64,
    sent: u64,
    acked: u64,
    updates: u64,
    achieved: f64,
    ack: Histogram<u64>,
    e2e: Histogram<u64>,
    generator_lag_ms: f64,
}

/// Wakes producers when their next metric is due.
///
/// tokio's timer has a resolution of 1 ms, so a producer that sleeps on it sends up to a millisecond
/// late, and that lateness is (rightly, in an open-loop measurement) counted as latency: it would
/// hide the server's sub-millisecond latencies. Spinning instead steals the cores the server needs.
/// So one OS thread sleeps in short, precise steps (`std::thread::sleep`, ~60 µs on Linux) and wakes
/// exactly the producers whose next metric is due; at high rates they find work waiting anyway.
struct Pacer {
    /// Per producer: the due time (µs on `clock`) it waits for; `u64::MAX` when it is not waiting.
    waiting_for: Vec<AtomicU64>,
    wake: Vec<tokio::sync::Notify>,
    stop: AtomicBool,
}

impl Pacer {
    fn start(producers: usize, clock: Clock) -> Arc<Pacer> {
        let pacer = Arc::new(Pacer {
            waiting_for: (0..producers).map(|_| AtomicU64::new(u64::MAX)).collect(),
            wake: (0..producers).map(|_| tokio::sync::Notify::new()).collect(),
            stop: AtomicBool::new(false),
        });
        let p = pacer.clone();
        std::thread::spawn(move || {
            while !p.stop.load(Ordering::Relaxed) {
                let now_us = (clock.now_ms() * 1000.0) as u64;
                for (due, wake) in p.waiting_for.iter().zip(&p.wake) {
                    if due.load(Ordering::Acquire) <= now_us {
                        due.store(u64::MAX, Ordering::Release);
                        wake.notify_one();
                    }
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        pacer
    }

    /// Waits until `due_ms` (returns at once if it has passed).
    async fn wait_until(&self, producer: usize, clock: Clock, due_ms: f64) {
        while clock.now_ms() < due_ms {
            self.waiting_for[producer].store((due_ms * 1000.0) as u64, Ordering::Release);
            self.wake[producer].notified().await;
        }
    }
}

/// A dashboard that records the end-to-end latency of every update due at or after `measure_from_ms`.
async fn dashboard(
    url: &str,
    clock: Clock,
    measure_from_ms: f64,
    stop: Arc<AtomicBool>,
) -> (u64, Histogram<u64>) {
    let (mut ws, _) = connect_async_with_config(url, Some(client_config()), true)
        .await
        .unwrap();
    ws.send(Message::Text(r#"{"type":"register","role":"dashboard"}"#.into()))
        .await
        .unwrap();
    let mut e2e = histogram();
    let mut updates = 0;
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(text)))) => {
                if !text.starts_with(r#"{"type":"metric.update""#) {
                    continue;
                }
                let now = clock.now_ms();
                for ts in update_timestamps(&text) {
                    if ts >= measure_from_ms {
                        updates += 1;
                        e2e.record(micros(ts, now)).unwrap();
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => break,
            Err(_) if stop.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    (updates, e2e)
}

/// Open loop at `rate` metrics/s in total for `warmup + measure`.
async fn open_loop(url: &str, rate: f64, warmup: Duration, measure: Duration) -> Outcome {
    let clock = Clock::new();
    let start_ms = clock.now_ms() + 300.0;
    let measure_from = start_ms + warmup.as_secs_f64() * 1000.0;
    let end_ms = measure_from + measure.as_secs_f64() * 1000.0;
    let stop = Arc::new(AtomicBool::new(false));
    let dash = tokio::spawn({
        let url = url.to_owned();
        let stop = stop.clone();
        async move { dashboard(&url, clock, measure_from, stop).await }
    });
    let interval_ms = 1000.0 * PRODUCERS as f64 / rate;
    let ack_hist = Arc::new(Mutex::new(histogram()));
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let worst_lag = Arc::new(Mutex::new(0.0f64));
    let pacer = Pacer::start(PRODUCERS as usize, clock);
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (ws, _) = connect_async_with_config(url, Some(client_config()), true)
            .await
            .unwrap();
        let (mut sink, mut stream) = ws.split();
        let (ack_hist, sent, acked, worst_lag) =
            (ack_hist.clone(), sent.clone(), acked.clone(), worst_lag.clone());
        let pacer = pacer.clone();
        // Stagger producers across the interval, so the total is smooth.
        let offset = interval_ms * p as f64 / PRODUCERS as f64;
        let due_of = move |seq: u64| start_ms + offset + seq as f64 * interval_ms;
        let reader = tokio::spawn(async move {
            let mut hist = histogram();
            let mut n = 0;
            while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                let Message::Text(text) = msg else { continue };
                let Some(i) = text.find(r#""seq":"#) else { continue };
                let seq: u64 = text[i + 6..text.len() - 1].parse().unwrap_or(0);
                let due = due_of(seq);
                if due >= measure_from && due < end_ms {
                    n += 1;
                    hist.record(micros(due, clock.now_ms())).unwrap();
                }
                if due_of(seq + 1) >= end_ms {
                    break;
                }
            }
            acked.fetch_add(n, Ordering::Relaxed);
            ack_hist.lock().await.add(&hist).unwrap();
        });
        let writer = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut lag = 0.0f64;
            let mut n = 0;
            while due_of(seq) < end_ms {
                pacer.wait_until(p as usize, clock, due_of(seq)).await;
                lag = lag.max(clock.now_ms() - due_of(seq));
                // Everything already due goes out in one flush.
                while due_of(seq) <= clock.now_ms() && due_of(seq) < end_ms {
                    let due = due_of(seq);
                    sink.feed(Message::Text(metric_json(p, due, seq).into()))
                        .await
                        .unwrap();
                    if due >= measure_from {
                        n += 1;
                    }
                    seq += 1;
                }
                sink.flush().await.unwrap();
            }
            sent.fetch_add(n, Ordering::Relaxed);
            let mut worst = worst_lag.lock().await;
            *worst = worst.max(lag);
            sink
        });
        producers.push((writer, reader));
    }
    let mut sinks = Vec::new();
    for (writer, reader) in producers {
        sinks.push(writer.await.unwrap());
        reader.await.unwrap();
    }
    pacer.stop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let (updates, e2e) = dash.await.unwrap();
    drop(sinks);
    let acked = acked.load(Ordering::Relaxed);
    let lag = *worst_lag.lock().await;
    Outcome {
        intended: rate,
        sent: sent.load(Ordering::Relaxed),
        acked,
        updates,
        achieved: acked as f64 / measure.as_secs_f64(),
        ack: Arc::try_unwrap(ack_hist).unwrap().into_inner(),
        e2e,
        generator_lag_ms: lag,
    }
}

/// Closed loop: each producer keeps `in_flight` frames outstanding, `batch` metrics per frame.
/// Returns (acked metrics/s, updates seen by the dashboard/s).
async fn closed_loop(url: &str, in_flight: usize, batch: usize, duration: Duration) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Clock::new();
    let dash = tokio::spawn({
        let (url, stop) = (url.to_owned(), stop.clone());
        async move { dashboard(&url, clock, 0.0, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (ws, _) = connect_async_with_config(url, Some(client_config()), true)
            .await
            .unwrap();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let mut seq = 0u64;
            let mut frame = move || {
                if batch == 1 {
                    seq += 1;
                    return metric_json(p, clock.now_ms(), seq);
                }
                let items: Vec<String> = (0..batch)
                    .map(|_| {
                        seq += 1;
                        metric_json(p, clock.now_ms(), seq).replacen(r#""type":"metric","#, "", 1)
                    })
                    .collect();
                format!(r#"{{"type":"metrics","items":[{}]}}"#, items.join(","))
            };
            for _ in 0..in_flight {
                sink.feed(Message::Text(frame().into())).await.unwrap();
            }
            sink.flush().await.unwrap();
            let mut n = 0u64;
            'run: while let Some(Ok(first)) = stream.next().await {
                // One reply per ack; everything that arrived together is answered with one flush.
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    if let Message::Text(text) = msg
                        && !text.contains("connection.ack")
                    {
                        n += batch as u64;
                        if Instant::now() >= deadline {
                            break 'run;
                        }
                        sink.feed(Message::Text(frame().into())).await.unwrap();
                    }
                    if let Some(Some(Ok(more))) = stream.next().now_or_never() {
                        next = Some(more);
                    }
                }
                sink.flush().await.unwrap();
            }
            acked.fetch_add(n, Ordering::Relaxed);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (updates, _) = dash.await.unwrap();
    (acked.load(Ordering::Relaxed) as f64 / secs, updates as f64 / secs)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores ({cpu}); the load generator and the server share them")
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warmup, measure) = if quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    // One thread for the whole load generator: on 2 shared cores, more threads only fight the server for
    // timeslices, and that wait would be measured as the server's latency.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = start_server();
    println!("# System 2 load benchmark\n\nMachine: {}\n", machine());
    println!(
        "## Open loop: one update per metric, 10 producers, 1 dashboard, {} s per rate\n",
        measure.as_secs()
    );
    println!(
        "Latencies count from each metric's due time (no coordinated omission). Ack = `metric.ack` at the producer; e2e = `metric.update` at the dashboard.\n"
    );
    println!(
        "| intended/s | achieved acks/s | updates seen / sent | ack p50 | ack p99 | e2e p50 | e2e p90 | e2e p99 | e2e p99.9 | e2e max | generator lag |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let ladder: &[f64] = &[
        100.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0, 50_000.0, 100_000.0, 150_000.0, 200_000.0, 300_000.0,
        400_000.0,
    ];
    let mut saturation = None;
    for &rate in ladder {
        let o = runtime.block_on(open_loop(&server.url, rate, warmup, measure));
        println!(
            "| {:.0} | {:.0} | {} / {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.1} ms | {:.1} ms |",
            o.intended,
            o.achieved,
            o.updates,
            o.sent,
            ms(&o.ack, 0.5),
            ms(&o.ack, 0.99),
            ms(&o.e2e, 0.5),
            ms(&o.e2e, 0.9),
            ms(&o.e2e, 0.99),
            ms(&o.e2e, 0.999),
            ms(&o.e2e, 1.0),
            o.generator_lag_ms
        );
        let kept_up = o.achieved >= 0.95 * o.intended
            && o.acked * 100 >= o.sent * 95
            && o.updates * 100 >= o.sent * 95
            && ms(&o.e2e, 0.99) < 100.0;
        if !kept_up {
            break;
        }
        saturation = Some(rate);
    }
    match saturation {
        Some(rate) => println!(
            "\nSaturation (open loop): kept up with {rate:.0} metrics/s; the next step did not keep up, or the ladder ended.\n"
        ),
        None => println!("\nSaturation (open loop): did not keep up with the first step.\n"),
    }
    println!(
        "## Closed loop: 10 producers, 1 dashboard, {} s each\n",
        measure.as_secs()
    );
    println!("| in flight per producer | metrics per frame | acked metrics/s | updates seen/s |");
    println!("|---|---|---|---|");
    for (in_flight, batch) in [(1, 1), (32, 1), (256, 1), (4, 100)] {
        let (acks, updates) = runtime.block_on(closed_loop(&server.url, in_flight, batch, measure));
        println!("| {in_flight} | {batch} | {acks:.0} | {updates:.0} |");
    }
}
