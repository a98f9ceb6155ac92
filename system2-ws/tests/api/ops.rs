//! The ops endpoints and graceful shutdown.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn health_monitoring_and_prometheus_describe_the_server() {
    let server = TestServer::start(&[]).await;
    let mut _dashboard = Client::dashboard(&server, json!({"serverId": "a"})).await;
    let mut producer = Client::producer(&server).await;
    let _idle = Client::connect(&server).await;
    producer.send(metric("a", now(), 10.0, 1)).await;
    producer.recv().await;

    let (status, health) = server.get_json("/api/health").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    assert_eq!(health["serversTracked"], 1);

    let (_, ws) = server.get_json("/api/health/websocket").await;
    assert_eq!(
        (
            ws["producers"].as_i64(),
            ws["dashboards"].as_i64(),
            ws["unregistered"].as_i64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(ws["connections"], 3);

    let (_, m) = server.get_json("/api/monitoring").await;
    assert_eq!(m["ingest"]["metricsTotal"], 1);
    assert_eq!(m["servers"]["windowsMs"], json!([1000, 5000, 10000]));
    assert_eq!(m["servers"]["mostRecent"][0]["serverId"], "a");
    assert_eq!(m["dashboards"][0]["filter"], "a");
    assert!(m["dashboards"][0]["queued"].as_u64().is_some(), "{m}");

    let (status, one) = server.get_json("/api/monitoring/server/a").await;
    assert_eq!(status, 200);
    assert_eq!(one["metrics"], 1);
    assert_eq!(one["windows"]["1000"]["averages"]["cpu"], 10.0);
    let (status, missing) = server.get_json("/api/monitoring/server/zzz").await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("zzz"));

    let text = server.get_text("/metrics").await;
    for line in [
        "system2_metrics_ingested_total 1",
        "system2_servers_tracked 1",
        r#"system2_connections{role="producer"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_returns() {
    let mut server = TestServer::start(&[]).await;
    let mut producer = Client::producer(&server).await;
    let mut dashboard = Client::dashboard(&server, json!({})).await;
    server.stop().await.expect("clean stop");
    assert_eq!(
        producer.expect_close().await,
        (1001, "server shutting down".into())
    );
    assert_eq!(dashboard.expect_close().await.0, 1001);
    // No longer accepting.
    assert!(tokio_tungstenite::connect_async(server.ws_url()).await.is_err());
}
