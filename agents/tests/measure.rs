//! The agents as a measuring instrument, checked against servers whose behaviour is known: a delay,
//! a stall, refusals, dropped and duplicated updates. If these pass, the figures mean what they say.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agents::config::Cli;
use agents::report::Report;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use lab_core::parse::parse_client_frame;
use lab_core::wire::system2::ClientFrame;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How a test server misbehaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Every ack waits this long.
    delay: Duration,
    /// Acks (or HTTP answers) of anything arriving in this window, from the server's start, wait
    /// until its end.
    stall: Option<(Duration, Duration)>,
    /// The first N HTTP requests get 503 with `Retry-After: 0`.
    refuse_first: u32,
    /// Dashboard updates of metrics whose seq % 4 == 3 are dropped.
    drop_some: bool,
    /// Dashboard updates of metrics whose seq % 5 == 0 are sent twice.
    duplicate_some: bool,
    /// Dashboard updates of metrics whose seq % 4 == 3 are coalesced into the next one, which says so
    /// (`"coalesced":1`, `firstSeq`, `lastSeq`), as a server with a slow dashboard does.
    coalesce_some: bool,
}

#[derive(Clone)]
struct TestState {
    behaviour: Behaviour,
    started: Instant,
    updates: broadcast::Sender<String>,
    requests: Arc<AtomicU32>,
    frames: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestState {
    /// When an answer to something that arrived now may go out.
    fn answer_at(&self) -> tokio::time::Instant {
        let now = Instant::now();
        let mut at = now + self.behaviour.delay;
        if let Some((from, to)) = self.behaviour.stall {
            let elapsed = now - self.started;
            if elapsed >= from && elapsed < to {
                at = at.max(self.started + to);
            }
        }
        at.into()
    }
}

/// A System-2-like WebSocket server (and an HTTP ingest) with the given behaviour, on a free port.
async fn test_server(behaviour: Behaviour) -> (String, TestState) {
    let (updates, _) = broadcast::channel(100_000);
    let state = TestState {
        behaviour,
        started: Instant::now(),
        updates,
        requests: Arc::new(AtomicU32::new(0)),
        frames: Arc::new(std::sync::Mutex::new(Vec::new())),
    };
    let app = Router::new()
        .route(
            "/",
            get(|ws: WebSocketUpgrade, State(s): State<TestState>| async move {
                ws.on_upgrade(move |socket| session(socket, s))
            }),
        )
        .route("/metrics", post(http_ingest))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr.to_string(), state)
}

