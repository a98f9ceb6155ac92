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
//! **Two builds in one run.** `SYSTEM1_BENCH_BIN=before=/path/a,after=/path/b` (labels optional:
//! `/path/a,/path/b`) runs every row once per build, one after the other, so that the two are compared
//! minutes apart on the same machine rather than in two runs that this machine's drift (±50 %) would
//! make incomparable. Each row also says what it cost: **CPU per metric** of the `system1` process and
//! of redis-server (utime + stime from `/proc/<pid>/stat` over the row, divided by the metrics the API
//! accepted), Redis's own time per metric in the ingest script and in all `XADD`s and `PUBLISH`es
//! (`INFO commandstats`, reset before each row: what `metric.ingested` costs Redis is its `PUBLISH`),
//! and the mean group size of the API's group commit (requests per Redis call) when the build has one.
//!
//! **Modes.** `-- --api`: the API alone (`system1 api`, agents without a dashboard): acked throughput
//! and the API's CPU per request, the cost the group commit changes. `-- --targets`: the rows of issue
//! #14's targets (64 servers' single metrics at 5 000, 25 000 and 50 000/s over both protocols, end to
//! end, and batches of 100 at 200 000/s), with the ceilings of the same run: `redis-benchmark` XADD
//! (pipelined, and un-pipelined from 50 clients) and the agents against `agents sink`, which acks
//! without doing anything.
//!
//! `-- --runtimes`: issue #14's point 4, the API alone on Tokio's multi-thread scheduler (2 threads
//! here), on the current-thread one, and as two current-thread processes (a runtime per core, the
//! agents split between them), at 25 000 and 50 000 single metrics/s over both protocols.
//!
//! **Rows are independent.** Each row starts its own `system1` on an emptied Redis (`FLUSHALL`): a
//! saturated row's backlog would otherwise still be draining during the next row and count there.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agents::report::Report;
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
    child: lab_testkit::KillOnDrop,
    http: u16,
    http2: u16,
    ws: u16,
    /// Whether only the API runs (no workers, no broadcaster: no dashboard to measure).
    api_only: bool,
}

/// The builds to measure: `SYSTEM1_BENCH_BIN` (`label=path,…` or `path,…`), else this one.
fn binaries() -> Vec<(String, String)> {
    match std::env::var("SYSTEM1_BENCH_BIN") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|item| match item.split_once('=') {
                Some((label, path)) => (label.to_owned(), path.to_owned()),
                None => (item.to_owned(), item.to_owned()),
            })
            .collect(),
        _ => vec![("this build".into(), env!("CARGO_BIN_EXE_system1").into())],
    }
}

/// `workers` = 0: the API alone; `extra`: more flags (before the role).
fn start_system1(binary: &str, redis: &RedisServer, workers: u32, extra: &[&str]) -> System1 {
    let (http, http2, ws, ops) = (free_port(), free_port(), free_port(), free_port());
    let api_only = workers == 0;
    let mut command = Command::new(binary);
    command
        .args(["--redis-url", &redis.url(), "--log-level", "warn"])
        .args(extra)
        .args([if api_only { "api" } else { "all" }, "--host", "127.0.0.1"])
        .args([
            "--http-port",
            &http.to_string(),
            "--http2-port",
            &http2.to_string(),
        ]);
    if !api_only {
        command.args([
            "--ws-port",
            &ws.to_string(),
            "--ops-port",
            &ops.to_string(),
            "--workers",
            &workers.to_string(),
        ]);
    }
    // Wrapped at once: if it does not start in time, the assert below still kills it.
    let child = lab_testkit::KillOnDrop(command.stdout(Stdio::null()).spawn().expect("start system1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while (!api_only && std::net::TcpStream::connect(("127.0.0.1", ws)).is_err())
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
        api_only,
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in clock ticks, USER_HZ, which is 100 on every architecture it supports.
    Some(Duration::from_millis(ticks * 10))
}

fn redis_pid(redis: &RedisServer) -> Option<u32> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut redis.connection())
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

/// What a row cost and how the API grouped its calls.
struct Cost {
    /// µs of `system1` CPU per accepted metric.
    system1_us: Option<f64>,
    /// µs of redis-server CPU per accepted metric.
    redis_us: Option<f64>,
    /// Requests per group commit (`None`: a build without group commit).
    group: Option<f64>,
    /// Redis's own time (`INFO commandstats`) per accepted metric in the ingest script's `EVALSHA`
    /// (everything the script does), and in the `XADD`s and `PUBLISH`es of all processes.
    script_us: Option<f64>,
    xadd_us: Option<f64>,
    publish_us: Option<f64>,
}

/// Microseconds Redis spent in each command since the last `CONFIG RESETSTAT` (`INFO commandstats`;
/// commands called from scripts are counted too, and inside their script's time).
fn command_usec(redis: &RedisServer) -> Vec<(String, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .unwrap_or_default();
    // cmdstat_xadd:calls=…,usec=…,usec_per_call=…
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let usec = stats.split(',').find_map(|kv| kv.strip_prefix("usec="))?;
            Some((name.to_owned(), usec.parse().ok()?))
        })
        .collect()
}

