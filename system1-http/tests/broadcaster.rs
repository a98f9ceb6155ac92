//! System 1's broadcaster against a real redis-server, and the whole pipeline end to end.

use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use lab_testkit::RedisServer;
use redis::Commands;
use serde_json::{Value, json};
use system1_http::api::IngestApi;
use system1_http::broadcaster::Broadcaster;
use system1_http::config::{Cli, Role};
use system1_http::worker::Worker;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Starts a broadcaster (plus `extra` flags) on a free port; returns its WebSocket URL once it is
/// subscribed (and, with stream fan-out, reading).
async fn start_broadcaster(redis: &RedisServer, extra: &[&str]) -> String {
    let url = redis.url();
    let mut args = vec![
        "system1",
        "--redis-url",
        &url,
        "broadcaster",
        "--ws-host",
        "127.0.0.1",
        "--ws-port",
        "0",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).unwrap();
    let Role::Broadcaster(args) = &cli.role else {
        unreachable!()
    };
    let b = Broadcaster::bind(args, &cli.redis).await.unwrap();
    let address = b.local_addr();
    tokio::spawn(b.run(std::future::pending()));
    // Wait until it is subscribed (its health says so).
    let health = format!("http://{address}/healthz");
    for _ in 0..100 {
        if reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    format!("ws://{address}/")
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame in time");
        if let Some(Ok(Message::Text(text))) = next {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn event(kind: &str, server: &str, seq: u64) -> String {
    json!({"type": kind, "entryId": format!("{seq}-0"), "payload": {"serverId": server, "timestamp": 1.0, "metrics": {"cpu": 1, "memory": 2, "disk": 3}, "seq": seq}}).to_string()
}

#[tokio::test]
async fn events_are_relayed_verbatim_to_dashboards_that_want_them() {
    let redis = RedisServer::start().unwrap();
    // Events published by hand, as the seed's pub/sub fan-out relays them.
    let url = start_broadcaster(&redis, &["--fanout", "pubsub"]).await;
    let mut all = connect(&url).await;
    let mut only_b = connect(&url).await;
    send(&mut only_b, json!({"type": "subscribe", "serverId": "b"})).await;
    assert_eq!(
        recv(&mut only_b).await,
        json!({"type": "subscription.ack", "serverId": "b"})
    );
    send(&mut all, json!({"type": "subscribe", "serverId": null})).await;
    assert_eq!(
        recv(&mut all).await,
        json!({"type": "subscription.ack", "serverId": null})
    );

    let mut con = redis.connection();
    let sent = [
        event("metric.ingested", "a", 1),
        event("metric.processed", "b", 2),
        event("metric.processed", "a", 3),
    ];
    for text in &sent {
        let _: () = con.publish("metrics:pubsub", text).unwrap();
    }
    for text in &sent {
        assert_eq!(
            recv(&mut all).await,
            serde_json::from_str::<Value>(text).unwrap(),
            "relayed as published"
        );
    }
    assert_eq!(recv(&mut only_b).await["payload"]["seq"], 2);
    // Nothing else for b: a's events were filtered out.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), only_b.next())
            .await
            .is_err()
    );

    // The monitoring JSON and the Prometheus page read the same counters, under their stable names.
    let http = url.replace("ws://", "http://");
    let monitoring: Value = reqwest::get(format!("{http}api/monitoring"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(monitoring["eventsRelayed"], 3);
    assert_eq!(monitoring["subscriptions"], 1);
    let text = reqwest::get(format!("{http}metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "system1_broadcaster_events_relayed_total 3",
        "system1_broadcaster_updates_coalesced_total 0",
        "system1_broadcaster_updates_dropped_total 0",
        "system1_broadcaster_dashboards 2",
        "system1_broadcaster_subscriptions_total 1",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

/// `batchUpdates`: a dashboard gets only the aggregated updates (no `metric.ingested`), their payloads
/// batched into `metric.updates` frames as System 2 sends them, every seq once; another dashboard on
/// the same broadcaster still gets every event in a frame of its own.
#[tokio::test]
async fn a_batching_dashboard_gets_the_processed_payloads_in_metric_updates_frames() {
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &["--fanout", "pubsub"]).await;
    let mut batched = connect(&url).await;
    let mut plain = connect(&url).await;
    send(
        &mut batched,
        json!({"type": "subscribe", "serverId": null, "batchUpdates": true}),
    )
    .await;
    assert_eq!(recv(&mut batched).await["type"], "subscription.ack");
    send(&mut plain, json!({"type": "subscribe", "serverId": null})).await;
    assert_eq!(recv(&mut plain).await["type"], "subscription.ack");

    let mut con = redis.connection();
    let n = 500u64;
    for seq in 0..n {
        let _: () = con
            .publish("metrics:pubsub", event("metric.ingested", "a", seq))
            .unwrap();
        let _: () = con
            .publish("metrics:pubsub", event("metric.processed", "a", seq))
            .unwrap();
    }
    let mut seqs = Vec::new();
    let mut frames = 0;
    while (seqs.len() as u64) < n {
        let frame = recv(&mut batched).await;
        assert_eq!(frame["type"], "metric.updates", "{frame}");
        frames += 1;
        for item in frame["items"].as_array().unwrap() {
            assert_eq!(item["serverId"], "a", "{item}");
            assert!(
                item.get("type").is_none() && item.get("entryId").is_none(),
                "a payload: {item}"
            );
            seqs.push(item["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "every processed seq once, in order"
    );
    assert!(frames <= n as usize);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), batched.next())
            .await
            .is_err(),
        "and no ingested event after them"
    );
    for _ in 0..2 * n {
        let frame = recv(&mut plain).await;
        assert!(
            frame["type"] == "metric.ingested" || frame["type"] == "metric.processed",
            "{frame}"
        );
    }
    // A wrong flag is named, and the subscription stays as it was.
    send(&mut batched, json!({"type": "subscribe", "batchUpdates": 1})).await;
    let error = recv(&mut batched).await;
    assert_eq!(error["message"], "Malformed client message", "{error}");
    assert_eq!(error["details"][0]["path"], "/batchUpdates", "{error}");
}

#[tokio::test]
async fn snapshots_come_from_the_workers_hashes() {
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &[]).await;
    let windows = json!({"1000": {"samples": 1, "averages": {"cpu": 5.0, "memory": 1.0, "disk": 2.0, "networkIn": 0.0, "networkOut": 0.0}}});
    for id in ["b", "a"] {
        let _: () = redis
            .connection()
            .hset_multiple(
                format!("metrics:latest:{id}"),
                &[
                    ("serverId", id),
                    ("timestamp", "123.5"),
                    ("seq", "9"),
                    ("windows", &windows.to_string()),
                ],
            )
            .unwrap();
    }
    let mut ws = connect(&url).await;
    send(&mut ws, json!({"type": "snapshot.request", "serverId": "a"})).await;
    let one = recv(&mut ws).await;
    assert_eq!(one["type"], "snapshot");
    assert_eq!(one["payload"]["serverId"], "a");
    assert_eq!(one["payload"]["timestamp"], 123.5);
    assert_eq!(one["payload"]["windows"]["1000"]["averages"]["cpu"], 5.0);
    send(&mut ws, json!({"type": "snapshot.request", "serverId": "nobody"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "snapshot", "payload": null}));
    send(&mut ws, json!({"type": "snapshot.request"})).await;
    let all = recv(&mut ws).await;
    let ids: Vec<&str> = all["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["serverId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
}

#[tokio::test]
async fn a_malformed_message_gets_the_originals_error_and_the_connection_stays() {
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &[]).await;
    let mut ws = connect(&url).await;
    for bad in [
        json!({"type": "publish"}),
        json!({"type": "subscribe", "serverId": 5}),
        json!("hello"),
    ] {
        send(&mut ws, bad.clone()).await;
        let reply = recv(&mut ws).await;
        assert_eq!(reply["type"], "error", "{bad}");
        assert_eq!(reply["message"], "Malformed client message", "{bad}");
    }
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["message"], "Malformed client message");
    send(&mut ws, json!({"type": "subscribe", "serverId": null})).await;
    assert_eq!(recv(&mut ws).await["type"], "subscription.ack");
}

#[tokio::test]
async fn after_a_redis_restart_it_resubscribes_by_itself_and_reports_the_gap() {
    let mut redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &["--fanout", "pubsub"]).await;
    let mut ws = connect(&url).await;
    let before = lab_core::now_ms() as u64;
    let mut gap = None;
    redis.stop();
    redis.restart().unwrap();
    // Publish until the broadcaster is back on the channel and relays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut con = redis.connection();
    loop {
        let _: () = con
            .publish("metrics:pubsub", event("metric.processed", "a", 1))
            .unwrap();
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(Duration::from_millis(200), ws.next()).await
        {
            let frame = serde_json::from_str::<Value>(&text).unwrap();
            if frame["type"] == "gap" {
                gap = Some(frame);
                continue;
            }
            assert_eq!(frame["type"], "metric.processed");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never resubscribed");
    }
    // Told before the first event after the restart: pub/sub cannot say how many were lost.
    let gap = gap.expect("a gap frame before the events resumed");
    assert_eq!(gap["reason"], "unsubscribed", "{gap}");
    assert_eq!(gap["events"], Value::Null, "{gap}");
    assert_eq!(gap["eventType"], "*", "{gap}");
    let (from, to) = (gap["fromMs"].as_u64().unwrap(), gap["toMs"].as_u64().unwrap());
    // From the last message heard (none since the subscription, before the restart) to the new
    // subscription, after it.
    assert!(
        from <= before && before <= to && to <= lab_core::now_ms() as u64,
        "{gap}"
    );
}

/// The whole of System 1: POST → stream → worker → pub/sub → broadcaster → dashboard.
#[tokio::test]
async fn a_posted_metric_reaches_a_dashboard_through_the_whole_pipeline() {
    let redis = RedisServer::start().unwrap();
    let ws_url = start_broadcaster(&redis, &[]).await;
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
        "--block-ms",
        "100",
    ])
    .unwrap();
    let Role::All { api, worker, .. } = &cli.role else {
        unreachable!()
    };
    let api = IngestApi::bind(api, &cli.redis).await.unwrap();
    let api_url = format!("http://{}", api.local_addrs()[0]);
    tokio::spawn(api.run(std::future::pending()));
    let worker = Worker::connect(worker, &cli.redis, "e2e".into()).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));

    let mut dashboard = connect(&ws_url).await;
    let timestamp = lab_core::now_ms();
    let metric = json!({"serverId": "server-1", "timestamp": timestamp, "metrics": {"cpu": 42.0, "memory": 1, "disk": 2}, "seq": 5});
    let response = reqwest::Client::new()
        .post(format!("{api_url}/metrics"))
        .json(&metric)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let event = recv(&mut dashboard).await;
        assert_eq!(
            event["payload"]["timestamp"], timestamp,
            "the metric's own timestamp"
        );
        if event["type"] == "metric.processed" {
            assert_eq!(event["payload"]["windows"]["1000"]["averages"]["cpu"], 42.0);
        }
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["metric.ingested", "metric.processed"]);
    send(
        &mut dashboard,
        json!({"type": "snapshot.request", "serverId": "server-1"}),
    )
    .await;
    let snapshot = loop {
        let reply = recv(&mut dashboard).await;
        if reply["type"] == "snapshot" {
            break reply;
        }
    };
    assert_eq!(snapshot["payload"]["seq"], 5);
    stop.cancel();
}

