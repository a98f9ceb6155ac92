//! Load benchmark of System 1, measured by the lab's own agents.
//!
//! Run with `cargo bench -p system1-http --bench load` (`-- --quick` for short runs, `-- --single` for
//! the single-metric rows only, at more rates around saturation). It starts a
//! private redis-server and the release `system1 all` binary (API, workers, broadcaster), and drives it
//! with `agents::run`: open loop, latency from each metric's due time, end to end at the broadcaster
//! (`metric.processed`: through the stream, the workers and pub/sub). Beside it, `redis-benchmark`'s
//! pipelined XADD rate on the same Redis is the ceiling no ingest path can beat. `SYSTEM1_BENCH_BIN=path`
//! runs another `system1` binary instead, so that two builds are compared in the same conditions.
//!
//! **Connections.** Over HTTP/1.1 a connection carries one request at a time, so the agents' rate on it
//! is capped near 1 / (time per request): with the 8 connections this bench once used, about 5 000/s
//! whatever the CPU. The HTTP/1.1 rows therefore use [`HTTP1_CONNECTIONS`] (64, as `wrk -c64` in issue
//! #4), with as many agents (the agents need at least one per connection); the HTTP/2 rows multiplex
//! many requests on each of their 2 connections. Every single-metric row has 64 agents (64 servers'
//! windows for the workers, whichever the protocol), the batched rows 20, as before.
//!
//! **Rows are independent.** Each row starts its own `system1` on an emptied Redis (`FLUSHALL`): a
//! saturated row's backlog would otherwise still be draining during the next row and count there.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agents::config::Cli;
use agents::report::Report;
use clap::Parser;
use lab_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

/// HTTP/1.1 connections (and agents) of the HTTP/1.1 rows: enough that their count is not the limit.
const HTTP1_CONNECTIONS: u64 = 64;

/// HTTP/2 connections of the HTTP/2 rows (each multiplexes many requests).
const HTTP2_CONNECTIONS: u64 = 2;

/// Agents (distinct `serverId`s) of the single-metric rows, over either protocol.
const SINGLE_AGENTS: u64 = HTTP1_CONNECTIONS;

/// Agents of the batched rows.
const BATCH_AGENTS: u64 = 20;

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

/// One row: an emptied Redis, a fresh `system1` with `workers` workers, then the agents.
fn fresh_row(
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
    workers: u32,
    (protocol, batch, rate, seconds): (&str, u64, f64, u64),
) -> Report {
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .expect("FLUSHALL");
    let system1 = start_system1(redis, workers);
    runtime.block_on(measure(&system1, protocol, batch, rate, seconds))
}

async fn measure(s: &System1, protocol: &str, batch: u64, rate: f64, seconds: u64) -> Report {
    let port = if protocol == "http2" { s.http2 } else { s.http };
    let agents = if batch == 1 { SINGLE_AGENTS } else { BATCH_AGENTS };
    let connections = if protocol == "http2" {
        HTTP2_CONNECTIONS
    } else {
        HTTP1_CONNECTIONS
    };
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
        agents.to_string(),
        "--connections".into(),
        connections.to_string(),
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
        "| {label} | {:.0} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} | {} |",
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
        load_average(),
    )
}

/// The 1-minute load average (`/proc/loadavg`), to tell a quiet machine from a busy one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".into())
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
    let single_only = std::env::args().any(|a| a == "--single");
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
        "Open loop; single metrics: {SINGLE_AGENTS} agents, over HTTP/1.1 on {HTTP1_CONNECTIONS} connections, over HTTP/2 on {HTTP2_CONNECTIONS}; batches: {BATCH_AGENTS} agents on {HTTP2_CONNECTIONS} HTTP/2 connections; each row on a fresh system1 and an emptied Redis. ack = the HTTP response; e2e = `metric.processed` at a dashboard of the broadcaster; both from each metric's due time; {seconds} s per row after 1 s warm-up; load = the 1-minute load average after the row.\n"
    );
    println!(
        "| setting | intended/s | achieved/s | delivered / sent | lost | ack p50 | ack p99 | e2e p50 | e2e p99 | e2e max | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    // --single: the single-metric rows only, at the rates where they saturate on 2 cores.
    let (http1_rates, http2_rates): (&[f64], &[f64]) = if single_only {
        (
            &[5_000.0, 10_000.0, 15_000.0, 20_000.0],
            &[5_000.0, 10_000.0, 15_000.0, 20_000.0],
        )
    } else {
        (
            &[100.0, 1_000.0, 5_000.0, 10_000.0],
            &[1_000.0, 5_000.0, 10_000.0],
        )
    };
    for &rate in http1_rates {
        let r = fresh_row(&runtime, &redis, 2, ("http1", 1, rate, seconds));
        println!("{}", row("HTTP/1.1, single, 2 workers", &r));
    }
    for &rate in http2_rates {
        let r = fresh_row(&runtime, &redis, 2, ("http2", 1, rate, seconds));
        println!("{}", row("HTTP/2, single, 2 workers", &r));
    }
    if single_only {
        return;
    }
    let mut saturation = None;
    for rate in [10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0] {
        let r = fresh_row(&runtime, &redis, 2, ("http2", 100, rate, seconds));
        println!("{}", row("HTTP/2, batches of 100, 2 workers", &r));
        if !kept_up(&r) {
            break;
        }
        saturation = Some(rate);
    }
    for rate in [10_000.0, 20_000.0] {
        let r = fresh_row(&runtime, &redis, 1, ("http2", 100, rate, seconds));
        println!("{}", row("HTTP/2, batches of 100, 1 worker", &r));
    }
    println!(
        "\nSaturation with batches of 100 and 2 workers (every metric delivered, e2e p99 under 100 ms): {}.",
        saturation.map_or("below 10 000 metrics/s".to_owned(), |r| format!(
            "kept up with {r:.0} metrics/s"
        ))
    );
}