/// The API's `/api/monitoring`, if it answers.
async fn api_monitoring(http: u16) -> Option<serde_json::Value> {
    reqwest::get(format!("http://127.0.0.1:{http}/api/monitoring"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// One row: an emptied Redis, a fresh `system1` (`binary`) with `workers` workers (0: the API alone),
/// then the agents; and what the row cost each process.
fn fresh_row(
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
    binary: &str,
    workers: u32,
    (protocol, batch, rate, seconds): (&str, u64, f64, u64),
) -> (Report, Cost) {
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .expect("FLUSHALL");
    // Zero Redis's per-command counters, read back after the row (`INFO commandstats`).
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut redis.connection())
        .expect("CONFIG RESETSTAT");
    let system1 = start_system1(binary, redis, workers, &[]);
    let (pid, redis_pid) = (system1.child.id(), redis_pid(redis));
    let before = (cpu_time(pid), redis_pid.and_then(cpu_time));
    let report = runtime.block_on(measure(&system1, protocol, batch, rate, seconds));
    let after = (cpu_time(pid), redis_pid.and_then(cpu_time));
    let monitoring = runtime.block_on(api_monitoring(system1.http));
    let accepted = monitoring
        .as_ref()
        .and_then(|m| m["metricsAccepted"].as_u64())
        .unwrap_or(0);
    let per_metric = |a: Option<Duration>, b: Option<Duration>| {
        let used = b?.checked_sub(a?)?;
        (accepted > 0).then(|| used.as_secs_f64() * 1e6 / accepted as f64)
    };
    let group = monitoring.as_ref().and_then(|m| {
        let g = &m["groupCommits"];
        Some(g["requests"].as_f64()? / g["commits"].as_f64()?.max(1.0))
    });
    let commands = command_usec(redis);
    let in_redis = |name: &str| {
        let usec = commands.iter().find(|(n, _)| n == name).map_or(0.0, |(_, u)| *u);
        (accepted > 0).then(|| usec / accepted as f64)
    };
    let cost = Cost {
        system1_us: per_metric(before.0, after.0),
        redis_us: per_metric(before.1, after.1),
        group,
        script_us: in_redis("evalsha"),
        xadd_us: in_redis("xadd"),
        publish_us: in_redis("publish"),
    };
    (report, cost)
}

async fn measure(s: &System1, protocol: &str, batch: u64, rate: f64, seconds: u64) -> Report {
    let port = if protocol == "http2" { s.http2 } else { s.http };
    let dashboard = (!s.api_only).then_some(s.ws);
    agents_run(port, protocol, batch, rate, seconds, dashboard).await
}

/// The agents against `port` (a System 1 API, or `agents sink`), measuring end to end at the
/// broadcaster on port `dashboard` if given.
async fn agents_run(
    port: u16,
    protocol: &str,
    batch: u64,
    rate: f64,
    seconds: u64,
    dashboard: Option<u16>,
) -> Report {
    let agents = if batch == 1 { SINGLE_AGENTS } else { BATCH_AGENTS };
    let connections = if protocol == "http2" {
        HTTP2_CONNECTIONS
    } else {
        HTTP1_CONNECTIONS
    };
    agents_run_with(
        port,
        protocol,
        batch,
        rate,
        seconds,
        dashboard,
        (agents, connections),
    )
    .await
}

/// [`agents_run`] with `(agents, connections)` given.
async fn agents_run_with(
    port: u16,
    protocol: &str,
    batch: u64,
    rate: f64,
    seconds: u64,
    dashboard: Option<u16>,
    (agents, connections): (u64, u64),
) -> Report {
    let mut args: Vec<String> = [
        "--protocol",
        protocol,
        "--batch",
        &batch.to_string(),
        "--rate",
        &rate.to_string(),
        "--agents",
        &agents.to_string(),
        "--connections",
        &connections.to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(ws) = dashboard {
        args.extend(["--dashboard".into(), format!("ws://127.0.0.1:{ws}")]);
    }
    agents::bench(&format!("http://127.0.0.1:{port}"), seconds, &args).await
}

fn row(label: &str, build: &str, r: &Report, cost: &Cost) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
    let us = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
    format!(
        "| {label} | {build} | {:.0} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} | {} |",
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
        us(cost.system1_us),
        us(cost.redis_us),
        us(cost.script_us),
        us(cost.xadd_us),
        us(cost.publish_us),
        cost.group.map_or("-".into(), |g| format!("{g:.1}")),
        lab_core::report::load_average(),
    )
}

const HEADER: &str = "| setting | build | intended/s | achieved/s | delivered / sent | lost | ack p50 | ack p99 | e2e p50 | e2e p99 | e2e max | system1 µs/metric | redis µs/metric | in Redis: EVALSHA (ingest; since #14 also the workers' commit) / XADD / PUBLISH µs/metric | requests per Redis call | load |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// `redis-benchmark`'s XADD rate on the same Redis: `pipeline` commands per round trip from `clients`.
fn redis_benchmark_xadd(redis: &RedisServer, clients: u32, pipeline: u32) -> Option<f64> {
    let out = Command::new("redis-benchmark")
        .args(["-p", &redis.port()?.to_string(), "-n", "300000", "-q"])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
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

/// The agents' own ceiling: the same agents against `agents sink` (acks at once, no work), served by
/// a thread of its own, as the API would be.
fn sink_row(
    runtime: &tokio::runtime::Runtime,
    protocol: &str,
    batch: u64,
    rate: f64,
    seconds: u64,
) -> Report {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port for the sink");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let stop = CancellationToken::new();
    let sink_stop = stop.clone();
    let sink = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                _ = agents::sink::serve(listener) => {}
                _ = sink_stop.cancelled() => {}
            }
        });
    });
    let report = runtime.block_on(agents_run(port, protocol, batch, rate, seconds, None));
    stop.cancel();
    let _ = sink.join();
    report
}