/// The close frame the server sends next (text and pings before it are skipped).
async fn close_frame(ws: &mut Ws) -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close frame in time");
        match next {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended without a close frame (1006): {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &[]).await;
    let mut ws = connect(&url).await;
    // A raw text frame (tungstenite masks it, as a client must) whose payload is not UTF-8: the text
    // API cannot build one.
    let bytes = b"{\"type\":\"subscribe\",\"serverId\":\"\xff\xfe\"}".to_vec();
    ws.send(Message::Frame(Frame::message(
        bytes,
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    let frame = close_frame(&mut ws).await;
    assert_eq!(u16::from(frame.code), 1007);
    assert_eq!(
        frame.reason.as_str(),
        lab_core::wire::close::CloseReason::InvalidUtf8.text()
    );
}

#[tokio::test]
async fn a_frame_that_breaks_the_protocol_closes_with_1002() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &[]).await;
    let mut ws = connect(&url).await;
    // Opcode 3 is reserved: RFC 6455 says the receiver must fail the connection.
    ws.send(Message::Frame(Frame::message(
        b"{}".to_vec(),
        OpCode::Data(Data::Reserved(3)),
        true,
    )))
    .await
    .unwrap();
    let frame = close_frame(&mut ws).await;
    assert_eq!(u16::from(frame.code), 1002);
    assert_eq!(
        frame.reason.as_str(),
        lab_core::wire::close::CloseReason::ProtocolViolation.text()
    );
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &[]).await;
    let mut ws = connect(&url).await;
    let huge = "x".repeat(lab_core::limits::MAX_MESSAGE_BYTES + 1);
    let _ = ws.send(Message::Text(huge.into())).await;
    let frame = close_frame(&mut ws).await;
    assert_eq!(u16::from(frame.code), 1009);
}

