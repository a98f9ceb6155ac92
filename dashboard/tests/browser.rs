//! The page in a real browser, against the real systems: Redis (a private one, lab-testkit), System 1
//! (API, a worker, the broadcaster), System 2, and the agents loading both; the dashboard on a free
//! port pointing at them; Debian's `chromium`, headless, driven over the DevTools protocol.
//!
//! It proves: the page connects to both systems, shows latency figures for both that change over
//! time, counts no gaps and no duplicates, shows both health badges "ok" and the monitoring panels
//! filled; the browser's console has no errors and no request failed; and it measures the page's
//! frame work and the renderer's CPU. A screenshot is saved under `target/tmp/` (its path printed).
//!
//! Without `chromium` the test fails when `CI` is set and is skipped (with a message) otherwise.
//! Load: `DASHBOARD_BROWSER_RATE` metrics/s per system (default 200, from 20 simulated servers: a
//! debug build of System 1 keeps up with that on a busy 2-core machine).

mod cdp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use cdp::Browser;

/// How long the page may take to show what the test waits for.
const DEADLINE: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    let candidates = [
        std::env::var("CHROMIUM").ok(),
        Some("/usr/bin/chromium".into()),
        Some("/usr/bin/chromium-browser".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// System 1, in this process: broadcaster, workers (with their ops port) and API, on free ports.
struct System1 {
    api: SocketAddr,
    ops: SocketAddr,
    broadcaster: SocketAddr,
}

async fn start_system1(redis: &lab_testkit::RedisServer, stop: &CancellationToken) -> System1 {
    use system1_http::config::{Cli, Role};
    let url = redis.url();
    let cli = Cli::try_parse_from([
        "system1",
        "--redis-url",
        &url,
        "all",
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--http2-port",
        "0",
        "--ws-host",
        "127.0.0.1",
        "--ws-port",
        "0",
        "--ops-host",
        "127.0.0.1",
        "--ops-port",
        "0",
        "--workers",
        "2",
    ])
    .expect("valid System 1 flags");
    let Role::All {
        api,
        worker,
        broadcaster,
    } = cli.role
    else {
        unreachable!()
    };
    let b = system1_http::broadcaster::Broadcaster::bind(&broadcaster, &cli.redis)
        .await
        .unwrap();
    let broadcaster_addr = b.local_addr();
    let s = stop.clone();
    tokio::spawn(b.run(async move { s.cancelled().await }));
    let stats = std::sync::Arc::new(system1_http::worker::WorkerStats::default());
    let s = stop.clone();
    let (ops, ops_task) =
        system1_http::worker_ops::serve(
            &worker,
            &cli.redis,
            stats.clone(),
            async move { s.cancelled().await },
        )
        .await
        .unwrap();
    tokio::spawn(ops_task);
    for name in system1_http::worker::consumer_names(&worker) {
        let w = system1_http::worker::Worker::connect(&worker, &cli.redis, name)
            .await
            .unwrap()
            .with_stats(stats.clone());
        tokio::spawn(w.run(stop.clone()));
    }
    let a = system1_http::api::IngestApi::bind(&api, &cli.redis)
        .await
        .unwrap();
    let api_addr = a.local_addrs()[0];
    let s = stop.clone();
    tokio::spawn(a.run(async move { s.cancelled().await }));
    System1 {
        api: api_addr,
        ops,
        broadcaster: broadcaster_addr,
    }
}

fn agents(
    target: String,
    dashboard: String,
    rate: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let args = [
        "agents",
        "--target",
        &target,
        "--dashboard",
        &dashboard,
        "--agents",
        "20",
        "--rate",
        rate,
        "--duration",
        "0",
        "--quiet",
    ];
    let cli = agents::config::Cli::try_parse_from(args).expect("valid agents flags");
    tokio::spawn(async move {
        let _ = agents::run(cli.run, stop, false).await;
    })
}

/// Reads `window.lab` (a JSON snapshot).
async fn lab(browser: &Browser) -> Value {
    browser
        .evaluate("window.lab && window.lab.snapshot ? window.lab.snapshot() : null")
        .await
}

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_both_systems_live_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        let message = "chromium is not installed (apt-get install chromium): the browser test cannot run";
        if std::env::var_os("CI").is_some() {
            panic!("{message}; CI is set, so this is a failure");
        }
        eprintln!("SKIPPED: {message}");
        return;
    };
    let rate = std::env::var("DASHBOARD_BROWSER_RATE").unwrap_or_else(|_| "200".into());
    let stop = CancellationToken::new();
    let redis = lab_testkit::RedisServer::start().expect("a private redis-server");
    let s1 = start_system1(&redis, &stop).await;
    let s2 = system2_ws::Server::bind(system2_ws::config::Config::for_tests())
        .await
        .unwrap();
    let s2_addr = s2.local_addr();
    let s = stop.clone();
    tokio::spawn(s2.run(async move { s.cancelled().await }));

    let config = dashboard::config::Config::parse_from([
        "dashboard".to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        "0".into(),
        format!("--system1-ws=ws://{}/", s1.broadcaster),
        format!("--system1-api=http://{}", s1.api),
        format!("--system1-ops=http://{}", s1.ops),
        format!("--system1-broadcaster=http://{}", s1.broadcaster),
        format!("--system2-ws=ws://{s2_addr}/"),
        format!("--system2-http=http://{s2_addr}"),
    ]);
    let server = dashboard::Server::bind(config).await.unwrap();
    let page = format!("http://{}/", server.local_addr());
    let s = stop.clone();
    tokio::spawn(server.run(async move { s.cancelled().await }));

    let agents1 = agents(
        format!("http://{}", s1.api),
        format!("ws://{}", s1.broadcaster),
        &rate,
        stop.clone(),
    );
    let agents2 = agents(
        format!("ws://{s2_addr}"),
        format!("ws://{s2_addr}"),
        &rate,
        stop.clone(),
    );

    let browser = Browser::launch(&chromium).await.expect("chromium starts");
    browser.navigate(&page).await.expect("the page loads");

    // Wait until both systems show latency figures that change over time.
    let started = Instant::now();
    let mut first: Option<Value> = None;
    let state = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "the page did not show both systems live within {DEADLINE:?}; window.lab: {:#}\nbrowser problems: {:#?}",
            lab(&browser).await,
            browser.problems()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let state = lab(&browser).await;
        let ready = ["system1", "system2"].iter().all(|s| {
            let sys = &state["systems"][s];
            sys["connected"] == true
                && f(&sys["last10s"]["p50"]).is_some()
                && sys["updates"].as_u64().unwrap_or(0) > 200
                && sys["health"]["level"] == "ok"
        });
        if !ready {
            continue;
        }
        match &first {
            None => first = Some(state),
            Some(before) => {
                let changed = ["system1", "system2"].iter().all(|s| {
                    let (a, b) = (&before["systems"][s], &state["systems"][s]);
                    b["updates"].as_u64() > a["updates"].as_u64() && a["last10s"] != b["last10s"]
                });
                if changed && started.elapsed() > Duration::from_secs(8) {
                    break state;
                }
            }
        }
    };

    // Frame work and the renderer's CPU, over 5 s of this load.
    let before = browser.performance().await;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = browser.performance().await;
    let secs = wall.elapsed().as_secs_f64();
    let share = |name: &str| {
        (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)) / secs * 100.0
    };
    let measured = lab(&browser).await;
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser-test.png");
    std::fs::write(&screenshot, browser.screenshot().await).unwrap();
    println!("screenshot: {}", screenshot.display());
    println!(
        "load: {rate} metrics/s per system from 20 simulated servers each; page frame work (ms): {}; frame interval \
         (ms): {}; long tasks: {}; renderer main thread busy {:.1} % of one core (script {:.1} %, layout \
         {:.1} %, style {:.1} %)",
        measured["frame"]["workMs"],
        measured["frame"]["intervalMs"],
        measured["frame"]["longTasks"],
        share("TaskDuration"),
        share("ScriptDuration"),
        share("LayoutDuration"),
        share("RecalcStyleDuration"),
    );
    for s in ["system1", "system2"] {
        let sys = &measured["systems"][s];
        println!(
            "{s}: updates {} in {} frames ({} ignored), last 10 s {}, since open {}, gaps {}, awaited {}, duplicates {}, \
             coalesced {}, missed around the connection {}",
            sys["updates"],
            sys["frames"],
            sys["ignored"],
            sys["last10s"],
            sys["sinceOpen"],
            sys["gaps"],
            sys["pendingGaps"],
            sys["duplicates"],
            sys["coalesced"],
            sys["missedAtConnect"]
        );
    }

    for s in ["system1", "system2"] {
        let sys = &measured["systems"][s];
        assert_eq!(sys["gaps"], 0, "{s}: the page counted gaps: {sys:#}");
        assert_eq!(sys["duplicates"], 0, "{s}: the page counted duplicates: {sys:#}");
        assert_eq!(sys["errors"], 0, "{s}: error frames: {sys:#}");
        assert_eq!(sys["servers"], 20, "{s}: every simulated server is seen: {sys:#}");
        assert_eq!(sys["connects"], 1, "{s}: one connection, never dropped: {sys:#}");
        // Both systems batch for the page, so System 1 sends it no `metric.ingested` event once it
        // has subscribed: the frames the page ignores are the acks and what came before its
        // subscription took effect, not one per metric as without batching.
        let (ignored, updates) = (sys["ignored"].as_u64().unwrap(), sys["updates"].as_u64().unwrap());
        assert!(
            ignored * 10 < updates,
            "{s}: {ignored} frames ignored for {updates} updates: {sys:#}"
        );
        // Positive, and below the test's own length: a latency, not a clock error. (How large it is
        // depends on the machine's load; no bound on that here.)
        let p50 = f(&sys["sinceOpen"]["p50"]).unwrap();
        assert!(
            p50 > 0.0 && p50 < DEADLINE.as_secs_f64() * 1e3,
            "{s}: a plausible median latency: {p50} ms"
        );
    }
    assert_eq!(state["errors"], json!([]), "the page recorded errors");
    // The precise clock: the page is cross-origin isolated.
    assert_eq!(browser.evaluate("window.crossOriginIsolated").await, true);
    assert!(
        measured["frame"]["count"].as_u64().unwrap() > 10,
        "the page drew frames: {measured:#}"
    );
    // The monitoring panels show the systems' own documents.
    let panel = browser
        .evaluate("[...document.querySelectorAll('table.monitoring td')].map(td => td.textContent).join('|')")
        .await;
    assert!(
        !panel.as_str().unwrap().contains("cannot connect"),
        "monitoring panels: {panel}"
    );
    // A histogram self-check in the page's own JavaScript: 1..=1000 ms, p50 within 1 %.
    let p50 = browser
        .evaluate("(() => { const h = new LatencyHistogram(); for (let i = 1; i <= 1000; i++) h.record(i); return h.summary().p50; })()")
        .await;
    let p50 = p50.as_f64().unwrap();
    assert!(
        (p50 - 500.0).abs() / 500.0 < 0.01,
        "the page's histogram p50 of 1..=1000 is {p50}"
    );

    let problems = browser.problems();
    assert!(
        problems.is_empty(),
        "the browser reported problems: {problems:#?}"
    );

    browser.close().await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = agents1.await;
        let _ = agents2.await;
    })
    .await;
}

