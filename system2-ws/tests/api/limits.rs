//! Protocol hygiene: every limit refuses with a close code and a reason, and memory stays bounded.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn an_oversize_message_closes_with_1009() {
    let server = TestServer::start(&["--max-message-bytes", "4096"]).await;
    let mut client = Client::producer(&server).await;
    client
        .send_text(&format!(r#"{{"type":"metric","pad":"{}"}}"#, "x".repeat(5000)))
        .await;
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1009, "message too big"));
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::start(&[]).await;
    let mut client = Client::producer(&server).await;
    // A text frame whose payload is not UTF-8 (a client library would refuse to build one).
    let bad = Frame::message(
        b"{\"type\":\"metric\",\"serverId\":\"\xff\xfe\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    client.ws.send(Message::Frame(bad)).await.expect("send");
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1007, "invalid UTF-8 in a text message"));
    let (_, doc) = server.get_json("/api/monitoring").await;
    assert_eq!(doc["ingest"]["metricsTotal"], 0, "{doc}");
}

#[tokio::test]
async fn a_frame_that_breaks_the_protocol_closes_with_1002() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::start(&[]).await;
    let mut client = Client::producer(&server).await;
    // Opcode 3 is reserved: RFC 6455 says the receiver must fail the connection.
    let bad = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Reserved(3)), true);
    client.ws.send(Message::Frame(bad)).await.expect("send");
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1002, "WebSocket protocol violation"));
}

#[tokio::test]
async fn a_flood_past_the_rate_limit_closes_with_1008() {
    let server = TestServer::start(&["--max-messages-per-sec", "20"]).await;
    let mut client = Client::producer(&server).await;
    for i in 0..100 {
        // The server may close before we are done sending; that is the point.
        if client
            .ws
            .send(Message::Text(metric("s", now(), 1.0, i).to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = client.expect_close().await;
    assert_eq!((code, reason.as_str()), (1008, "message rate limit exceeded"));
}

#[tokio::test]
async fn a_connection_past_the_limit_closes_with_1013() {
    let server = TestServer::start(&["--max-connections", "2"]).await;
    let _a = Client::connect(&server).await;
    let _b = Client::connect(&server).await;
    let mut c = Client::connect_raw(&server.ws_url()).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1013);
    assert!(reason.contains("connection limit"), "{reason}");
    drop(_a);
    // A place frees up once a client leaves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _d = Client::connect(&server).await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_next_heartbeat() {
    let server = TestServer::start(&["--ping-interval-ms", "100"]).await;
    let mut silent = Client::connect_raw(&server.ws_url()).await;
    // Neither reading (so no pong) nor writing, for several intervals.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, reason) = silent.expect_close().await;
    assert_eq!((code, reason.as_str()), (4000, "heartbeat timeout: no pong"));
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let server = TestServer::start(&["--ping-interval-ms", "50"]).await;
    let mut client = Client::producer(&server).await;
    // Reading for a while answers the server's pings (tungstenite does it while reading).
    let reading = tokio::time::timeout(Duration::from_millis(400), client.recv()).await;
    assert!(reading.is_err(), "nothing but pings should arrive");
    client.send(metric("s", now(), 1.0, 1)).await;
    assert_eq!(client.recv().await["type"], "metric.ack");
}

#[tokio::test]
async fn with_a_token_required_clients_must_show_it() {
    let server = TestServer::start(&["--auth-token", "s3cret"]).await;
    // Nothing shown: the first message must be a register with the token.
    let mut anonymous = Client::connect(&server).await;
    anonymous.send(metric("s", now(), 1.0, 1)).await;
    assert_eq!(
        anonymous.expect_close().await,
        (
            1008,
            "authentication required: send register with a token first".into()
        )
    );
    // A wrong token in the register frame.
    let mut wrong = Client::connect(&server).await;
    wrong
        .send(json!({"type": "register", "role": "producer", "token": "guess"}))
        .await;
    assert_eq!(wrong.expect_close().await, (1008, "invalid token".into()));
    // A wrong token in the URL.
    let mut wrong_url = Client::connect_raw(&format!("{}?token=guess", server.ws_url())).await;
    assert_eq!(wrong_url.expect_close().await.0, 1008);
    // The right token in the register frame, then in the URL.
    let mut right = Client::register(&server, json!({"role": "producer", "token": "s3cret"})).await;
    right.send(metric("s", now(), 1.0, 1)).await;
    assert_eq!(right.recv().await["type"], "metric.ack");
    let mut right_url = Client::connect_raw(&format!("{}?token=s3cret", server.ws_url())).await;
    assert_eq!(right_url.recv().await["type"], "connection.ack");
    right_url.send(metric("s", now(), 1.0, 2)).await;
    assert_eq!(right_url.recv().await["type"], "metric.ack");
    let prometheus = server.get_text("/metrics").await;
    assert!(
        prometheus.contains(r#"system2_connections_closed_total{reason="auth_required"} 1"#),
        "{prometheus}"
    );
    assert!(
        prometheus.contains(r#"system2_connections_closed_total{reason="bad_token"} 2"#),
        "{prometheus}"
    );
}

#[tokio::test]
async fn memory_stays_bounded_with_100_000_distinct_servers() {
    let server = TestServer::start(&["--max-servers", "10000"]).await;
    let mut producer = Client::producer(&server).await;
    let t = now();
    let mut accepted = 0;
    let mut refused = 0;
    for batch in 0..100 {
        let items: Vec<_> = (0..1000)
            .map(|i| item(&format!("host-{batch}-{i}"), t, 1.0, i))
            .collect();
        producer.send(json!({"type": "metrics", "items": items})).await;
        let first = producer.recv().await;
        if first["type"] == "error" {
            assert_eq!(first["message"], "Server limit reached");
            let details = first["details"].as_array().unwrap();
            assert!(
                details[0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("at most 10000 servers"),
                "{first}"
            );
            refused += details.len();
            let ack = producer.recv().await;
            accepted += ack["accepted"].as_u64().unwrap() as usize;
        } else {
            accepted += first["accepted"].as_u64().unwrap() as usize;
        }
    }
    assert_eq!((accepted, refused), (10_000, 90_000));
    assert_eq!(server.hub.servers_tracked(), 10_000);
    let (_, m) = server.get_json("/api/monitoring").await;
    assert_eq!(m["servers"]["tracked"], 10_000);
    assert_eq!(m["ingest"]["refusedServerLimit"], 90_000);
    assert_eq!(
        m["servers"]["mostRecent"].as_array().unwrap().len(),
        100,
        "the listing is bounded too"
    );
}

#[tokio::test]
async fn idle_servers_are_forgotten_making_room() {
    let server = TestServer::start(&["--max-servers", "2", "--server-idle-secs", "1"]).await;
    let mut producer = Client::producer(&server).await;
    for id in ["a", "b"] {
        producer.send(metric(id, now(), 1.0, 0)).await;
        assert_eq!(producer.recv().await["type"], "metric.ack");
    }
    producer.send(metric("c", now(), 1.0, 0)).await;
    assert_eq!(producer.recv().await["message"], "Server limit reached");
    // Wait for the sweeper (period: a quarter of the idle time, at least 250 ms).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.hub.servers_tracked() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle servers were never evicted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producer.send(metric("c", now(), 1.0, 1)).await;
    assert_eq!(producer.recv().await["type"], "metric.ack");
    let (_, m) = server.get_json("/api/monitoring").await;
    assert_eq!(m["servers"]["evicted"], 2);
}