#[tokio::test]
async fn with_stream_fanout_a_jump_in_the_numbers_is_reported_as_an_exact_gap() {
    let redis = RedisServer::start().unwrap();
    let url = start_broadcaster(&redis, &[]).await;
    let mut ws = connect(&url).await;
    let mut con = redis.connection();
    // As the workers write them: numbered events. 2, 3 and 4 are missing, as if the cap had trimmed
    // them before the broadcaster read them; then the count starts again, as after Redis lost its data.
    let mut ids = Vec::new();
    for n in [1u64, 5, 6, 1] {
        let id: String = con
            .xadd(
                "metrics:processed",
                "*",
                &[("n", n.to_string()), ("event", event("metric.processed", "a", n))],
            )
            .unwrap();
        ids.push(id);
    }
    let ms = |id: &str| id.split('-').next().unwrap().parse::<u64>().unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(recv(&mut ws).await);
    }
    let kinds: Vec<&str> = got.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "metric.processed",
            "gap",
            "metric.processed",
            "metric.processed",
            "gap",
            "metric.processed"
        ]
    );
    assert_eq!(
        got[1],
        json!({"type": "gap", "eventType": "metric.processed", "events": 3, "fromMs": ms(&ids[0]), "toMs": ms(&ids[1]), "reason": "trimmed"})
    );
    assert_eq!(got[4]["reason"], "reset");
    assert_eq!(got[4]["events"], Value::Null);
    let monitoring: Value = reqwest::get(url.replace("ws://", "http://") + "api/monitoring")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(monitoring["gaps"], 2, "{monitoring}");
    assert_eq!(monitoring["gapEvents"], 3, "{monitoring}");
    assert_eq!(monitoring["lastRelayedId"], ids[3], "{monitoring}");
}