/// One row of the runtime comparison (issue #14, point 4): the API alone, as `processes` processes
/// with `--runtime runtime` each, the agents split evenly between them (rate, agents, connections);
/// the reports merged, the CPU and the accepted metrics summed.
fn runtime_row(
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
    binary: &str,
    (processes, scheduler): (u64, &str),
    (protocol, rate, seconds): (&str, f64, u64),
) -> (Report, Cost) {
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut redis.connection())
        .expect("FLUSHALL");
    let apis: Vec<System1> = (0..processes)
        .map(|_| start_system1(binary, redis, 0, &["--runtime", scheduler]))
        .collect();
    let total_cpu =
        |apis: &[System1]| -> Option<Duration> { apis.iter().map(|s| cpu_time(s.child.id())).sum() };
    let redis_pid = redis_pid(redis);
    let before = (total_cpu(&apis), redis_pid.and_then(cpu_time));
    let connections = if protocol == "http2" {
        HTTP2_CONNECTIONS
    } else {
        HTTP1_CONNECTIONS
    };
    let share = (SINGLE_AGENTS / processes, (connections / processes).max(1));
    let each = rate / processes as f64;
    let ports: Vec<u16> = apis
        .iter()
        .map(|s| if protocol == "http2" { s.http2 } else { s.http })
        .collect();
    // All the processes' agents at once.
    let reports: Vec<Report> = runtime.block_on(futures_util::future::join_all(
        ports
            .iter()
            .map(|&port| agents_run_with(port, protocol, 1, each, seconds, None, share)),
    ));
    let after = (total_cpu(&apis), redis_pid.and_then(cpu_time));
    let mut accepted = 0;
    for s in &apis {
        let m = runtime.block_on(api_monitoring(s.http));
        accepted += m.and_then(|m| m["metricsAccepted"].as_u64()).unwrap_or(0);
    }
    let per_metric = |a: Option<Duration>, b: Option<Duration>| {
        let used = b?.checked_sub(a?)?;
        (accepted > 0).then(|| used.as_secs_f64() * 1e6 / accepted as f64)
    };
    let report = Report::merge(&reports).expect("the agents' reports merge");
    let cost = Cost {
        system1_us: per_metric(before.0, after.0),
        redis_us: per_metric(before.1, after.1),
        group: None,
        script_us: None,
        xadd_us: None,
        publish_us: None,
    };
    (report, cost)
}

