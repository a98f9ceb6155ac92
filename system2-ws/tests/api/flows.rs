//! Every flow of the protocol, end to end.

use lab_core::wire::system2::{ServerFrame, SnapshotPayload, UpdatePayload};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_metric_is_acked_and_pushed_to_dashboards_with_its_own_timestamp() {
    let server = TestServer::start(&[]).await;
    let mut dashboard = Client::dashboard(&server, json!({})).await;
    let mut producer = Client::producer(&server).await;
    let ts = now();
    producer.send(metric("server-1", ts, 12.5, 42)).await;
    assert_eq!(
        producer.recv().await,
        json!({"type": "metric.ack", "serverId": "server-1", "seq": 42})
    );

    let frame: ServerFrame = serde_json::from_value(dashboard.recv().await).unwrap();
    let ServerFrame::MetricUpdate { payload } = frame else {
        panic!("{frame:?}")
    };
    assert_eq!(payload.server_id, "server-1");
    assert_eq!(
        payload.timestamp, ts,
        "the metric's own timestamp, for end-to-end latency"
    );
    assert_eq!(payload.seq, Some(42));
    let keys: Vec<u64> = payload.windows.0.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, [1000, 5000, 10000]);
    let one_second = payload.windows.get(1000).unwrap();
    assert_eq!(one_second.samples, 1);
    let averages = one_second.averages.unwrap();
    assert_eq!(
        (averages.cpu, averages.network_in, averages.network_out),
        (12.5, 100.0, 200.0)
    );
}

