//! System 1's workers against a real redis-server: batches, aggregation identical to System 2's,
//! partitions owned by one worker at a time (taken over from a dead one, handed over between live
//! ones, fenced), windows rebuilt exactly, and redeliveries counted once.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{partitions, pending, read_without_ack_from, stream_of};
use lab_core::aggregate::{ServerWindows, WindowSpec, WindowSummaries};
use lab_core::wire::system1::to_stream_fields;
use lab_core::{Metric, Network, Readings};
use lab_testkit::{Fsync, RedisServer};
use redis::Commands;
use system1_http::config::{Cli, Role, WorkerArgs};
use system1_http::store::latest_key;
use system1_http::worker::{Outcome, Worker};

fn args(redis: &RedisServer, extra: &[&str]) -> (WorkerArgs, system1_http::config::RedisArgs) {
    let url = redis.url();
    let mut all = vec!["system1", "--redis-url", &url, "worker", "--block-ms", "100"];
    all.extend_from_slice(extra);
    let cli = Cli::try_parse_from(all).unwrap();
    let Role::Worker(w) = cli.role else { unreachable!() };
    (w, cli.redis)
}

async fn worker(redis: &RedisServer, name: &str, extra: &[&str]) -> Worker {
    let (w, r) = args(redis, extra);
    let mut worker = Worker::connect(&w, &r, name.into()).await.unwrap();
    worker.ensure_group().await.unwrap();
    worker
}

fn metric(server: &str, ts: f64, cpu: f64, seq: u64) -> Metric {
    Metric {
        server_id: server.into(),
        timestamp: ts,
        metrics: Readings {
            cpu,
            memory: 40.0,
            disk: 50.0,
            network: Some(Network { rx: 100.0, tx: 200.0 }),
            extra: vec![],
        },
        seq: Some(seq),
    }
}

fn append(redis: &RedisServer, metrics: &[Metric]) -> Vec<String> {
    let mut con = redis.connection();
    metrics
        .iter()
        .map(|m| {
            con.xadd(stream_of(&m.server_id), "*", &to_stream_fields(m))
                .unwrap()
        })
        .collect()
}

fn latest_windows(redis: &RedisServer, server: &str) -> WindowSummaries {
    let text: String = redis.connection().hget(latest_key(server), "windows").unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_batch_is_aggregated_stored_announced_and_acked() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]).await;
    let mut subscriber = redis.connection();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("metrics:pubsub").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let t = 1_763_800_000_000.0;
    let ids = append(
        &redis,
        &[
            metric("a", t, 10.0, 0),
            metric("b", t, 50.0, 0),
            metric("a", t + 500.0, 30.0, 1),
        ],
    );
    let outcome = w.process_batch().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Processed {
            entries: 3,
            duplicates: 0,
            unreadable: 0,
            claimed: 0,
            trimmed: 0
        }
    );
    assert_eq!(pending(&redis), 0, "everything acked");

    let a = latest_windows(&redis, "a");
    assert_eq!(a.get(1000).unwrap().samples, 2);
    assert_eq!(a.get(1000).unwrap().averages.unwrap().cpu, 20.0);
    let seq: String = redis.connection().hget(latest_key("a"), "seq").unwrap();
    assert_eq!(seq, "1");

    let mut events = Vec::new();
    for _ in 0..3 {
        let text: String = pubsub.get_message().unwrap().get_payload().unwrap();
        events.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
    }
    assert!(events.iter().all(|e| e["type"] == "metric.processed"));
    let entry_ids: Vec<&str> = events.iter().map(|e| e["entryId"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| entry_ids.contains(&id.as_str())));
    let last_a = events.iter().rfind(|e| e["payload"]["serverId"] == "a").unwrap();
    assert_eq!(last_a["payload"]["windows"]["1000"]["samples"], 2);
    assert_eq!(
        last_a["payload"]["timestamp"],
        t + 500.0,
        "the metric's own timestamp"
    );

    assert_eq!(w.process_batch().await.unwrap(), Outcome::Empty);
}

