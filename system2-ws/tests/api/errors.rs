//! Bad messages get the protocol's exact error, with every problem's path, and the connection stays.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn each_bad_message_gets_its_error_and_the_connection_stays_open() {
    let server = TestServer::start(&[]).await;
    let mut client = Client::producer(&server).await;
    let cases = [
        ("{not json", "Invalid JSON payload", vec![""]),
        (r#"{"type":"subscribe"}"#, "Unknown message type", vec!["/type"]),
        (r#"[1,2,3]"#, "Unknown message type", vec!["/type"]),
        (
            r#"{"type":"metric","serverId":"","timestamp":"x","metrics":{"cpu":120}}"#,
            "Invalid metric payload",
            vec![
                "/serverId",
                "/timestamp",
                "/metrics/cpu",
                "/metrics/memory",
                "/metrics/disk",
            ],
        ),
        (
            r#"{"type":"metrics","items":[]}"#,
            "Invalid metric payload",
            vec!["/items"],
        ),
        (
            r#"{"type":"register","role":"root"}"#,
            "Invalid register payload",
            vec!["/role"],
        ),
        (
            r#"{"type":"snapshot.request","serverId":7}"#,
            "Invalid message payload",
            vec!["/serverId"],
        ),
    ];
    for (text, message, paths) in cases {
        client.send_text(text).await;
        let error = client.recv().await;
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["message"], message, "{text}");
        let got: Vec<&str> = error["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert_eq!(got, paths, "{text}: {error}");
    }
    // Still open, still working, nothing was aggregated from the bad messages.
    client.send(metric("ok", now(), 1.0, 1)).await;
    assert_eq!(client.recv().await["type"], "metric.ack");
    let (_, m) = server.get_json("/api/monitoring").await;
    assert_eq!(m["ingest"]["invalidMessages"], 7);
    assert_eq!(m["ingest"]["metricsTotal"], 1);
}

#[tokio::test]
async fn a_bad_item_refuses_the_whole_batch_naming_its_index() {
    let server = TestServer::start(&[]).await;
    let mut client = Client::producer(&server).await;
    let mut bad = item("s", now(), 1.0, 1);
    bad["metrics"]["disk"] = json!(-1);
    client
        .send(json!({"type": "metrics", "items": [item("s", now(), 1.0, 0), bad]}))
        .await;
    let error = client.recv().await;
    assert_eq!(error["message"], "Invalid metric payload");
    assert_eq!(error["details"][0]["path"], "/items/1/metrics/disk");
    assert_eq!(error["details"][0]["index"], 1);
    let (_, m) = server.get_json("/api/monitoring").await;
    assert_eq!(
        m["ingest"]["metricsTotal"], 0,
        "all or nothing: the good item was not taken either"
    );
}

#[tokio::test]
async fn a_timestamp_from_the_future_is_refused_with_the_skew() {
    let server = TestServer::start(&[]).await;
    let mut client = Client::producer(&server).await;
    client.send(metric("s", now() + 3_600_000.0, 1.0, 1)).await;
    let error = client.recv().await;
    assert_eq!(error["message"], "Invalid metric payload");
    assert_eq!(error["details"][0]["path"], "/timestamp");
    assert!(
        error["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ahead of the server clock"),
        "{error}"
    );
}

#[tokio::test]
async fn hostile_json_is_refused_without_harm() {
    let server = TestServer::start(&[]).await;
    let mut client = Client::producer(&server).await;
    client.send_text(&"[".repeat(100_000)).await;
    let error = client.recv().await;
    assert_eq!(error["message"], "Invalid JSON payload");
    assert!(
        error["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nesting"),
        "{error}"
    );
    client
        .send_text(r#"{"type":"metric","serverId":"s","timestamp":1e999,"metrics":{}}"#)
        .await;
    assert_eq!(client.recv().await["message"], "Invalid JSON payload");
    client.send(metric("s", now(), 1.0, 1)).await;
    assert_eq!(client.recv().await["type"], "metric.ack", "still serving");
}