#[tokio::test]
async fn the_originals_clients_work_unchanged() {
    // What the original lab's fake sender and dashboard send: no seq, register with a server id.
    let server = TestServer::start(&[]).await;
    let mut dashboard = Client::register(&server, json!({"role": "dashboard", "serverId": null})).await;
    let mut producer = Client::register(&server, json!({"role": "producer", "serverId": "server-1"})).await;
    let original = json!({"type": "metric", "serverId": "server-1", "timestamp": now().floor(),
        "metrics": {"cpu": 33.1, "memory": 60.2, "disk": 70.3, "network": {"in": 312, "out": 251}}});
    producer.send(original).await;
    assert_eq!(
        producer.recv().await,
        json!({"type": "metric.ack", "serverId": "server-1"})
    );
    let update = dashboard.recv().await;
    assert_eq!(update["type"], "metric.update");
    // The original dashboard plots the first window's averages.
    let first = update["payload"]["windows"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    assert_eq!(first, "1000");
    assert_eq!(update["payload"]["windows"]["1000"]["averages"]["cpu"], 33.1);
}

#[tokio::test]
async fn averages_aggregate_over_the_windows() {
    let server = TestServer::start(&[]).await;
    let mut producer = Client::producer(&server).await;
    let t = now() - 20_000.0;
    // Three samples: 6 s, 2 s and 0 s before the newest.
    for (i, (dt, cpu)) in [(0.0, 10.0), (4_000.0, 20.0), (6_000.0, 60.0)]
        .into_iter()
        .enumerate()
    {
        producer.send(metric("s", t + dt, cpu, i as u64)).await;
        producer.recv().await;
    }
    producer
        .send(json!({"type": "snapshot.request", "serverId": "s"}))
        .await;
    let frame: ServerFrame = serde_json::from_value(producer.recv().await).unwrap();
    let ServerFrame::Snapshot {
        payload: SnapshotPayload::One(Some(payload)),
    } = frame
    else {
        panic!("{frame:?}")
    };
    let samples = |w| payload.windows.get(w).unwrap().samples;
    let avg = |w| payload.windows.get(w).unwrap().averages.unwrap().cpu;
    assert_eq!((samples(1000), avg(1000)), (1, 60.0));
    assert_eq!((samples(5000), avg(5000)), (2, 40.0));
    assert_eq!((samples(10000), avg(10000)), (3, 30.0));
    let w10 = payload.windows.get(10000).unwrap();
    assert_eq!((w10.min.unwrap().cpu, w10.max.unwrap().cpu), (10.0, 60.0));
}

#[tokio::test]
async fn dashboards_get_only_the_server_they_asked_for() {
    let server = TestServer::start(&[]).await;
    let mut only_b = Client::dashboard(&server, json!({"serverId": "b"})).await;
    let mut all = Client::dashboard(&server, json!({})).await;
    let mut producer = Client::producer(&server).await;
    for (i, id) in ["a", "b", "a", "b"].into_iter().enumerate() {
        producer.send(metric(id, now(), 1.0, i as u64)).await;
        producer.recv().await;
    }
    let mut seen_by_b = Vec::new();
    for _ in 0..2 {
        let u = only_b.recv().await;
        seen_by_b.push((
            u["payload"]["serverId"].as_str().unwrap().to_owned(),
            u["payload"]["seq"].as_u64().unwrap(),
        ));
    }
    assert_eq!(seen_by_b, [("b".to_owned(), 1), ("b".to_owned(), 3)]);
    let mut seen_by_all = Vec::new();
    for _ in 0..4 {
        seen_by_all.push(all.recv().await["payload"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seen_by_all, [0, 1, 2, 3], "in order");
}

#[tokio::test]
async fn a_batch_is_acked_once_with_its_count_and_yields_an_update_per_metric() {
    let server = TestServer::start(&[]).await;
    let mut dashboard = Client::dashboard(&server, json!({})).await;
    let mut producer = Client::producer(&server).await;
    let items: Vec<_> = (0..50)
        .map(|i| item(&format!("s{}", i % 5), now(), 5.0, i))
        .collect();
    producer.send(json!({"type": "metrics", "items": items})).await;
    assert_eq!(
        producer.recv().await,
        json!({"type": "metrics.ack", "accepted": 50})
    );
    let mut seqs = Vec::new();
    for _ in 0..50 {
        seqs.push(dashboard.recv().await["payload"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
}

#[tokio::test]
async fn snapshots_answer_for_one_server_all_servers_or_an_unknown_one() {
    let server = TestServer::start(&[]).await;
    let mut producer = Client::producer(&server).await;
    for id in ["b", "a"] {
        producer.send(metric(id, now(), 1.0, 0)).await;
        producer.recv().await;
    }
    producer.send(json!({"type": "snapshot.request"})).await;
    let all = producer.recv().await;
    let ids: Vec<&str> = all["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["serverId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    producer
        .send(json!({"type": "snapshot.request", "serverId": "nobody"}))
        .await;
    assert_eq!(
        producer.recv().await,
        json!({"type": "snapshot", "payload": null})
    );
    // A dashboard may ask too.
    let mut dashboard = Client::dashboard(&server, json!({})).await;
    dashboard
        .send(json!({"type": "snapshot.request", "serverId": "a"}))
        .await;
    let one = dashboard.recv().await;
    let payload: UpdatePayload = serde_json::from_value(one["payload"].clone()).unwrap();
    assert_eq!(payload.server_id, "a");
}

#[tokio::test]
async fn binary_frames_carry_json_too() {
    use futures_util::SinkExt;
    let server = TestServer::start(&[]).await;
    let mut producer = Client::producer(&server).await;
    let bytes = metric("s", now(), 1.0, 7).to_string().into_bytes();
    producer
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(bytes.into()))
        .await
        .unwrap();
    assert_eq!(producer.recv().await["seq"], 7);
}

#[tokio::test]
async fn a_client_may_change_its_role() {
    let server = TestServer::start(&[]).await;
    let mut client = Client::dashboard(&server, json!({})).await;
    client.send(json!({"type": "register", "role": "producer"})).await;
    assert_eq!(client.recv().await["role"], "producer");
    client.send(metric("s", now(), 1.0, 1)).await;
    assert_eq!(
        client.recv().await["type"],
        "metric.ack",
        "no longer a dashboard: no update to itself"
    );
    let (_, health) = server.get_json("/api/health/websocket").await;
    assert_eq!(
        (health["producers"].as_i64(), health["dashboards"].as_i64()),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn late_and_stale_metrics_are_acked_and_counted() {
    let server = TestServer::start(&[]).await;
    let mut producer = Client::producer(&server).await;
    let t = now();
    for (seq, ts) in [(0, t), (1, t - 3_000.0), (2, t - 60_000.0)] {
        producer.send(metric("s", ts, 50.0, seq)).await;
        assert_eq!(producer.recv().await["seq"], seq);
    }
    let (_, m) = server.get_json("/api/monitoring").await;
    assert_eq!(m["ingest"]["late"], 1);
    assert_eq!(m["ingest"]["stale"], 1);
    let (_, s) = server.get_json("/api/monitoring/server/s").await;
    assert_eq!(
        s["windows"]["5000"]["samples"], 2,
        "the late one counts where it belongs"
    );
    assert_eq!(s["buffered"], 2, "the stale one is not kept");
}

#[tokio::test]
async fn a_snapshot_of_many_servers_arrives_whole() {
    let server = TestServer::start(&[]).await;
    let mut producer = Client::producer(&server).await;
    let items: Vec<_> = (0..1000)
        .map(|i| item(&format!("server-{i:04}"), now(), 1.0, 0))
        .collect();
    for chunk in items.chunks(500).chain(items.chunks(500)) {
        producer.send(json!({"type": "metrics", "items": chunk})).await;
        assert_eq!(producer.recv().await["type"], "metrics.ack");
    }
    let mut more = Client::producer(&server).await;
    let items: Vec<_> = (1000..3000)
        .map(|i| item(&format!("server-{i:04}"), now(), 1.0, 0))
        .collect();
    for chunk in items.chunks(1000) {
        more.send(json!({"type": "metrics", "items": chunk})).await;
        assert_eq!(more.recv().await["type"], "metrics.ack");
    }
    producer.send(json!({"type": "snapshot.request"})).await;
    let all = producer.recv().await;
    assert_eq!(all["type"], "snapshot");
    assert_eq!(all["payload"].as_array().map(Vec::len), Some(3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_too_large_to_send_is_refused_with_a_reason() {
    let server = TestServer::start(&["--max-servers", "30000"]).await;
    let mut producer = Client::producer(&server).await;
    // 24 000 servers with 120-byte ids: about 20 MB of snapshot, over the 16 MiB limit.
    let pad = "x".repeat(112);
    for start in (0..24_000).step_by(1000) {
        let items: Vec<_> = (start..start + 1000)
            .map(|i| item(&format!("{pad}{i:08}"), now(), 1.0, 0))
            .collect();
        producer.send(json!({"type": "metrics", "items": items})).await;
        assert_eq!(producer.recv().await["type"], "metrics.ack");
    }
    producer.send(json!({"type": "snapshot.request"})).await;
    let refused = producer.recv().await;
    assert_eq!(refused["message"], "Snapshot too large", "{refused}");
    assert!(
        refused["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ask for one server"),
        "{refused}"
    );
    // The connection stays, and one server's snapshot still comes.
    producer
        .send(json!({"type": "snapshot.request", "serverId": format!("{pad}{:08}", 7)}))
        .await;
    assert_eq!(producer.recv().await["type"], "snapshot");
}