/// The same metrics give the same windows in System 1 as in System 2's aggregator, however the worker
/// batches them.
#[tokio::test]
async fn windows_equal_system_2s_for_the_same_input() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &["--batch-size", "7"]).await;
    let t = 1_763_800_000_000.0;
    let metrics: Vec<Metric> = (0..60u32)
        .map(|i| {
            metric(
                "s",
                t + f64::from(i) * 150.0,
                f64::from(i % 11) * 9.0,
                u64::from(i),
            )
        })
        .collect();
    append(&redis, &metrics);
    while w.process_batch().await.unwrap() != Outcome::Empty {}
    let mut system2 = ServerWindows::new(&WindowSpec::default(), 500).unwrap();
    for m in &metrics {
        system2.add(m.timestamp, &m.metrics);
    }
    assert_eq!(latest_windows(&redis, "s"), system2.summaries());
}

/// Short leases, so that the tests see partitions move in a fraction of a second.
const FAST: [&str; 4] = ["--lease-ms", "300", "--claim-idle-ms", "100"];

/// Steps `w` until it owns a partition (its leases' next look), at most for 5 s.
async fn until_it_owns_some(w: &mut Worker) -> Outcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut outcome = Outcome::Empty;
    while w.owned_partitions().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never took a partition",
            w.name
        );
        outcome = w.process_batch().await.unwrap();
    }
    outcome
}

/// Two workers hand one server's partition back and forth, some of its metrics late: each time, the
/// new owner rebuilds the windows from the stream (the entries processed already, within the longest
/// window), and the windows stay exactly System 2's.
#[tokio::test]
async fn a_partition_handed_over_keeps_its_windows_exact() {
    let redis = RedisServer::start().unwrap();
    let stats = std::sync::Arc::new(system1_http::worker::WorkerStats::default());
    let mut w1 = worker(&redis, "w1", &[&["--batch-size", "3"][..], &FAST].concat())
        .await
        .with_stats(stats.clone());
    let mut w2 = worker(&redis, "w2", &[&["--batch-size", "4"][..], &FAST].concat())
        .await
        .with_stats(stats.clone());
    let t = 1_763_800_000_000.0;
    // Mostly in order, every seventh one 2.5 s late.
    let metrics: Vec<Metric> = (0..90u32)
        .map(|i| {
            let late = if i % 7 == 6 { 2_500.0 } else { 0.0 };
            metric(
                "s",
                t + f64::from(i) * 200.0 - late,
                f64::from(i % 13) * 7.0,
                u64::from(i),
            )
        })
        .collect();
    let mut system2 = ServerWindows::new(&WindowSpec::default(), 500).unwrap();
    let (mut owner, mut other) = (&mut w1, &mut w2);
    for chunk in metrics.chunks(15) {
        append(&redis, chunk);
        for m in chunk {
            system2.add(m.timestamp, &m.metrics);
        }
        until_it_owns_some(owner).await;
        while owner.process_batch().await.unwrap() != Outcome::Empty {}
        assert_eq!(latest_windows(&redis, "s"), system2.summaries());
        // The owner leaves; the other takes everything at its next look.
        owner.leave().await;
        std::mem::swap(&mut owner, &mut other);
    }
    // Each of the five handovers replayed everything before it (all within the 60 s window): 15 +
    // 30 + 45 + 60 + 75 entries.
    assert_eq!(stats.replayed.get(), 225);
    assert_eq!(stats.processed.get(), 90, "and nothing was processed twice");
}

/// A worker that lost its partition's lease (it stalled past it, and another took the partition)
/// commits nothing: the lease check in the commit script fences it off.
#[tokio::test]
async fn a_worker_whose_lease_was_taken_commits_nothing() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]).await;
    let t = 1_763_800_000_000.0;
    append(&redis, &[metric("s", t, 10.0, 0)]);
    w.process_batch().await.unwrap();
    let p = partitions().of("s");
    assert!(w.owned_partitions().contains(&p));
    // Another worker holds the lease now (as after this one's lapsed).
    let _: () = redis
        .connection()
        .set(partitions().lease(p, "metrics-workers"), "thief")
        .unwrap();
    append(&redis, &[metric("s", t + 1.0, 99.0, 1)]);
    assert_eq!(
        w.process_batch().await.unwrap(),
        Outcome::Empty,
        "nothing committed"
    );
    assert!(
        !w.owned_partitions().contains(&p),
        "it knows it lost the partition"
    );
    let seq: String = redis.connection().hget(latest_key("s"), "seq").unwrap();
    assert_eq!(seq, "0", "the snapshot is untouched");
    assert_eq!(pending(&redis), 1, "the entry waits for the partition's owner");
}

