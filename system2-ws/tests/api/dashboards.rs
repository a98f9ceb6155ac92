//! Fan-out that survives slow dashboards, coalesced rates and batched updates.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::helpers::*;

/// The central guarantee: a dashboard that stops reading does not slow ingest or other dashboards.
/// Without the bounded, coalescing outbox this test would hang: the producer would wait on the stuck
/// dashboard's socket.
#[tokio::test]
async fn a_stuck_dashboard_never_slows_ingest_or_other_dashboards() {
    let server = TestServer::start(&["--slow-dashboard-ms", "1000"]).await;
    // Registers, then never reads again: its socket buffers fill, then its outbox.
    let mut stuck = Client::stuck_dashboard(&server).await;
    let mut healthy = Client::dashboard(&server, json!({})).await;
    let mut producer = Client::producer(&server).await;

    const N: u64 = 20_000;
    let reader = tokio::spawn(async move {
        let mut last = None;
        for _ in 0..N {
            last = Some(healthy.recv().await["payload"]["seq"].as_u64().unwrap());
        }
        (last, healthy)
    });
    // A pipelined producer: sends in bursts of 100, then reads their acks.
    let t = now();
    for burst in 0..(N / 100) {
        for i in 0..100 {
            producer
                .send(metric(&format!("s{}", i % 10), t, 1.0, burst * 100 + i))
                .await;
        }
        for _ in 0..100 {
            assert_eq!(producer.recv().await["type"], "metric.ack");
        }
    }
    let (last, _healthy) = reader.await.unwrap();
    assert_eq!(
        last,
        Some(N - 1),
        "the healthy dashboard saw every update, in order"
    );

    // The stuck one was coalesced, then dropped, then closed with a reason.
    let (_, m) = server.get_json("/api/monitoring").await;
    let coalesced = m["updates"]["coalesced"].as_u64().unwrap();
    let dropped = m["updates"]["dropped"].as_u64().unwrap();
    assert!(coalesced > 0, "the stuck dashboard's updates were coalesced: {m}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, health) = server.get_json("/api/health/websocket").await;
        if health["dashboards"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck dashboard was never closed: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its receive window is full, so the close frame (1008) usually cannot reach it: after trying for a
    // second the server drops the connection. The server's own count says why it closed it.
    let text = server.get_text("/metrics").await;
    let closed_slow = text.lines().any(|l| {
        (l.starts_with(r#"system2_connections_closed_total{reason="slow_dashboard"}"#)
            || l.starts_with(r#"system2_connections_closed_total{reason="write_stalled"}"#))
            && l.ends_with(" 1")
    });
    assert!(closed_slow, "{text}");
    while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, stuck.ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(frame)) = message {
            assert_eq!(u16::from(frame.code), 1008);
            break;
        }
    }
    eprintln!("stuck dashboard: {coalesced} coalesced, {dropped} dropped");
}

#[tokio::test]
async fn max_hz_coalesces_to_the_latest_update_per_server() {
    let server = TestServer::start(&[]).await;
    let mut dashboard = Client::dashboard(&server, json!({"maxHz": 4})).await;
    let mut producer = Client::producer(&server).await;
    let t = now();
    for seq in 0..200 {
        producer
            .send(metric(if seq % 2 == 0 { "a" } else { "b" }, t, 1.0, seq))
            .await;
        producer.recv().await;
    }
    // Within a couple of ticks (250 ms each) the dashboard has the latest of each server.
    let mut latest = std::collections::HashMap::new();
    let mut frames = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, dashboard.ws.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
            let u: serde_json::Value = serde_json::from_str(&text).unwrap();
            frames += 1;
            latest.insert(
                u["payload"]["serverId"].as_str().unwrap().to_owned(),
                u["payload"]["seq"].as_u64().unwrap(),
            );
        }
    }
    assert_eq!(latest.get("a"), Some(&198));
    assert_eq!(latest.get("b"), Some(&199));
    assert!(
        frames <= 2 * 4,
        "at most 4 updates per server per second, got {frames} in 0.8 s"
    );
}

#[tokio::test]
async fn batch_updates_arrive_several_to_a_frame() {
    let server = TestServer::start(&[]).await;
    let mut dashboard = Client::dashboard(&server, json!({"batchUpdates": true})).await;
    let mut producer = Client::producer(&server).await;
    let items: Vec<_> = (0..300).map(|i| item("s", now(), 1.0, i)).collect();
    producer.send(json!({"type": "metrics", "items": items})).await;
    producer.recv().await;
    let mut seqs = Vec::new();
    let mut frames = 0;
    while seqs.len() < 300 {
        let frame = dashboard.recv().await;
        assert_eq!(frame["type"], "metric.updates", "{frame}");
        frames += 1;
        for item in frame["items"].as_array().unwrap() {
            seqs.push(item["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
    assert!(frames < 300, "batched: {frames} frames for 300 updates");
}
