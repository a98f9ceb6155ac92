//! Nothing is lost without a word: every metric sent back to back is acked exactly once, counted by
//! the server, and reflected in an update that a dashboard receives (or counted there as coalesced).
//!
//! These are the regression tests for metrics that System 2 once dropped silently under load: the
//! client must be able to account for every `seq` it sent.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Sends `count` metrics of `server` back to back (fed, flushed in bursts) and checks that every `seq`
/// is acked exactly once. Returns when the last ack arrived.
async fn send_and_account(server: &TestServer, server_id: String, count: u64) {
    let client = Client::producer(server).await;
    let (mut sink, mut stream) = client.ws.split();
    let now = now();
    let writer = tokio::spawn(async move {
        for seq in 0..count {
            let frame = metric(&server_id, now, (seq % 100) as f64, seq).to_string();
            sink.feed(Message::Text(frame.into())).await.expect("send");
            if seq % 512 == 511 {
                sink.flush().await.expect("flush");
            }
        }
        sink.flush().await.expect("flush");
        sink
    });
    let mut acked = vec![0u8; count as usize];
    let mut distinct = 0;
    while distinct < count {
        let next = tokio::time::timeout(PATIENCE, stream.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(other) => panic!("connection ended after {distinct} of {count} acks: {other:?}"),
            Err(_) => {
                let missing: Vec<u64> = (0..count).filter(|&s| acked[s as usize] == 0).take(10).collect();
                panic!(
                    "no ack for {} of {count} metrics (first: {missing:?})",
                    count - distinct
                )
            }
        };
        let Message::Text(text) = message else { continue };
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(frame["type"], "metric.ack", "{frame}");
        let seq = frame["seq"].as_u64().expect("acks carry the seq");
        acked[seq as usize] += 1;
        assert_eq!(acked[seq as usize], 1, "seq {seq} acked twice");
        distinct += 1;
    }
    let _sink = writer.await.expect("the writer finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_metrics_back_to_back_are_each_acked_once() {
    let server = TestServer::start(&[]).await;
    send_and_account(&server, "burst-1".into(), 200_000).await;
    let (_, doc) = server.get_json("/api/monitoring").await;
    assert_eq!(doc["ingest"]["metricsTotal"], 200_000, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_connections_at_once_lose_nothing() {
    let server = TestServer::start(&[]).await;
    let senders: Vec<_> = (0..10)
        .map(|i| send_and_account(&server, format!("burst-{i}"), 20_000))
        .collect();
    futures_util::future::join_all(senders).await;
    let (_, doc) = server.get_json("/api/monitoring").await;
    assert_eq!(doc["ingest"]["metricsTotal"], 200_000, "{doc}");
}

/// A dashboard that reads nothing while 100 000 metrics arrive back to back (so its queue fills and
/// its updates must coalesce), then reads everything: every `seq` is in an update of its own or inside
/// the range of a coalesced one, never both, and the server's count of coalesced updates is the sum of
/// what the dashboard was told.
async fn a_dashboard_accounts_for_every_metric(register: Value) {
    const COUNT: u64 = 100_000;
    let server = TestServer::start(&["--dashboard-queue", "64"]).await;
    let mut dashboard = Client::dashboard(&server, register).await;
    let sending = send_and_account(&server, "burst-1".into(), COUNT);
    let reading = async {
        // 0: not yet; 1: in its own update; 2: covered by a coalesced one.
        let mut state = vec![0u8; COUNT as usize];
        let (mut accounted, mut told_coalesced) = (0, 0);
        while accounted < COUNT {
            let frame = dashboard.recv().await;
            let payloads = match frame["type"].as_str() {
                Some("metric.update") => vec![frame["payload"].clone()],
                Some("metric.updates") => frame["items"].as_array().expect("items").clone(),
                _ => panic!("unexpected {frame}"),
            };
            for p in payloads {
                let seq = p["seq"].as_u64().expect("seq") as usize;
                assert_ne!(state[seq], 1, "seq {seq} delivered twice");
                if state[seq] == 0 {
                    accounted += 1;
                }
                state[seq] = 1;
                if let Some(k) = p["coalesced"].as_u64() {
                    told_coalesced += k;
                    let (first, last) = (p["firstSeq"].as_u64().unwrap(), p["lastSeq"].as_u64().unwrap());
                    assert_eq!(
                        last as usize, seq,
                        "one server in order: the range ends with the update's own seq"
                    );
                    assert_eq!(last - first, k, "one server in order: the range is dense");
                    for (s, covered) in state.iter_mut().enumerate().take(seq).skip(first as usize) {
                        assert_eq!(*covered, 0, "seq {s} covered twice or delivered before");
                        *covered = 2;
                        accounted += 1;
                    }
                }
            }
        }
        told_coalesced
    };
    sending.await;
    let told_coalesced = reading.await;
    assert!(
        told_coalesced > 0,
        "a dashboard that did not read was not coalesced"
    );
    let (_, doc) = server.get_json("/api/monitoring").await;
    assert_eq!(doc["updates"]["coalesced"], told_coalesced, "{doc}");
    assert_eq!(doc["updates"]["dropped"], 0, "{doc}");
    assert_eq!(doc["dashboards"][0]["coalesced"], told_coalesced, "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_of_single_updates_accounts_for_every_metric() {
    a_dashboard_accounts_for_every_metric(serde_json::json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_of_batched_updates_accounts_for_every_metric() {
    a_dashboard_accounts_for_every_metric(serde_json::json!({"batchUpdates": true})).await;
}

/// A dashboard so far behind that its queue and coalescing table are full: the updates dropped for it
/// are announced to it in `gap` frames, whose counts add up to the server's `updates.dropped`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_is_told_how_many_of_its_updates_were_dropped() {
    let server = TestServer::start(&["--dashboard-queue", "2"]).await;
    let mut dashboard = Client::stuck_dashboard(&server).await;
    let mut producer = Client::producer(&server).await;
    // 20 servers, 50 rounds: far more servers waiting than the table of 2 holds.
    for round in 0..50 {
        let items: Vec<_> = (0..20)
            .map(|i| item(&format!("s{i}"), now(), 1.0, round))
            .collect();
        producer
            .send(serde_json::json!({"type": "metrics", "items": items}))
            .await;
        assert_eq!(producer.recv().await["type"], "metrics.ack");
    }
    let (_, doc) = server.get_json("/api/monitoring").await;
    let dropped = doc["updates"]["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "the dashboard was not far enough behind: {doc}");
    let mut told = 0;
    while told < dropped {
        let frame = dashboard.recv().await;
        if frame["type"] == "gap" {
            assert_eq!(frame["reason"], "dropped", "{frame}");
            assert_eq!(frame["eventType"], "metric.update", "{frame}");
            assert!(frame["fromMs"].as_u64() <= frame["toMs"].as_u64(), "{frame}");
            told += frame["events"].as_u64().expect("an exact count");
        }
    }
    assert_eq!(told, dropped, "each drop told once");
}
