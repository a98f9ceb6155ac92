//! Load benchmark of System 2, measured by the lab's own agents — the same instrument as System 1's
//! benchmark, so that a difference between the systems is never a difference between instruments.
//!
//! Run with `cargo bench -p system2-ws --bench load` (`-- --quick` for short rows). It starts the
//! release `system2` binary on a free port and drives it with `agents::run`, on the same cores (the
//! lab's setting: the numbers include the load generator's own cost): open loop, latency from each
//! metric's due time; ack = `metric.ack` at the producer, end to end = the update at the agents'
//! dashboard (batched, as the lab's page asks). Rates climb until a row no longer keeps up (acks
//! below 95 % of the offered rate, a metric lost or coalesced, or e2e p99 above 100 ms); the last
//! rate that kept up is the saturation point, single metrics and batches of 100. `SYSTEM2_BENCH_BIN=path` runs
//! another build in the same conditions.
//!
//! **Rows are independent.** Each row starts its own `system2`: a saturated row's backlog would
//! otherwise still be in the kernel's buffers during the next row and count there.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_core::report::Report;

/// Simulated servers, each on its own WebSocket connection (as the lab's `agents --agents 10`).
const AGENTS: u64 = 10;

struct System2 {
    /// Held for its drop: the server dies with the row.
    _child: lab_testkit::KillOnDrop,
    port: u16,
}

fn start_system2() -> System2 {
    let port = lab_testkit::free_port().expect("a free port");
    let binary = std::env::var("SYSTEM2_BENCH_BIN").unwrap_or(env!("CARGO_BIN_EXE_system2").into());
    // No per-connection message limit: the benchmark is after the server's own ceiling.
    // Wrapped at once: if it does not start in time, the assert below still kills it.
    let child = lab_testkit::KillOnDrop(
        Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--log-level", "warn", "--max-messages-per-sec", "0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start system2"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "system2 did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    System2 { _child: child, port }
}

/// One row on a fresh `system2`.
fn fresh_row(runtime: &tokio::runtime::Runtime, batch: u64, rate: f64, seconds: u64) -> Report {
    let system2 = start_system2();
    let url = format!("ws://127.0.0.1:{}", system2.port);
    let args = [
        "--batch",
        &batch.to_string(),
        "--rate",
        &rate.to_string(),
        "--agents",
        &AGENTS.to_string(),
        "--dashboard",
        &url,
    ]
    .map(str::to_owned);
    runtime.block_on(agents::bench(&url, seconds, &args))
}

fn row(label: &str, r: &Report) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
    format!(
        "| {label} | {:.0} | {:.0} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.intended_rate,
        r.achieved_rate,
        r.delivered,
        r.sent,
        r.lost.map_or("-".into(), |l| l.to_string()),
        r.coalesced.map_or("-".into(), |c| c.to_string()),
        ms(r.ack_latency_ms.p50),
        ms(r.ack_latency_ms.p99),
        ms(r.e2e_latency_ms.p50),
        ms(r.e2e_latency_ms.p99),
        ms(r.e2e_latency_ms.max),
        lab_core::report::load_average(),
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let seconds = if quick { 2 } else { 5 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("# System 2 load benchmark\n");
    println!(
        "Machine: {}; System 2 and the agents share it.\n",
        lab_core::report::machine()
    );
    println!(
        "Open loop, measured by the agents: {AGENTS} simulated servers on {AGENTS} WebSocket connections, one dashboard (the agents', batched updates); each row on a fresh system2. ack = `metric.ack`; e2e = the update at the dashboard; both from each metric's due time; {seconds} s per row after 1 s warm-up; coalesced = metrics the dashboard got only inside a later update (not lost); load = the 1-minute load average after the row.\n"
    );
    println!(
        "| setting | intended/s | achieved/s | delivered / sent | lost | coalesced | ack p50 | ack p99 | e2e p50 | e2e p99 | e2e max | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut saturation = [None, None];
    for (i, (batch, rates)) in [
        (
            1u64,
            &[
                1_000.0, 5_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0,
            ][..],
        ),
        (
            100,
            &[20_000.0, 50_000.0, 100_000.0, 200_000.0, 400_000.0, 800_000.0][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let label = if batch == 1 {
            "single metrics".to_string()
        } else {
            format!("batches of {batch}")
        };
        for &rate in rates {
            let r = fresh_row(&runtime, batch, rate, seconds);
            println!("{}", row(&label, &r));
            if r.kept_up(100.0) != Some(true) {
                break;
            }
            saturation[i] = Some(rate);
        }
    }
    let said = |s: Option<f64>| {
        s.map_or("below the lowest rate".to_owned(), |r| {
            format!("kept up with {r:.0}/s")
        })
    };
    println!(
        "\nSaturation (every metric acknowledged and delivered on its own, e2e p99 under 100 ms): single metrics {}, batches of 100 {}.",
        said(saturation[0]),
        said(saturation[1])
    );
}