/// Workers started together (one process's `--workers 2`) see each other before taking partitions:
/// each takes its half at once, and nobody takes all and gives half back a moment later.
#[tokio::test]
async fn workers_started_together_take_their_shares_at_once() {
    let redis = RedisServer::start().unwrap();
    let mut w1 = worker(&redis, "w1", &FAST).await;
    let mut w2 = worker(&redis, "w2", &FAST).await;
    let (a, b) = tokio::join!(w1.process_batch(), w2.process_batch());
    a.unwrap();
    b.unwrap();
    assert_eq!(
        (w1.owned_partitions().len(), w2.owned_partitions().len()),
        (4, 4)
    );
}

/// Workers share the partitions fairly: one alone takes all; a second that joins gets half, given
/// back by the first at its next look.
#[tokio::test]
async fn partitions_spread_over_the_workers_of_the_group() {
    let redis = RedisServer::start().unwrap();
    let mut w1 = worker(&redis, "w1", &FAST).await;
    let mut w2 = worker(&redis, "w2", &FAST).await;
    w1.process_batch().await.unwrap();
    assert_eq!(w1.owned_partitions().len(), 8, "alone, it takes every partition");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w1.owned_partitions().len() != 4 || w2.owned_partitions().len() != 4 {
        assert!(tokio::time::Instant::now() < deadline, "never balanced");
        w1.process_batch().await.unwrap();
        w2.process_batch().await.unwrap();
    }
    let mut all: Vec<usize> = w1.owned_partitions();
    all.extend(w2.owned_partitions());
    all.sort_unstable();
    assert_eq!(
        all,
        (0..8).collect::<Vec<_>>(),
        "each partition has exactly one owner"
    );
}

/// A worker that owned a partition died with a batch read and not committed: once its lease lapses,
/// another takes the partition, claims the entries at once, and finishes them.
#[tokio::test]
async fn a_dead_owners_partition_is_taken_over_when_its_lease_lapses() {
    let redis = RedisServer::start().unwrap();
    let mut survivor = worker(&redis, "survivor", &FAST).await;
    let t = 1_763_800_000_000.0;
    append(
        &redis,
        &(0..5u32)
            .map(|i| metric("s", t + f64::from(i), 10.0, u64::from(i)))
            .collect::<Vec<_>>(),
    );
    // The dead owner: it held the lease, read the batch, and died before committing.
    let p = partitions().of("s");
    let _: () = redis::cmd("SET")
        .arg(partitions().lease(p, "metrics-workers"))
        .arg("dead")
        .arg("PX")
        .arg(300)
        .query(&mut redis.connection())
        .unwrap();
    read_without_ack_from(&redis, &stream_of("s"), "dead", 10);
    assert_eq!(pending(&redis), 5);
    assert_eq!(
        survivor.process_batch().await.unwrap(),
        Outcome::Empty,
        "its lease has not lapsed yet"
    );
    assert!(!survivor.owned_partitions().contains(&p));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut outcome = Outcome::Empty;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while outcome == Outcome::Empty {
        assert!(tokio::time::Instant::now() < deadline, "never took over");
        outcome = survivor.process_batch().await.unwrap();
    }
    assert_eq!(
        outcome,
        Outcome::Processed {
            entries: 5,
            duplicates: 0,
            unreadable: 0,
            claimed: 5,
            trimmed: 0
        }
    );
    assert_eq!(pending(&redis), 0);
    assert_eq!(latest_windows(&redis, "s").get(10000).unwrap().samples, 5);
}

