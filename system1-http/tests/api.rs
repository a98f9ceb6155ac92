//! System 1's ingest API against a real redis-server (lab-testkit), over HTTP/1.1 and HTTP/2.

mod common;

use std::time::Duration;

use common::start_api;
use lab_testkit::{Fsync, RedisServer};
use serde_json::{Value, json};

fn metric(server: &str, seq: u64) -> Value {
    json!({"serverId": server, "timestamp": lab_core::now_ms(), "metrics": {"cpu": 10.5, "memory": 20, "disk": 30, "network": {"in": 1, "out": 2}}, "seq": seq})
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = client
        .post(format!("{url}/metrics"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.unwrap_or(Value::Null), headers)
}

#[tokio::test]
async fn a_metric_is_in_the_stream_and_announced_before_the_202() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let mut subscriber = redis.connection();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("metrics:pubsub").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let (status, body, _) = post(&reqwest::Client::new(), &api.urls[0], &metric("server-1", 7)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["accepted"], 1);
    let id = body["ids"][0].as_str().unwrap().to_owned();

    let entries: redis::streams::StreamRangeReply = common::entries(&redis);
    assert_eq!(entries.ids.len(), 1);
    let entry = &entries.ids[0];
    assert_eq!(entry.id, id);
    let field = |name: &str| match entry.map.get(name) {
        Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(field("serverId"), "server-1");
    assert_eq!(field("seq"), "7");
    assert_eq!(
        serde_json::from_str::<Value>(&field("metrics")).unwrap()["cpu"],
        10.5
    );

    let event: Value =
        serde_json::from_str(&pubsub.get_message().unwrap().get_payload::<String>().unwrap()).unwrap();
    assert_eq!(event["type"], "metric.ingested");
    assert_eq!(event["entryId"], id.as_str());
    assert_eq!(event["payload"]["seq"], 7);
}

#[tokio::test]
async fn a_script_redis_forgot_is_loaded_again() {
    // The API calls its script by hash (EVALSHA); after SCRIPT FLUSH (or a Redis restart) Redis answers
    // NOSCRIPT, and the API must load the script and still append the metric, exactly once.
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let client = reqwest::Client::new();
    let (status, body, _) = post(&client, &api.urls[0], &metric("server-1", 1)).await;
    assert_eq!(status, 202, "{body}");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.connection())
        .unwrap();
    let (status, body, _) = post(&client, &api.urls[0], &metric("server-1", 2)).await;
    assert_eq!(status, 202, "{body}");
    let length: usize = common::stream_len(&redis);
    assert_eq!(length, 2);
}

#[tokio::test]
async fn a_batch_is_appended_in_order() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let batch = json!([metric("a", 0), metric("b", 0), metric("a", 1)]);
    let (status, body, _) = post(&reqwest::Client::new(), &api.urls[0], &batch).await;
    assert_eq!((status, body["accepted"].as_u64()), (202, Some(3)));
    let ids: Vec<&str> = body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| {
        id.split('-')
            .map(|p| p.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(ids, sorted, "ids follow the request's order");
    let len: usize = common::stream_len(&redis);
    assert_eq!(len, 3);
}

#[tokio::test]
async fn bad_requests_get_their_status_and_store_nothing() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", api.urls[0]);

    let (status, body, _) = post(
        &client,
        &api.urls[0],
        &json!({"serverId": "", "timestamp": "x", "metrics": {"cpu": 120}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "Invalid payload");
    let paths: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/serverId",
            "/timestamp",
            "/metrics/cpu",
            "/metrics/memory",
            "/metrics/disk"
        ]
    );

    let (status, body, _) = post(&client, &api.urls[0], &json!([metric("a", 0), {"serverId": "b"}])).await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["index"], 1, "{body}");

    let mut future = metric("a", 0);
    future["timestamp"] = json!(lab_core::now_ms() + 3_600_000.0);
    assert_eq!(post(&client, &api.urls[0], &future).await.0, 400);

    let not_json = client
        .post(&url)
        .header("content-type", "text/plain")
        .body(metric("a", 0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 415);

    let huge = client
        .post(&url)
        .header("content-type", "application/json")
        .body(vec![b' '; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);
    assert!(huge.text().await.unwrap().contains("larger than"));

    let garbage = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);

    let len: usize = common::stream_len(&redis);
    assert_eq!(len, 0);
}

#[tokio::test]
async fn both_ports_speak_http2_with_prior_knowledge() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for url in &api.urls {
        let response = h2
            .post(format!("{url}/metrics"))
            .json(&metric("h2", 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status().as_u16(), 202);
        let h1 = reqwest::Client::new()
            .post(format!("{url}/metrics"))
            .json(&metric("h1", 1))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (h1.version(), h1.status().as_u16()),
            (reqwest::Version::HTTP_11, 202)
        );
    }
}

#[tokio::test]
async fn concurrent_requests_all_land() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (client, url) = (client.clone(), api.urls[i % 2].clone());
        tasks.spawn(async move { post(&client, &url, &metric("c", i as u64)).await.0 });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 202);
    }
    let len: usize = common::stream_len(&redis);
    assert_eq!(len, 300);
}