/// Not a check: a screenshot and the page's costs against a lab that is already running (`cargo lab
/// up`), for the docs. `DASHBOARD_URL=http://127.0.0.1:4080/ DASHBOARD_SCREENSHOT=docs/images/dashboard.png
/// cargo test -p dashboard --test browser -- --ignored --nocapture of_a_running_lab`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a running lab: set DASHBOARD_URL"]
async fn of_a_running_lab() {
    let url = std::env::var("DASHBOARD_URL").expect("DASHBOARD_URL: the page of a running lab");
    let out = std::env::var("DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-lab.png"));
    let secs: u64 = std::env::var("DASHBOARD_WATCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let browser = Browser::launch(&chromium().expect("chromium")).await.unwrap();
    browser.navigate(&url).await.unwrap();
    // Show some servers' own lines in the per-server charts, as a student would.
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser
        .evaluate(
            "(() => { const i = document.getElementById('res-servers'); i.value = 'server-1, server-2';
             i.dispatchEvent(new Event('change')); })()",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(secs.saturating_sub(10))).await;
    let before = browser.performance().await;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = browser.performance().await;
    let share = |name: &str| {
        (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0))
            / wall.elapsed().as_secs_f64()
            * 100.0
    };
    let state = lab(&browser).await;
    std::fs::write(&out, browser.screenshot().await).unwrap();
    println!("screenshot: {}", out.display());
    println!(
        "frame work (ms): {}; frame interval (ms): {}; long tasks: {}; renderer main thread busy {:.1} % \
         (script {:.1} %, layout {:.1} %, style {:.1} %)",
        state["frame"]["workMs"],
        state["frame"]["intervalMs"],
        state["frame"]["longTasks"],
        share("TaskDuration"),
        share("ScriptDuration"),
        share("LayoutDuration"),
        share("RecalcStyleDuration")
    );
    for s in ["system1", "system2"] {
        let sys = &state["systems"][s];
        println!(
            "{s}: rate {}/s, servers {}, last 10 s {}, gaps {}, late {}, duplicates {}, coalesced {}",
            sys["rate"],
            sys["servers"],
            sys["last10s"],
            sys["gaps"],
            sys["lateAfterGap"],
            sys["duplicates"],
            sys["coalesced"]
        );
    }
    println!("problems: {:?}", browser.problems());
    browser.close().await;
}

