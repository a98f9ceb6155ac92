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