async fn session(socket: WebSocket, state: TestState) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, String)>();
    // The writer sends answers in order, each at its time.
    tokio::spawn(async move {
        while let Some((at, text)) = out_rx.recv().await {
            tokio::time::sleep_until(at).await;
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
    });
    let _ = out.send((
        tokio::time::Instant::now(),
        r#"{"type":"connection.ack","message":"test"}"#.into(),
    ));
    let mut dashboard: Option<broadcast::Receiver<String>> = None;
    loop {
        let incoming = match &mut dashboard {
            Some(rx) => tokio::select! {
                m = stream.next() => m,
                u = rx.recv() => {
                    if let Ok(u) = u {
                        let _ = out.send((tokio::time::Instant::now(), u));
                    }
                    continue;
                }
            },
            None => stream.next().await,
        };
        let Some(Ok(Message::Text(text))) = incoming else {
            return;
        };
        state.frames.lock().unwrap().push(text.to_string());
        match parse_client_frame(text.as_bytes()) {
            Ok(ClientFrame::Register(r)) if r.role == lab_core::wire::system2::Role::Dashboard => {
                dashboard = Some(state.updates.subscribe());
                let ack = r#"{"type":"register.ack","role":"dashboard","serverFilter":null}"#;
                let _ = out.send((tokio::time::Instant::now(), ack.into()));
            }
            Ok(ClientFrame::Metric(m)) => {
                publish(&state, &m);
                let ack = match m.seq {
                    Some(seq) => format!(
                        r#"{{"type":"metric.ack","serverId":"{}","seq":{seq}}}"#,
                        m.server_id
                    ),
                    None => format!(r#"{{"type":"metric.ack","serverId":"{}"}}"#, m.server_id),
                };
                let _ = out.send((state.answer_at(), ack));
            }
            Ok(ClientFrame::Metrics(items)) => {
                items.iter().for_each(|m| publish(&state, m));
                let _ = out.send((
                    state.answer_at(),
                    format!(r#"{{"type":"metrics.ack","accepted":{}}}"#, items.len()),
                ));
            }
            _ => {}
        }
    }
}

fn publish(state: &TestState, m: &lab_core::Metric) {
    let seq = m.seq.unwrap_or(0);
    if state.behaviour.drop_some && seq % 4 == 3 {
        return;
    }
    if state.behaviour.coalesce_some && seq % 4 == 3 {
        return;
    }
    let mut seq_field = m.seq.map(|s| format!(r#","seq":{s}"#)).unwrap_or_default();
    if state.behaviour.coalesce_some && seq % 4 == 0 && seq > 0 {
        seq_field.push_str(&format!(
            r#","coalesced":1,"firstSeq":{},"lastSeq":{seq}"#,
            seq - 1
        ));
    }
    let update = format!(
        r#"{{"type":"metric.update","payload":{{"serverId":"{}","timestamp":{}{seq_field},"windows":{{}}}}}}"#,
        m.server_id, m.timestamp
    );
    let copies = if state.behaviour.duplicate_some && seq % 5 == 0 {
        2
    } else {
        1
    };
    for _ in 0..copies {
        let _ = state.updates.send(update.clone());
    }
}

async fn http_ingest(State(state): State<TestState>) -> impl IntoResponse {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep_until(state.answer_at()).await;
    if n < state.behaviour.refuse_first {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            r#"{"error":"busy"}"#,
        )
            .into_response();
    }
    (StatusCode::ACCEPTED, r#"{"status":"accepted"}"#).into_response()
}

/// A server that answers nothing from 0.8 s to 1.3 s after it starts, then everything at once.
async fn stalling_server() -> String {
    let stall = Some((Duration::from_millis(800), Duration::from_millis(1300)));
    test_server(Behaviour {
        stall,
        ..Behaviour::default()
    })
    .await
    .0
}

async fn run(args: &[&str]) -> Report {
    let mut all = vec!["agents", "--cooldown", "1s", "--quiet"];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).expect("valid flags");
    agents::run(cli.run, CancellationToken::new(), false)
        .await
        .expect("a report")
}

fn ms(v: Option<f64>) -> f64 {
    v.expect("latencies were measured")
}

#[tokio::test]
async fn the_schedule_is_kept_exactly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(agents::sink::serve(listener));
    let r = run(&[
        "--target",
        &url,
        "--rate",
        "2000",
        "--agents",
        "5",
        "--connections",
        "2",
        "--duration",
        "2s",
    ])
    .await;
    assert_eq!(r.sent, 4000, "2 s at 2000/s");
    assert_eq!(r.acked, 4000);
    assert_eq!(r.lost, Some(0), "without a dashboard: everything acked");
    assert!((r.achieved_rate - 2000.0).abs() < 100.0, "{}", r.achieved_rate);
    let full: Vec<_> = r.timeline.iter().filter(|s| s.intended == 2000).collect();
    assert!(!full.is_empty(), "{:?}", r.timeline);
    for s in &full {
        assert!(
            (s.sent as f64 - 2000.0).abs() <= 200.0,
            "a second sent {} of 2000: {:?}",
            s.sent,
            r.timeline
        );
    }
    assert_eq!(r.generator.seconds_behind, 0);
}

#[tokio::test]
async fn ack_latency_matches_a_known_delay() {
    let (addr, _) = test_server(Behaviour {
        delay: Duration::from_millis(25),
        ..Behaviour::default()
    })
    .await;
    let r = run(&[
        "--target",
        &format!("ws://{addr}"),
        "--rate",
        "200",
        "--duration",
        "1s",
    ])
    .await;
    let p = &r.ack_latency_ms;
    assert_eq!(p.count, 200);
    // Never less than the delay; the upper bounds only catch latency counted from the wrong start
    // (which reads as seconds), with room for a busy machine.
    assert!(ms(p.p50) >= 25.0 && ms(p.p50) < 75.0, "p50 {:?}", p.p50);
    assert!(ms(p.max) < 500.0, "max {:?}", p.max);
}

#[tokio::test]
async fn a_stall_shows_up_as_latency_over_websocket() {
    let addr = stalling_server().await;
    let r = run(&[
        "--target",
        &format!("ws://{addr}"),
        "--rate",
        "1000",
        "--duration",
        "2s",
    ])
    .await;
    let p = &r.ack_latency_ms;
    assert_eq!(p.count, 2000, "every metric measured");
    assert!(ms(p.p50) < 100.0, "most metrics were not stalled: {p:?}");
    assert!(
        ms(p.p90) > 100.0 && ms(p.max) > 400.0,
        "the stall is in the tail: {p:?}"
    );
}

/// HTTP/1.1 allows one request in flight per connection: a stalled server stops the sender. An
/// open-loop generator still counts every metric from its due time, so the stall shows in many
/// samples; a closed-loop one would record a single slow request and hide it ("coordinated omission").
#[tokio::test]
async fn a_stall_is_not_hidden_by_coordinated_omission() {
    let addr = stalling_server().await;
    let r = run(&[
        "--target",
        &format!("http://{addr}"),
        "--protocol",
        "http1",
        "--rate",
        "500",
        "--duration",
        "2s",
    ])
    .await;
    assert_eq!(r.acked, 1000);
    let p = &r.ack_latency_ms;
    assert_eq!(
        p.count, 1000,
        "every metric measured, including those due while the sender was blocked"
    );
    // About a quarter of the metrics were due during the 0.5 s stall: each waited the rest of it.
    assert!(ms(p.p90) > 100.0, "{p:?}");
    assert!(ms(p.max) > 400.0, "{p:?}");
}

/// One agent at 400 metrics/s for 1 s against the test server at `addr`, its dashboard there too.
async fn one_agent_with_a_dashboard(addr: &str) -> Report {
    let url = format!("ws://{addr}");
    run(&[
        "--target",
        &url,
        "--dashboard",
        &url,
        "--agents",
        "1",
        "--rate",
        "400",
        "--duration",
        "1s",
    ])
    .await
}

#[tokio::test]
async fn loss_and_duplicates_are_counted_by_seq() {
    let (addr, _) = test_server(Behaviour {
        drop_some: true,
        duplicate_some: true,
        ..Behaviour::default()
    })
    .await;
    let r = one_agent_with_a_dashboard(&addr).await;
    assert_eq!(r.sent, 400);
    assert_eq!(r.acked, 400);
    // seq % 4 == 3 never arrives: 100 of 400.
    assert_eq!(r.lost, Some(100));
    assert_eq!(r.coalesced, Some(0), "nothing said they were coalesced");
    // seq % 5 == 0 arrives twice, unless dropped (seq % 20 == 15): 80 − 20.
    assert_eq!(r.duplicates, Some(60));
    assert_eq!(
        r.e2e_latency_ms.count, 300,
        "one latency per distinct metric delivered"
    );
}

#[tokio::test]
async fn coalesced_metrics_are_counted_apart_from_lost_ones() {
    let (addr, _) = test_server(Behaviour {
        coalesce_some: true,
        ..Behaviour::default()
    })
    .await;
    let r = one_agent_with_a_dashboard(&addr).await;
    assert_eq!((r.sent, r.acked), (400, 400));
    // seq % 4 == 3 comes only inside the next update, except the last one (399), which nothing
    // follows: 99 coalesced, 1 lost.
    assert_eq!(r.coalesced, Some(99));
    assert_eq!(r.lost, Some(1));
    assert_eq!(r.duplicates, Some(0));
    assert_eq!(
        r.e2e_latency_ms.count, 300,
        "coalesced metrics have no latency of their own"
    );
}

#[tokio::test]
async fn refusals_are_retried_after_retry_after_and_counted() {
    let (addr, state) = test_server(Behaviour {
        refuse_first: 3,
        ..Behaviour::default()
    })
    .await;
    let r = run(&[
        "--target",
        &format!("http://{addr}"),
        "--rate",
        "50",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(r.sent, 50);
    assert_eq!(r.acked, 50, "every metric got through in the end");
    assert_eq!(r.retries, 3);
    assert_eq!(r.errors_by_kind.get("http 503"), Some(&3));
    assert_eq!(state.requests.load(Ordering::SeqCst), 53);
}

#[tokio::test]
async fn http2_and_batches_reach_an_h2c_server() {
    let (addr, state) = test_server(Behaviour::default()).await;
    let r = run(&[
        "--target",
        &format!("http://{addr}"),
        "--protocol",
        "http2",
        "--batch",
        "10",
        "--rate",
        "1000",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(
        (r.sent, r.acked, r.errors),
        (1000, 1000, 0),
        "{:?}",
        r.errors_by_kind
    );
    assert_eq!(
        state.requests.load(Ordering::SeqCst),
        100,
        "10 metrics per request"
    );
    assert_eq!(r.run.protocol, "http2");
}

#[tokio::test]
async fn the_original_wire_leaves_out_every_extension() {
    let (addr, state) = test_server(Behaviour::default()).await;
    let url = format!("ws://{addr}");
    let r = run(&[
        "--target",
        &url,
        "--dashboard",
        &url,
        "--wire",
        "original",
        "--rate",
        "100",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(r.acked, 100);
    assert_eq!(
        (r.lost, r.duplicates),
        (None, None),
        "without seq, loss cannot be counted"
    );
    let frames = state.frames.lock().unwrap();
    let metrics: Vec<&String> = frames
        .iter()
        .filter(|f| f.contains(r#""type":"metric""#))
        .collect();
    assert_eq!(metrics.len(), 100);
    assert!(metrics.iter().all(|f| !f.contains("seq")), "{}", metrics[0]);
}

#[tokio::test]
async fn against_system_2_nothing_is_lost_and_end_to_end_is_measured() {
    let config = system2_ws::config::Config::for_tests();
    let server = system2_ws::Server::bind(config).await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    let r = run(&[
        "--target",
        &url,
        "--dashboard",
        &url,
        "--agents",
        "20",
        "--connections",
        "4",
        "--rate",
        "2000",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!((r.sent, r.acked, r.delivered), (2000, 2000, 2000));
    assert_eq!((r.lost, r.duplicates), (Some(0), Some(0)));
    assert_eq!(r.e2e_latency_ms.count, 2000);
    // Measured, not bounded: how fast is for benchmarks (a busy CI machine is slow), what was
    // measured is for tests.
    assert!(ms(r.e2e_latency_ms.p50) > 0.0, "{:?}", r.e2e_latency_ms);
    let batched = run(&[
        "--target",
        &url,
        "--dashboard",
        &url,
        "--batch",
        "20",
        "--rate",
        "2000",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!((batched.sent, batched.acked, batched.lost), (2000, 2000, Some(0)));
}

#[tokio::test]
async fn stopping_early_gives_a_partial_report() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(agents::sink::serve(listener));
    let cli = Cli::try_parse_from([
        "agents",
        "--target",
        &url,
        "--rate",
        "1000",
        "--duration",
        "60s",
        "--quiet",
    ])
    .unwrap();
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        stopper.cancel();
    });
    let started = Instant::now();
    let r = agents::run(cli.run, stop, false).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "stopped promptly");
    assert!(r.partial);
    assert!(r.sent > 0 && r.sent < 5_000, "{}", r.sent);
    assert_eq!(r.acked, r.sent);
}
