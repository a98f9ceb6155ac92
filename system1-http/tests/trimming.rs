//! The stream's cap (`--stream-maxlen`) against a real redis-server: trimming drops entries whether or
//! not a worker processed them, and every such drop is counted, by kind; a consumer whose pending
//! entries were trimmed is not wedged by them.
//!
//! On one partition (`--partitions 1`, the single stream `metrics:stream`), so that the counts are
//! those of one cap: with eight partitions, each has an eighth of `--stream-maxlen`, and is trimmed
//! and counted the same way, on its own.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{GROUP, STREAM, api_cli, cli, pending, read_without_ack};
use lab_testkit::RedisServer;
use redis::Commands;
use serde_json::{Value, json};
use system1_http::api::IngestApi;
use system1_http::config::Role;
use system1_http::store::trimmed_key;
use system1_http::worker::{Outcome, Worker, WorkerStats};

/// Starts the API with a cap of 1 000 entries (the smallest allowed); returns its URL.
async fn start_api(redis: &RedisServer) -> String {
    let cli = api_cli(redis, &["--partitions", "1", "--stream-maxlen", "1000"]);
    let Role::Api(args) = &cli.role else {
        unreachable!()
    };
    let api = IngestApi::bind(args, &cli.redis).await.unwrap();
    let url = format!("http://{}", api.local_addrs()[0]);
    tokio::spawn(api.run(std::future::pending()));
    url
}

async fn worker(redis: &RedisServer, name: &str, stats: &Arc<WorkerStats>) -> Worker {
    let cli = cli(
        redis,
        &[
            "--partitions",
            "1",
            "worker",
            "--lease-ms",
            "300",
            "--block-ms",
            "100",
            "--batch-size",
            "10",
            "--claim-idle-ms",
            "50",
        ],
    );
    let Role::Worker(args) = &cli.role else {
        unreachable!()
    };
    let mut worker = Worker::connect(args, &cli.redis, name.into())
        .await
        .unwrap()
        .with_stats(stats.clone());
    worker.ensure_group().await.unwrap();
    worker
}

/// Posts `n` metrics of server `s` in one batch (up to 1 000).
async fn ingest(client: &reqwest::Client, url: &str, first_seq: u64, n: u64) {
    ingest_for(client, url, "s", first_seq, n).await
}