/// One row per build, one after the other.
fn rows(
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
    label: &str,
    workers: u32,
    setting: (&str, u64, f64, u64),
) -> Vec<(Report, Cost)> {
    binaries()
        .iter()
        .map(|(build, path)| {
            let (r, cost) = fresh_row(runtime, redis, path, workers, setting);
            println!("{}", row(label, build, &r, &cost));
            (r, cost)
        })
        .collect()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let single_only = std::env::args().any(|a| a == "--single");
    let api_only = std::env::args().any(|a| a == "--api");
    let targets = std::env::args().any(|a| a == "--targets");
    let runtimes = std::env::args().any(|a| a == "--runtimes");
    let seconds = if quick { 2 } else { 5 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = RedisServer::start().expect("redis-server is installed");
    println!("# System 1 load benchmark\n");
    println!(
        "Machine: {}; Redis, System 1 and the agents share them.\n",
        agents::report::machine()
    );
    let builds: Vec<String> = binaries().iter().map(|(l, p)| format!("{l} = `{p}`")).collect();
    println!("Builds: {}.\n", builds.join("; "));
    let ceiling = |label: &str, v: Option<f64>| match v {
        Some(rate) => {
            println!("Ceiling: `redis-benchmark` {label} on the same Redis: **{rate:.0} XADD/s**.\n")
        }
        None => println!("Ceiling: redis-benchmark not available.\n"),
    };
    ceiling(
        "-P 64 (pipelined XADD, 50 clients)",
        redis_benchmark_xadd(&redis, 50, 64),
    );
    if targets || api_only {
        ceiling(
            "-P 1 (un-pipelined XADD, 50 clients)",
            redis_benchmark_xadd(&redis, 50, 1),
        );
    }
    println!(
        "Open loop; single metrics: {SINGLE_AGENTS} agents, over HTTP/1.1 on {HTTP1_CONNECTIONS} connections, over HTTP/2 on {HTTP2_CONNECTIONS}; batches: {BATCH_AGENTS} agents on {HTTP2_CONNECTIONS} HTTP/2 connections; each row on a fresh system1 and an emptied Redis. ack = the HTTP response; e2e = `metric.processed` at a dashboard of the broadcaster; both from each metric's due time; {seconds} s per row after 1 s warm-up; CPU per metric = the process's utime + stime over the row / the metrics the API accepted (`system1` is `all`: API, workers and broadcaster, or `api` alone in the API rows); load = the 1-minute load average after the row.\n"
    );
    if runtimes {
        println!(
            "The API alone, single metrics, {SINGLE_AGENTS} agents in all; `build` = processes × scheduler (`--runtime`); with two processes the agents are split between them (half the rate, agents and connections each) and their reports merged, their CPU summed.\n"
        );
        println!("{HEADER}");
        let binary = &binaries()[0].1;
        for protocol in ["http1", "http2"] {
            for rate in [25_000.0, 50_000.0] {
                for (processes, scheduler) in
                    [(1, "multi-thread"), (1, "current-thread"), (2, "current-thread")]
                {
                    let (r, cost) = runtime_row(
                        &runtime,
                        &redis,
                        binary,
                        (processes, scheduler),
                        (protocol, rate, seconds),
                    );
                    let build = format!("{processes} × {scheduler}");
                    println!("{}", row(&format!("API alone, {protocol}"), &build, &r, &cost));
                }
            }
        }
        return;
    }
    if api_only {
        println!("{HEADER}");
        for protocol in ["http1", "http2"] {
            for rate in [5_000.0, 10_000.0, 25_000.0, 50_000.0] {
                let label = format!("API alone, {protocol}, single");
                rows(&runtime, &redis, &label, 0, (protocol, 1, rate, seconds));
            }
        }
        return;
    }
    if targets {
        println!(
            "\nThe agents' own ceiling (`agents sink`: acks at once, no work), same agents and connections:\n"
        );
        println!("| setting | intended/s | achieved/s | ack p50 | ack p99 |\n|---|---|---|---|---|");
        for (protocol, batch, rate) in [
            ("http1", 1, 25_000.0),
            ("http1", 1, 50_000.0),
            ("http2", 1, 25_000.0),
            ("http2", 1, 50_000.0),
            ("http2", 100, 200_000.0),
        ] {
            let r = sink_row(&runtime, protocol, batch, rate, seconds);
            let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
            println!(
                "| sink, {protocol}, batch {batch} | {:.0} | {:.0} | {} | {} |",
                r.intended_rate,
                r.achieved_rate,
                ms(r.ack_latency_ms.p50),
                ms(r.ack_latency_ms.p99)
            );
        }
        println!("\n{HEADER}");
        for protocol in ["http1", "http2"] {
            for rate in [5_000.0, 25_000.0, 50_000.0] {
                rows(
                    &runtime,
                    &redis,
                    &format!("{protocol}, single, 2 workers"),
                    2,
                    (protocol, 1, rate, seconds),
                );
            }
        }
        rows(
            &runtime,
            &redis,
            "http2, batches of 100, 2 workers",
            2,
            ("http2", 100, 200_000.0, seconds),
        );
        return;
    }
    println!("{HEADER}");
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
        rows(
            &runtime,
            &redis,
            "HTTP/1.1, single, 2 workers",
            2,
            ("http1", 1, rate, seconds),
        );
    }
    for &rate in http2_rates {
        rows(
            &runtime,
            &redis,
            "HTTP/2, single, 2 workers",
            2,
            ("http2", 1, rate, seconds),
        );
    }
    if single_only {
        return;
    }
    let mut saturation = None;
    for rate in [10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0] {
        let results = rows(
            &runtime,
            &redis,
            "HTTP/2, batches of 100, 2 workers",
            2,
            ("http2", 100, rate, seconds),
        );
        if !results.iter().all(|(r, _)| r.kept_up(100.0) == Some(true)) {
            break;
        }
        saturation = Some(rate);
    }
    for rate in [10_000.0, 20_000.0] {
        rows(
            &runtime,
            &redis,
            "HTTP/2, batches of 100, 1 worker",
            1,
            ("http2", 100, rate, seconds),
        );
    }
    println!(
        "\nSaturation with batches of 100 and 2 workers (every metric delivered, e2e p99 under 100 ms, in every build): {}.",
        saturation.map_or("below 10 000 metrics/s".to_owned(), |r| format!(
            "kept up with {r:.0} metrics/s"
        ))
    );
}
