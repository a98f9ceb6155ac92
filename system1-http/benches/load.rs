//! Load benchmark of System 1, measured by the lab's own agents.
//!
//! Run with `cargo bench -p system1-http --bench load` (`-- --quick` for short runs). It starts a
//! private redis-server and the release `system1 all` binary (API, workers, broadcaster), and drives it
//! with `agents::run`: open loop, latency from each metric's due time, end to end at the broadcaster
//! (`metric.processed`: through the stream, the workers and pub/sub). Beside it, `redis-benchmark`'s
//! pipelined XADD rate on the same Redis is the ceiling no ingest path can beat. `SYSTEM1_BENCH_BIN=path`
//! runs another `system1` binary instead, so that two builds are compared in the same conditions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agents::config::Cli;
use agents::report::Report;
use clap::Parser;
use lab_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    lab_testkit::free_port().expect("a free port")
}

struct System1 {
    child: Child,
    http: u16,
    http2: u16,
    ws: u16,
}

impl Drop for System1 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_system1(redis: &RedisServer, workers: u32) -> System1 {
    let (http, http2, ws, ops) = (free_port(), free_port(), free_port(), free_port());
    // SYSTEM1_BENCH_BIN measures another build (say, the previous commit's) under the same conditions.
    let binary = std::env::var("SYSTEM1_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_system1").into());
    let child = Command::new(binary)
        .args([
            "--redis-url",
            &redis.url(),
            "--log-level",
            "warn",
            "all",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--http-port",
            &http.to_string(),
            "--http2-port",
            &http2.to_string(),
        ])
        .args([
            "--ws-port",
            &ws.to_string(),
            "--ops-port",
            &ops.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start system1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", ws)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
    {
        assert!(Instant::now() < deadline, "system1 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    System1 {
        child,
        http,
        http2,
        ws,
    }
}

async fn measure(s: &System1, protocol: &str, batch: u64, rate: f64, seconds: u64) -> Report {
    let port = if protocol == "http2" { s.http2 } else { s.http };
    let args = [
        "agents".to_owned(),
        "--target".into(),
        format!("http://127.0.0.1:{port}"),
        "--protocol".into(),
        protocol.into(),
        "--batch".into(),
        batch.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--agents".into(),
        "20".into(),
        "--connections".into(),
        (if protocol == "http2" { "2" } else { "8" }).into(),
        "--duration".into(),
        format!("{seconds}s"),
        "--warmup".into(),
        "1s".into(),
        "--cooldown".into(),
        "3s".into(),
        "--dashboard".into(),
        format!("ws://127.0.0.1:{}", s.ws),
        "--quiet".into(),
    ];
    let cli = Cli::try_parse_from(args).unwrap();
    agents::run(cli.run, CancellationToken::new(), false)
        .await
        .expect("a report")
}

fn row(label: &str, r: &Report) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
    format!(
        "| {label} | {:.0} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} |",
        r.intended_rate,
        r.achieved_rate,
        r.delivered,
        r.sent,
        r.lost.map_or("-".into(), |l| l.to_string()),
        ms(r.ack_latency_ms.p50),
        ms(r.ack_latency_ms.p99),
        ms(r.e2e_latency_ms.p50),
        ms(r.e2e_latency_ms.p99),
        ms(r.e2e_latency_ms.max),
    )
}

fn kept_up(r: &Report) -> bool {
    r.achieved_rate >= 0.95 * r.intended_rate
        && r.lost == Some(0)
        && r.e2e_latency_ms.p99.is_some_and(|p| p < 100.0)
}

fn redis_benchmark_xadd(redis: &RedisServer) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-p", &redis.port()?.to_string(), "-n", "300000", "-P", "64", "-q"])
        .args([
            "XADD",
            "bench:stream",
            "MAXLEN",
            "~",
            "100000",
            "*",
            "serverId",
            "server-1",
            "metrics",
            r#"{"cpu":1}"#,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // "XADD ...: 512345.67 requests per second, p50=..."
    let line = text.lines().rev().find(|l| l.contains("requests per second"))?;
    let before = line.split("requests per second").next()?;
    before.rsplit(':').next()?.trim().parse().ok()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds = if quick { 2 } else { 5 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start().expect("redis-server is installed");
    println!("# System 1 load benchmark\n");
    println!(
        "Machine: {}; Redis, System 1 (`all`: API, workers, broadcaster) and the agents share them.\n",
        agents::report::machine()
    );
    match redis_benchmark_xadd(&redis) {
        Some(rate) => println!(
            "Ceiling: `redis-benchmark -P 64` pipelined XADD on the same Redis: **{rate:.0} XADD/s**.\n"
        ),
        None => println!("Ceiling: redis-benchmark not available.\n"),
    }
    println!(
        "Open loop, 20 agents; ack = the HTTP response; e2e = `metric.processed` at a dashboard of the broadcaster; both from each metric's due time; {seconds} s per row after 1 s warm-up.\n"
    );
    println!(
        "| setting | intended/s | achieved/s | delivered / sent | lost | ack p50 | ack p99 | e2e p50 | e2e p99 | e2e max |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let two = start_system1(&redis, 2);
    for rate in [100.0, 1_000.0, 5_000.0, 10_000.0] {
        let r = runtime.block_on(measure(&two, "http1", 1, rate, seconds));
        println!("{}", row("HTTP/1.1, single, 2 workers", &r));
    }
    for rate in [1_000.0, 5_000.0, 10_000.0] {
        let r = runtime.block_on(measure(&two, "http2", 1, rate, seconds));
        println!("{}", row("HTTP/2, single, 2 workers", &r));
    }
    let mut saturation = None;
    for rate in [10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0] {
        let r = runtime.block_on(measure(&two, "http2", 100, rate, seconds));
        println!("{}", row("HTTP/2, batches of 100, 2 workers", &r));
        if !kept_up(&r) {
            break;
        }
        saturation = Some(rate);
    }
    drop(two);
    let one = start_system1(&redis, 1);
    for rate in [10_000.0, 20_000.0] {
        let r = runtime.block_on(measure(&one, "http2", 100, rate, seconds));
        println!("{}", row("HTTP/2, batches of 100, 1 worker", &r));
    }
    println!(
        "\nSaturation with batches of 100 and 2 workers (every metric delivered, e2e p99 under 100 ms): {}.",
        saturation.map_or("below 10 000 metrics/s".to_owned(), |r| format!(
            "kept up with {r:.0} metrics/s"
        ))
    );
}