/// The page's accounting, through its own functions (`window.lab.testing.feed`), on frames the
/// running systems do not send yet: coalesced ranges, gap frames, seqs late, out of order, twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_accounting_counts_coalesced_ranges_late_and_duplicate_seqs() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed; CI is set, so this is a failure"
        );
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    };
    let config = dashboard::config::Config::parse_from(["dashboard", "--host=127.0.0.1", "--port=0"]);
    let server = dashboard::Server::bind(config).await.unwrap();
    let page = format!("http://{}/", server.local_addr());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(server.run(async move { s.cancelled().await }));
    let browser = Browser::launch(&chromium).await.expect("chromium starts");
    browser.navigate(&page).await.unwrap();
    let update = |seq: u64, ts: f64, extra: &str| {
        format!(
            r#"{{"type":"metric.update","payload":{{"serverId":"a","timestamp":{ts},"seq":{seq}{extra}}}}}"#
        )
    };

    // 0, 1, 2, then one update standing for 3..=6: coalesced, not a gap.
    let frames = json!([
        [update(0, 1000.0, ""), 1001.0],
        [update(1, 1000.0, ""), 1001.0],
        [update(2, 1000.0, ""), 1001.0],
        [
            update(6, 1000.0, r#","coalesced":3,"firstSeq":3,"lastSeq":6"#),
            1001.0
        ],
    ]);
    let r = feed(&browser, "system2", frames, Some(100_000.0)).await;
    assert_eq!(
        (r["gaps"].as_u64(), r["coalesced"].as_u64(), r["metrics"].as_u64()),
        (Some(0), Some(3), Some(7)),
        "{r:#}"
    );
    assert_eq!(r["lastSeq"]["a"], 6);

    // 7, 9: 8 is awaited; past the grace it is a gap; when it comes after all, it is late, not lost.
    let skipped = json!([[update(7, 1000.0, ""), 1001.0], [update(9, 1000.0, ""), 1001.0]]);
    let r = feed(&browser, "system2", skipped.clone(), Some(1002.0)).await;
    assert_eq!(
        (r["gaps"].as_u64(), r["pendingGaps"].as_u64()),
        (Some(0), Some(1)),
        "{r:#}"
    );
    let r = feed(&browser, "system2", skipped, Some(7000.0)).await;
    assert_eq!(
        (r["gaps"].as_u64(), r["pendingGaps"].as_u64()),
        (Some(1), Some(0)),
        "{r:#}"
    );
    let late = browser
        .evaluate(&format!(
            "window.lab.testing.feed('system2', {}, 7000.0, {})",
            json!([[update(7, 1000.0, ""), 1001.0], [update(9, 1000.0, ""), 1001.0]]),
            json!([[update(8, 1000.0, ""), 7001.0]])
        ))
        .await;
    assert_eq!(
        (late["gaps"].as_u64(), late["lateAfterGap"].as_u64()),
        (Some(0), Some(1)),
        "{late:#}"
    );

    // The same skip just after the connection opened: missed around the connection, not a gap.
    let at_connect = browser
        .evaluate(&format!(
            "window.lab.testing.feed('system1', {}, 7000.0, [], 1000.0)",
            json!([[update(7, 1000.0, ""), 1001.0], [update(9, 1000.0, ""), 1001.0]])
        ))
        .await;
    assert_eq!(
        (
            at_connect["gaps"].as_u64(),
            at_connect["missedAtConnect"].as_u64()
        ),
        (Some(0), Some(1)),
        "{at_connect:#}"
    );

    // Out of order within the grace, then one seq twice: no gap, one duplicate.
    let frames = json!([
        [update(10, 1000.0, ""), 1001.0],
        [update(12, 1000.0, ""), 1001.0],
        [update(11, 1000.0, ""), 1001.0],
        [update(12, 1000.0, ""), 1001.0],
    ]);
    let r = feed(&browser, "system2", frames, Some(1002.0)).await;
    assert_eq!(
        (
            r["gaps"].as_u64(),
            r["pendingGaps"].as_u64(),
            r["duplicates"].as_u64()
        ),
        (Some(0), Some(0), Some(1)),
        "{r:#}"
    );

    // A batch: each item's latency from its own timestamp, against the frame's receipt time.
    let batch = r#"{"type":"metric.updates","items":[{"serverId":"a","timestamp":1000,"seq":0},{"serverId":"b","timestamp":1090,"seq":0}]}"#;
    let r = feed(&browser, "system2", json!([[batch, 1100.0]]), None).await;
    assert_eq!(r["updates"], 2, "{r:#}");
    assert_eq!(
        (r["latency"]["max"].as_f64(), r["min"].as_f64()),
        (Some(100.0), Some(10.0)),
        "{r:#}"
    );

    // System 1: metric.processed carries latency, metric.ingested does not; gap frames are counted.
    let frames = json!([
        [
            r#"{"type":"metric.ingested","entryId":"1-0","payload":{"serverId":"a","timestamp":1000,"seq":0}}"#,
            1001.0
        ],
        [
            r#"{"type":"metric.processed","entryId":"1-0","payload":{"serverId":"a","timestamp":1000,"seq":0}}"#,
            1002.5
        ],
        [r#"{"type":"gap","serverId":"a","events":5}"#, 1003.0],
        [r#"{"type":"gap","reason":"unknown fields"}"#, 1003.0],
        ["not json", 1003.0],
    ]);
    let r = feed(&browser, "system1", frames, None).await;
    assert_eq!(
        (r["updates"].as_u64(), r["ignored"].as_u64()),
        (Some(1), Some(1)),
        "{r:#}"
    );
    assert_eq!(
        (r["serverGapEvents"].as_u64(), r["serverGapCount"].as_u64()),
        (Some(2), Some(5)),
        "{r:#}"
    );
    assert_eq!(r["errors"], 1, "a frame that is not JSON is counted: {r:#}");
    assert_eq!(r["latency"]["max"], 2.5, "{r:#}");

    // A negative latency (a clock step) is recorded as 0 and counted, never dropped.
    let r = feed(
        &browser,
        "system2",
        json!([[update(0, 2000.0, ""), 1000.0]]),
        None,
    )
    .await;
    assert_eq!(
        (r["negative"].as_u64(), r["updates"].as_u64()),
        (Some(1), Some(1)),
        "{r:#}"
    );

    browser.close().await;
    stop.cancel();
}

/// `window.lab.testing.feed(name, frames, expireAt)` in the page.
async fn feed(browser: &Browser, name: &str, frames: Value, expire_at: Option<f64>) -> Value {
    let call = format!(
        "window.lab.testing.feed({}, {frames}, {})",
        json!(name),
        expire_at.map_or("undefined".to_string(), |t| t.to_string())
    );
    browser.evaluate(&call).await
}

/// Not a check: how many updates per second the page keeps up with, fed by a synthetic server that
/// speaks each system's dashboard protocol (`metric.updates` batches when asked for, as the page does
/// of both), 100 servers each, at
/// `DASHBOARD_CAPACITY_RATE` updates/s per system (default 20 000), stamped with the current time.
/// `cargo test -p dashboard --test browser -- --ignored --nocapture page_capacity`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn page_capacity() {
    let rate: u64 = std::env::var("DASHBOARD_CAPACITY_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let s1 = feeder(rate).await;
    let s2 = feeder(rate).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dashboard::config::Config::parse_from([
        "dashboard".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        format!("--system1-ws=ws://{s1}/"),
        format!("--system2-ws=ws://{s2}/"),
        format!("--system1-api=http://{closed}"),
        format!("--system1-ops=http://{closed}"),
        format!("--system1-broadcaster=http://{closed}"),
        format!("--system2-http=http://{closed}"),
    ]);
    let server = dashboard::Server::bind(config).await.unwrap();
    let page = format!("http://{}/", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    let browser = Browser::launch(&chromium().expect("chromium")).await.unwrap();
    browser.navigate(&page).await.unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = browser.performance().await;
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = browser.performance().await;
    let share = |name: &str| {
        (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0))
            / wall.elapsed().as_secs_f64()
            * 100.0
    };
    let state = lab(&browser).await;
    println!(
        "fed {rate} updates/s per system: frame work (ms) {}; frame interval (ms) {}; long tasks {}; renderer \
         main thread busy {:.1} % (script {:.1} %)",
        state["frame"]["workMs"],
        state["frame"]["intervalMs"],
        state["frame"]["longTasks"],
        share("TaskDuration"),
        share("ScriptDuration"),
    );
    for s in ["system1", "system2"] {
        let sys = &state["systems"][s];
        println!(
            "{s}: rate {}/s, connects {}, gaps {}, latency last 10 s {}",
            sys["rate"], sys["connects"], sys["gaps"], sys["last10s"]
        );
    }
    browser.close().await;
}

/// A dashboard endpoint that sends `rate` updates/s of 100 servers once a client has said anything:
/// `metric.updates` batches if its first message asked for `batchUpdates` (as both systems do), else
/// one frame per event, System 1's `metric.ingested` and `metric.processed` each.
async fn feeder(rate: u64) -> SocketAddr {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move |ws: WebSocketUpgrade| async move {
            ws.on_upgrade(move |socket| async move {
                let (mut sink, mut stream) = socket.split();
                // register / subscribe: batched frames if the page asked for them, as both systems do.
                let batched = matches!(stream.next().await, Some(Ok(Message::Text(t))) if t.contains(r#""batchUpdates":true"#));
                tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
                let mut seqs = [0u64; 100];
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let per_tick = (rate / 100).max(1);
                let mut n = 0usize;
                loop {
                    tick.tick().await;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64()
                        * 1e3;
                    let mut items = Vec::new();
                    for _ in 0..per_tick {
                        let server = n % 100;
                        n += 1;
                        let seq = seqs[server];
                        seqs[server] += 1;
                        let windows = if seq % 10 == 0 {
                            r#","windows":{"1000":{"samples":10,"averages":{"cpu":40,"memory":50,"disk":60,"networkIn":100,"networkOut":90}}}"#
                        } else {
                            ""
                        };
                        items.push(format!(
                            r#"{{"serverId":"server-{}","timestamp":{now},"seq":{seq}{windows}}}"#,
                            server + 1
                        ));
                    }
                    let frames: Vec<String> = if batched {
                        items.chunks(256).map(|c| format!(r#"{{"type":"metric.updates","items":[{}]}}"#, c.join(","))).collect()
                    } else {
                        items
                            .iter()
                            .flat_map(|p| {
                                [
                                    format!(r#"{{"type":"metric.ingested","entryId":"1-0","payload":{p}}}"#),
                                    format!(r#"{{"type":"metric.processed","entryId":"1-0","payload":{p}}}"#),
                                ]
                            })
                            .collect()
                    };
                    for frame in frames {
                        if sink.feed(Message::Text(frame.into())).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    at
}