/// Posts `n` metrics of `server` in one batch (up to 1 000).
async fn ingest_for(client: &reqwest::Client, url: &str, server: &str, first_seq: u64, n: u64) {
    let batch: Vec<Value> = (first_seq..first_seq + n)
        .map(|seq| json!({"serverId": server, "timestamp": lab_core::now_ms(), "metrics": {"cpu": 1, "memory": 2, "disk": 3}, "seq": seq}))
        .collect();
    let response = client
        .post(format!("{url}/metrics"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
}

/// The workers' ops port for a stream of `partitions` partitions, counting `stats`: its address and
/// its `/api/monitoring` document. (The task serving it lives as long as the test's runtime.)
async fn ops_port(
    redis: &RedisServer,
    partitions: &str,
    stats: &Arc<WorkerStats>,
) -> (std::net::SocketAddr, Value) {
    let cli = cli(
        redis,
        &[
            "--partitions",
            partitions,
            "worker",
            "--ops-port",
            "0",
            "--ops-host",
            "127.0.0.1",
        ],
    );
    let Role::Worker(args) = &cli.role else {
        unreachable!()
    };
    let (address, _task) =
        system1_http::worker_ops::serve(args, &cli.redis, stats.clone(), std::future::pending())
            .await
            .unwrap();
    let m: Value = reqwest::get(format!("http://{address}/api/monitoring"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (address, m)
}

fn counted(redis: &RedisServer, field: &str) -> u64 {
    let value: Option<u64> = redis.connection().hget(trimmed_key(STREAM), field).unwrap();
    value.unwrap_or(0)
}

#[tokio::test]
async fn trimming_counts_every_entry_it_drops_before_processing_and_nothing_wedges() {
    let redis = RedisServer::start().unwrap();
    let url = start_api(&redis).await;
    let client = reqwest::Client::new();
    let stats = Arc::new(WorkerStats::default());
    let mut w1 = worker(&redis, "w1", &stats).await;
    // A second group that never reads: everything trimmed is unread for it.
    let _: () = redis.connection().xgroup_create(STREAM, "audit", "0").unwrap();

    // Entries 1–20: w1 processes 1–10; "dead" reads 11–15 and dies; "w3" reads 16–18 and crashes;
    // 19–20 are never read.
    ingest(&client, &url, 0, 20).await;
    assert!(matches!(
        w1.process_batch().await.unwrap(),
        Outcome::Processed { entries: 10, .. }
    ));
    read_without_ack(&redis, "dead", 5);
    read_without_ack(&redis, "w3", 3);
    assert_eq!(pending(&redis), 8);

    // 2 000 more. At 1 020 entries the stream is under cap + 100: nothing trimmed yet. At 2 020, it is
    // trimmed back to 1 000: the oldest 1 020 go, entries 1–1 020.
    ingest(&client, &url, 20, 1000).await;
    let length: usize = redis.connection().xlen(STREAM).unwrap();
    assert_eq!(length, 1020, "under the cap plus one step: not trimmed");
    ingest(&client, &url, 1020, 1000).await;
    let length: usize = redis.connection().xlen(STREAM).unwrap();
    assert_eq!(length, 1000, "trimmed exactly to the cap");

    // Of the 1 020 trimmed: 10 processed, 8 pending (counted when the workers find them gone), and
    // 1 002 that no consumer of the group had read (entries 19–1 020), counted by the trim itself.
    assert_eq!(counted(&redis, &format!("unread:{GROUP}")), 1002);
    assert_eq!(counted(&redis, "unread:audit"), 1020);
    assert_eq!(counted(&redis, &format!("pending:{GROUP}")), 0);

    // "w3" comes back: it owns nothing (w1 owns the only partition), so it reads nothing.
    let mut w3 = worker(&redis, "w3", &stats).await;
    assert_eq!(w3.process_batch().await.unwrap(), Outcome::Empty);
    assert!(w3.owned_partitions().is_empty());

    // The partition's owner looks for entries left pending by others: once they are idle past
    // --claim-idle-ms, XAUTOCLAIM reports the 8 of "dead" and "w3" deleted (and drops them from the
    // pending list); w1 counts them and reads on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let outcome = w1.process_batch().await.unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Processed {
                claimed: 0,
                trimmed: 8,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(counted(&redis, &format!("pending:{GROUP}")), 8);
    assert_eq!(
        pending(&redis),
        0,
        "nothing of the trimmed entries is left pending"
    );

    // Nothing is wedged: the workers drain the rest of the stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while w1.process_batch().await.unwrap() != Outcome::Empty
        || w3.process_batch().await.unwrap() != Outcome::Empty
        || pending(&redis) != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workers never finished"
        );
    }
    assert_eq!(stats.processed.get(), 10 + 1000);
    assert_eq!(stats.trimmed_pending.get(), 8);

    // The ops port shows it: 1 010 metrics of this group's were thrown away unprocessed.
    let (address, m) = ops_port(&redis, "1", &stats).await;
    assert_eq!(m["trimmedUnprocessed"], 1010, "{m}");
    assert_eq!(m["trimmed"], json!({"unread": 1002, "pending": 8}));
    assert_eq!(m["thisProcess"]["trimmedPending"], 8);
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "system1_worker_trimmed_pending_total 8",
        r#"system1_worker_trimmed_unprocessed_total{group="metrics-workers",kind="unread"} 1002"#,
        r#"system1_worker_trimmed_unprocessed_total{group="metrics-workers",kind="pending"} 8"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

/// Without a consumer group nothing is counted (no one was going to read the entries), and the cap
/// still holds.
#[tokio::test]
async fn without_a_group_trimming_only_caps_the_stream() {
    let redis = RedisServer::start().unwrap();
    let url = start_api(&redis).await;
    let client = reqwest::Client::new();
    for i in 0..3 {
        ingest(&client, &url, i * 1000, 1000).await;
    }
    let length: usize = redis.connection().xlen(STREAM).unwrap();
    assert_eq!(length, 1000);
    let exists: bool = redis.connection().exists(trimmed_key(STREAM)).unwrap();
    assert!(!exists);
}

/// With several partitions, each is capped at its share of `--stream-maxlen` and counts what its trims
/// drop in its own hash; the ops port adds them up for the group.
#[tokio::test]
async fn each_partition_is_capped_at_its_share_and_counted_on_its_own() {
    let redis = RedisServer::start().unwrap();
    let api_args = api_cli(&redis, &["--partitions", "2", "--stream-maxlen", "2000"]);
    let Role::Api(args) = &api_args.role else {
        unreachable!()
    };
    let api = IngestApi::bind(args, &api_args.redis).await.unwrap();
    let url = format!("http://{}", api.local_addrs()[0]);
    tokio::spawn(api.run(std::future::pending()));
    let partitions = system1_http::store::Partitions::new(STREAM, 2);
    // Two servers, one in each partition.
    let a = "a".to_owned();
    let b = (0..)
        .map(|i| format!("b{i}"))
        .find(|b| partitions.of(b) != partitions.of(&a))
        .unwrap();
    // The group exists (a worker created it) and reads nothing.
    let worker_cli = cli(&redis, &["--partitions", "2", "worker"]);
    let Role::Worker(wargs) = &worker_cli.role else {
        unreachable!()
    };
    Worker::connect(wargs, &worker_cli.redis, "idle".into())
        .await
        .unwrap()
        .ensure_group()
        .await
        .unwrap();
    let client = reqwest::Client::new();
    for server in [&a, &b] {
        for (first, n) in [(0, 1000), (1000, 100)] {
            ingest_for(&client, &url, server, first, n).await;
        }
    }
    for server in [&a, &b] {
        let stream = partitions.stream(partitions.of(server));
        let length: usize = redis.connection().xlen(&stream).unwrap();
        assert_eq!(length, 1000, "{stream}: 1 100 appended, trimmed to half of 2 000");
        let unread: u64 = redis
            .connection()
            .hget(trimmed_key(&stream), format!("unread:{GROUP}"))
            .unwrap();
        assert_eq!(unread, 100, "{stream}");
    }
    let (_, m) = ops_port(&redis, "2", &Arc::new(WorkerStats::default())).await;
    assert_eq!(m["trimmed"], json!({"unread": 200, "pending": 0}), "{m}");
    assert_eq!(m["streamLength"], 2000);
    assert_eq!(m["partitions"].as_array().unwrap().len(), 2);
}