/// A worker killed in the middle of its work (its task dropped wherever it was: no lease given back,
/// nothing more committed): another takes its partitions when the leases lapse; nothing is lost,
/// nothing is counted twice, and the windows equal those of an uninterrupted run.
#[tokio::test]
async fn a_worker_killed_mid_run_loses_nothing_and_its_successors_windows_are_exact() {
    let redis = RedisServer::start().unwrap();
    let t = 1_763_800_000_000.0;
    let metrics: Vec<Metric> = (0..2_000u32)
        .map(|i| {
            metric(
                &format!("s{}", i % 4),
                t + f64::from(i),
                f64::from(i % 17),
                u64::from(i),
            )
        })
        .collect();
    append(&redis, &metrics);
    let (args, redis_args) = args(&redis, &[&["--batch-size", "50"][..], &FAST].concat());
    let victim = Worker::connect(&args, &redis_args, "victim".into())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(victim.run(stop.clone()));
    // Let it do some of the work, then kill it wherever it is.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let started: bool = redis.connection().exists(latest_key("s0")).unwrap();
        if started {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the victim never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;

    let mut survivor = worker(&redis, "survivor", &[&["--batch-size", "50"][..], &FAST].concat()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = survivor.process_batch().await.unwrap();
        if outcome == Outcome::Empty && survivor.owned_partitions().len() == 8 && pending(&redis) == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never finished");
    }
    // Each server got 500 metrics 4 ms apart: all inside the 10 s window, each counted once, and the
    // windows are exactly those of one worker that was never interrupted (System 2's, for the same
    // metrics).
    for s in 0..4 {
        let server = format!("s{s}");
        let mut uninterrupted = ServerWindows::new(&WindowSpec::default(), 500).unwrap();
        for m in metrics.iter().filter(|m| m.server_id == server) {
            uninterrupted.add(m.timestamp, &m.metrics);
        }
        let windows = latest_windows(&redis, &server);
        assert_eq!(windows.get(10000).unwrap().samples, 500, "{server}");
        assert_eq!(windows, uninterrupted.summaries(), "{server}");
    }
    let processed: usize = redis.connection().xlen("metrics:processed").unwrap();
    assert_eq!(processed, 2_000, "every metric announced once");
}

#[tokio::test]
async fn a_redelivered_metric_is_acked_but_not_counted_again() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]).await;
    let t = 1_763_800_000_000.0;
    // The same metric (same seq) appended twice, as a client retry after a lost 202 would.
    append(&redis, &[metric("s", t, 10.0, 1), metric("s", t, 10.0, 1)]);
    let outcome = w.process_batch().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Processed {
            entries: 2,
            duplicates: 1,
            unreadable: 0,
            claimed: 0,
            trimmed: 0
        }
    );
    append(&redis, &[metric("s", t, 10.0, 1)]);
    let outcome = w.process_batch().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Processed {
            entries: 1,
            duplicates: 1,
            unreadable: 0,
            claimed: 0,
            trimmed: 0
        }
    );
    assert_eq!(latest_windows(&redis, "s").get(1000).unwrap().samples, 1);
    assert_eq!(pending(&redis), 0);
}

/// An agent that restarts counts its `seq` from 0 again: its metrics are new, not redeliveries.
#[tokio::test]
async fn a_restarted_agents_seqs_are_not_mistaken_for_redeliveries() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]).await;
    let t = 1_763_800_000_000.0;
    append(
        &redis,
        &[metric("s", t, 10.0, 0), metric("s", t + 100.0, 10.0, 1)],
    );
    w.process_batch().await.unwrap();
    append(
        &redis,
        &[metric("s", t + 200.0, 10.0, 0), metric("s", t + 300.0, 10.0, 1)],
    );
    let outcome = w.process_batch().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Processed {
            entries: 2,
            duplicates: 0,
            unreadable: 0,
            claimed: 0,
            trimmed: 0
        }
    );
    assert_eq!(latest_windows(&redis, "s").get(1000).unwrap().samples, 4);
}