/// While Redis is down: 503 with Retry-After, never a 202, and health says so. When it is back, the
/// API recovers by itself, and every metric that was acked 202 is in the stream (AOF, fsync always).
#[tokio::test]
async fn a_redis_outage_is_503_then_recovers_and_loses_nothing_acked() {
    let mut redis = RedisServer::builder().aof(Fsync::Always).start().unwrap();
    let api = start_api(&redis, &[]).await;
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for seq in 0..20 {
        if post(&client, &api.urls[0], &metric("r", seq)).await.0 == 202 {
            acked.push(seq);
        }
    }
    assert_eq!(acked.len(), 20);

    redis.stop();
    for seq in 20..30 {
        let (status, body, headers) = post(&client, &api.urls[0], &metric("r", seq)).await;
        assert_eq!(status, 503, "never a 202 while Redis is down: {body}");
        assert_eq!(headers.get("retry-after").unwrap(), "1");
    }
    let health = client
        .get(format!("{}/healthz", api.urls[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 503);
    assert_eq!(health.json::<Value>().await.unwrap()["redis"], "unavailable");

    redis.restart().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut seq = 30;
    loop {
        let (status, _, _) = post(&client, &api.urls[0], &metric("r", seq)).await;
        if status == 202 {
            acked.push(seq);
            break;
        }
        assert_eq!(status, 503);
        assert!(tokio::time::Instant::now() < deadline, "the API did not recover");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health: Value = client
        .get(format!("{}/healthz", api.urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "redis": "ready"}));

    let entries: redis::streams::StreamRangeReply = common::entries(&redis);
    let stored: Vec<u64> = entries
        .ids
        .iter()
        .map(|e| match e.map.get("seq") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).parse().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    for seq in &acked {
        assert!(
            stored.contains(seq),
            "metric {seq} was acked 202 but is not in the stream"
        );
    }
}

#[tokio::test]
async fn health_and_prometheus_describe_the_api() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let client = reqwest::Client::new();
    post(&client, &api.urls[1], &metric("p", 1)).await;
    let health: Value = client
        .get(format!("{}/healthz", api.urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok", "redis": "ready"}));
    let text = client
        .get(format!("{}/metrics", api.urls[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("system1_api_metrics_accepted_total 1"), "{text}");
    let m: Value = client
        .get(format!("{}/api/monitoring", api.urls[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["metricsAccepted"], 1);
}

/// A 5 MB batch: twenty times the body limit, as a client that batches a whole run would send.
fn five_megabytes() -> Vec<u8> {
    let one = metric("big", 0).to_string();
    let mut body = b"[".to_vec();
    while body.len() < 5_000_000 {
        body.extend_from_slice(one.as_bytes());
        body.push(b',');
    }
    body.extend_from_slice(one.as_bytes());
    body.push(b']');
    body
}

/// Sends the oversize body and then a valid metric on one hyper connection of `version`; returns
/// both answers (status, JSON body). A client that sends its whole body without waiting, as httpx
/// and most libraries do (hyper sends no `Expect: 100-continue`).
async fn oversize_then_valid(url: &str, version: hyper::Version) -> [(u16, Value); 2] {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let address = url.strip_prefix("http://").unwrap();
    let io = TokioIo::new(tokio::net::TcpStream::connect(address).await.unwrap());
    let bodies = [five_megabytes(), metric("after", 1).to_string().into_bytes()];
    let requests = bodies.map(|body| {
        hyper::Request::post(format!("{url}/metrics"))
            .header("host", address)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    });
    let mut answers = Vec::new();
    if version == hyper::Version::HTTP_2 {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(connection);
        for mut request in requests {
            *request.version_mut() = hyper::Version::HTTP_2;
            answers.push(
                sender
                    .send_request(request)
                    .await
                    .expect("an answer, not a reset"),
            );
        }
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        for request in requests {
            sender.ready().await.expect("the connection is still open");
            answers.push(
                sender
                    .send_request(request)
                    .await
                    .expect("an answer, not a reset"),
            );
        }
    }
    let mut out = Vec::new();
    for answer in answers {
        let status = answer.status().as_u16();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        out.push((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    }
    out.try_into().unwrap()
}

#[tokio::test]
async fn an_oversize_body_gets_its_413_and_the_connection_serves_the_next_request() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    for version in [hyper::Version::HTTP_11, hyper::Version::HTTP_2] {
        let [(status, body), (next, next_body)] = oversize_then_valid(&api.urls[0], version).await;
        assert_eq!(status, 413, "{version:?}: {body}");
        assert_eq!(
            body["error"],
            format!(
                "the body is larger than {} bytes",
                lab_core::limits::MAX_MESSAGE_BYTES
            ),
            "{version:?}"
        );
        assert_eq!(next, 202, "{version:?}, same connection: {next_body}");
    }
    // reqwest, as an application would use it, in both protocols.
    for client in [
        reqwest::Client::new(),
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
    ] {
        let response = client
            .post(format!("{}/metrics", api.urls[1]))
            .header("content-type", "application/json")
            .body(five_megabytes())
            .send()
            .await
            .expect("the 413, not a reset");
        assert_eq!(response.status().as_u16(), 413);
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("larger than"), "{body}");
        assert_eq!(post(&client, &api.urls[1], &metric("after", 2)).await.0, 202);
    }
    let monitoring: Value = reqwest::get(format!("{}/api/monitoring", api.urls[0]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(monitoring["requestsOversize"]["drained"], 4, "{monitoring}");
    assert_eq!(monitoring["requestsOversize"]["refused"], 0, "{monitoring}");
}

#[tokio::test]
async fn a_body_declared_past_the_drain_bound_is_refused_unread() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let address = api.urls[0].strip_prefix("http://").unwrap();
    // Declares 1 GB and sends none of it: the answer comes at once, and says the connection closes.
    let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(
        b"POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered and closed without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(answer.contains("larger than"), "{answer}");
}