#[tokio::test]
async fn the_ops_port_shows_the_group_and_the_counts() {
    let redis = RedisServer::start().unwrap();
    let (args, redis_args) = args(&redis, &["--ops-port", "0", "--ops-host", "127.0.0.1"]);
    let stats = std::sync::Arc::new(system1_http::worker::WorkerStats::default());
    let mut w = Worker::connect(&args, &redis_args, "w1".into())
        .await
        .unwrap()
        .with_stats(stats.clone());
    w.ensure_group().await.unwrap();
    let (address, _task) = system1_http::worker_ops::serve(&args, &redis_args, stats, std::future::pending())
        .await
        .unwrap();
    assert_eq!(address.ip().to_string(), "127.0.0.1", "--ops-host is honoured");
    let t = 1_763_800_000_000.0;
    append(
        &redis,
        &[
            metric("s", t, 1.0, 0),
            metric("s", t, 1.0, 0),
            metric("s", t + 1.0, 1.0, 1),
        ],
    );
    w.process_batch().await.unwrap();
    append(&redis, &[metric("s", t + 2.0, 1.0, 2)]);
    let m: serde_json::Value = reqwest::get(format!("http://{address}/api/monitoring"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["streamLength"], 4);
    assert_eq!(m["group"]["name"], "metrics-workers");
    assert_eq!(m["group"]["lag"], 1, "one entry not yet read");
    assert_eq!(m["consumers"][0]["name"], "w1");
    let owned = m["partitions"].as_array().unwrap();
    assert_eq!(owned.len(), 8);
    assert!(owned.iter().all(|p| p["owner"] == "w1"), "{m}");
    assert_eq!(m["thisProcess"]["takeovers"], 8);
    assert_eq!(m["thisProcess"]["processed"], 3);
    assert_eq!(m["thisProcess"]["duplicates"], 1);
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("system1_worker_entries_processed_total 3"),
        "{text}"
    );
    let health = reqwest::get(format!("http://{address}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn an_entry_that_is_not_a_metric_is_acked_and_counted() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]).await;
    let _: String = redis
        .connection()
        .xadd(stream_of("poison"), "*", &[("hello", "world")])
        .unwrap();
    append(&redis, &[metric("s", 1_763_800_000_000.0, 10.0, 1)]);
    let outcome = w.process_batch().await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Processed {
            entries: 2,
            duplicates: 0,
            unreadable: 1,
            claimed: 0,
            trimmed: 0
        }
    );
    assert_eq!(pending(&redis), 0, "a poison entry must not be retried forever");
}

/// Redis goes away in the middle of a batch (read, not yet written): the batch fails, the entries stay
/// pending; when Redis is back (AOF), the worker claims its own pending entries and finishes them.
#[tokio::test]
async fn after_a_redis_outage_workers_resume_from_their_pending_list() {
    let mut redis = RedisServer::builder().aof(Fsync::Always).start().unwrap();
    let mut w = worker(&redis, "w1", &["--claim-idle-ms", "200"]).await;
    let t = 1_763_800_000_000.0;
    append(
        &redis,
        &(0..10u32)
            .map(|i| metric("s", t + f64::from(i), 1.0, u64::from(i)))
            .collect::<Vec<_>>(),
    );
    // The batch this worker had read when Redis died.
    read_without_ack_from(&redis, &stream_of("s"), "w1", 10);
    redis.stop();
    assert!(w.process_batch().await.is_err(), "Redis is down");
    redis.restart().unwrap();
    assert_eq!(pending(&redis), 10, "AOF kept the pending list");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Outcome::Empty) = w.process_batch().await
            && pending(&redis) == 0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(latest_windows(&redis, "s").get(10000).unwrap().samples, 10);
}

/// A batch with nothing to aggregate (only entries that are not metrics) is acked like any other: it
/// must not fail on an empty round of version reads and come back for ever.
#[tokio::test]
async fn a_batch_of_only_unreadable_entries_does_not_wedge_the_worker() {
    let redis = RedisServer::start().unwrap();
    let mut w = worker(&redis, "w1", &[]).await;
    let _: String = redis
        .connection()
        .xadd(stream_of("poison"), "*", &[("hello", "world")])
        .unwrap();
    assert_eq!(
        w.process_batch().await.unwrap(),
        Outcome::Processed {
            entries: 1,
            duplicates: 0,
            unreadable: 1,
            claimed: 0,
            trimmed: 0
        }
    );
    assert_eq!(pending(&redis), 0);
    assert_eq!(w.process_batch().await.unwrap(), Outcome::Empty);
}
