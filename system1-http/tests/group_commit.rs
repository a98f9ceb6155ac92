//! The API's group commit against a real redis-server (lab-testkit): requests that arrive while a
//! call is in flight go together in the next one, each answered on its own, only once durable.
//!
//! To make the grouping deterministic rather than a race, the tests hold the call in flight with
//! `CLIENT PAUSE … WRITE` (Redis parks every write, scripts included, until `CLIENT UNPAUSE`), watch
//! the queue fill through `/api/monitoring`, then release or kill Redis. (The API gives up on a call
//! after 2 s, so each pause is kept well under that.)

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::start_api;
use lab_testkit::{Fsync, RedisServer};
use serde_json::{Value, json};
use tokio::task::JoinSet;

fn metric(server: &str, seq: u64) -> Value {
    json!({"serverId": server, "timestamp": lab_core::now_ms(), "metrics": {"cpu": (seq % 100) as f64, "memory": 20, "disk": 30}, "seq": seq})
}

/// A POST's status, body and `Retry-After`.
async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value, Option<String>) {
    let response = client
        .post(format!("{url}/metrics"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap_or(Value::Null), retry)
}

async fn monitoring(url: &str) -> Value {
    reqwest::get(format!("{url}/api/monitoring"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (5 s at most) until the API's `/api/monitoring` satisfies `ready`.
async fn wait_for(url: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = monitoring(url).await;
        if ready(&m) {
            return m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {m}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pause_writes(redis: &RedisServer) {
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "1500", "WRITE"])
        .query(&mut redis.connection())
        .unwrap();
}

fn unpause(redis: &RedisServer) {
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut redis.connection())
        .unwrap();
}

/// Every entry of the stream as (serverId, seq), by partition and entry id. (An entry id is unique
/// within its partition: two partitions may hand out the same id in the same millisecond.)
fn stored(redis: &RedisServer) -> HashMap<(String, String), (String, u64)> {
    use redis::Commands;
    let text = |e: &redis::streams::StreamId, name: &str| match e.map.get(name) {
        Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{name}: {other:?}"),
    };
    let mut stored = HashMap::new();
    for stream in common::partitions().streams() {
        let entries: redis::streams::StreamRangeReply = redis.connection().xrange_all(&stream).unwrap();
        for e in &entries.ids {
            stored.insert(
                (stream.clone(), e.id.clone()),
                (text(e, "serverId"), text(e, "seq").parse().unwrap()),
            );
        }
    }
    stored
}

/// Requests that arrive while a call is in flight all go in the next call, over both protocols, single
/// metrics and batches mixed; each is acked with the ids of its own metrics, and the stream holds
/// every metric exactly once.
#[tokio::test]
async fn requests_waiting_during_a_call_go_in_one_call_each_acked_with_its_own_ids() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let http1 = reqwest::Client::new();
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // Connections opened (and the script loaded) before the pause.
    for client in [&http1, &http2] {
        assert_eq!(post(client, &api.urls[0], &metric("warm", 0)).await.0, 202);
    }
    wait_for(&api.urls[0], "two commits", |m| m["groupCommits"]["commits"] == 2).await;

    pause_writes(&redis);
    let mut requests = JoinSet::new();
    let first = (http1.clone(), api.urls[0].clone());
    requests.spawn(async move {
        let body = metric("first", 1);
        (
            post(&first.0, &first.1, &body).await,
            vec![("first".to_owned(), 1)],
        )
    });
    wait_for(&api.urls[0], "the first call in flight", |m| {
        m["groupCommits"]["commits"] == 3
    })
    .await;
    // 40 more while it is parked: 20 single metrics over HTTP/1.1, 20 batches of 3 over HTTP/2.
    for i in 0..40u64 {
        let url = api.urls[(i % 2) as usize].clone();
        let (client, sent): (reqwest::Client, Vec<(String, u64)>) = if i % 2 == 0 {
            (http1.clone(), vec![(format!("s{i}"), i)])
        } else {
            (
                http2.clone(),
                (0..3).map(|k| (format!("b{i}"), 100 + 3 * i + k)).collect(),
            )
        };
        requests.spawn(async move {
            let body = if sent.len() == 1 {
                metric(&sent[0].0, sent[0].1)
            } else {
                Value::Array(sent.iter().map(|(s, q)| metric(s, *q)).collect())
            };
            (post(&client, &url, &body).await, sent)
        });
    }
    wait_for(&api.urls[0], "40 requests queued", |m| {
        m["groupCommits"]["waiting"] == 40
    })
    .await;
    unpause(&redis);

    let mut answers = Vec::new();
    while let Some(done) = requests.join_next().await {
        answers.push(done.unwrap());
    }
    let stored = stored(&redis);
    let mut acked_ids = HashSet::new();
    for ((status, body, _), sent) in answers {
        assert_eq!(status, 202, "{body}");
        let ids: Vec<String> = serde_json::from_value(body["ids"].clone()).unwrap();
        assert_eq!(body["accepted"], sent.len());
        assert_eq!(ids.len(), sent.len());
        for (id, sent) in ids.iter().zip(&sent) {
            // Where it must be: its server's partition.
            let key = (common::stream_of(&sent.0), id.clone());
            assert_eq!(
                stored.get(&key),
                Some(sent),
                "entry {id} is not this request's metric"
            );
            assert!(acked_ids.insert(key), "{id} acked twice");
        }
    }
    // 2 warm-up + 1 + 20 + 60 metrics, each once.
    assert_eq!(acked_ids.len(), 81);
    assert_eq!(stored.len(), 83);
    let m = monitoring(&api.urls[0]).await;
    // The two warm-up calls, the parked one, and one call for all 40 that waited behind it.
    assert_eq!(m["groupCommits"]["commits"], 4, "{m}");
    assert_eq!(m["groupCommits"]["requests"], 43, "{m}");
    assert_eq!(m["groupCommits"]["metrics"], 83, "{m}");
    assert_eq!(m["metricsAccepted"], 83, "{m}");
    let prometheus = http1
        .get(format!("{}/metrics", api.urls[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        prometheus.contains("system1_api_group_commits_total 4"),
        "{prometheus}"
    );
    assert!(
        prometheus.contains("system1_api_group_commit_requests_total 43"),
        "{prometheus}"
    );
}

/// The queue is bounded by `--max-in-flight`: past it a request is answered 503 at once, with a JSON
/// error and Retry-After, and counted; a request refused before the queue (400) fails alone, at once;
/// the requests that were queued are all committed when Redis answers.
#[tokio::test]
async fn a_full_queue_sheds_with_a_counted_503_and_bad_requests_fail_alone() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &["--max-in-flight", "5"]).await;
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &api.urls[0], &metric("warm", 0)).await.0, 202);

    pause_writes(&redis);
    let mut queued = JoinSet::new();
    for seq in 1..=5 {
        let (client, url) = (client.clone(), api.urls[0].clone());
        queued.spawn(async move { post(&client, &url, &metric("q", seq)).await });
    }
    wait_for(&api.urls[0], "5 requests waiting", |m| {
        m["inFlightAvailable"] == 0
    })
    .await;
    for seq in 6..=8 {
        let (status, body, retry) = post(&client, &api.urls[0], &metric("q", seq)).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("too many requests"),
            "{body}"
        );
        assert_eq!(retry.as_deref(), Some("1"));
    }
    let (status, body, _) = post(&client, &api.urls[0], &json!({"serverId": "bad"})).await;
    assert_eq!(status, 400, "{body}");
    unpause(&redis);

    while let Some(done) = queued.join_next().await {
        let (status, body, _) = done.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    let mut seqs: Vec<u64> = stored(&redis).into_values().map(|(_, seq)| seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        [0, 1, 2, 3, 4, 5],
        "the shed and the bad requests stored nothing"
    );
    let m = monitoring(&api.urls[0]).await;
    assert_eq!(m["requestsShed"], 3, "{m}");
    assert_eq!(m["requestsInvalid"], 1, "{m}");
    assert_eq!(m["inFlightAvailable"], 5, "{m}");
}

/// Redis is killed while a call is in flight and more requests wait behind it: every one of them is
/// answered 503 (each its own response, with Retry-After), none 202; after Redis restarts on its AOF
/// (fsync always), the stream holds every metric acked before and none of the failed group's (the
/// paused call never ran); and the API recovers by itself.
#[tokio::test]
async fn redis_going_away_mid_group_fails_every_waiting_request_and_acks_none() {
    let mut redis = RedisServer::builder().aof(Fsync::Always).start().unwrap();
    let api = start_api(&redis, &[]).await;
    let client = reqwest::Client::new();
    for seq in 0..10 {
        assert_eq!(post(&client, &api.urls[0], &metric("before", seq)).await.0, 202);
    }
    let commits = monitoring(&api.urls[0]).await["groupCommits"]["commits"]
        .as_u64()
        .unwrap();

    pause_writes(&redis);
    let mut waiting = JoinSet::new();
    let (c, url) = (client.clone(), api.urls[0].clone());
    waiting.spawn(async move { post(&c, &url, &metric("lost", 100)).await });
    wait_for(&api.urls[0], "the call in flight", |m| {
        m["groupCommits"]["commits"] == commits + 1
    })
    .await;
    for seq in 101..=120 {
        let (c, url) = (client.clone(), api.urls[seq as usize % 2].clone());
        waiting.spawn(async move { post(&c, &url, &metric("lost", seq)).await });
    }
    wait_for(&api.urls[0], "20 requests queued", |m| {
        m["groupCommits"]["waiting"] == 20
    })
    .await;
    redis.kill();

    let mut answered = 0;
    while let Some(done) = waiting.join_next().await {
        let (status, body, retry) = done.unwrap();
        assert_eq!(status, 503, "acked while Redis was gone: {body}");
        assert!(body["error"].as_str().unwrap().contains("retry later"), "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
        answered += 1;
    }
    assert_eq!(answered, 21);
    let m = monitoring(&api.urls[0]).await;
    assert_eq!(m["redisErrors"], 21, "{m}");
    assert!(m["groupCommits"]["failed"].as_u64().unwrap() >= 1, "{m}");

    redis.restart().unwrap();
    let mut seqs: Vec<u64> = stored(&redis).into_values().map(|(_, seq)| seq).collect();
    seqs.sort();
    assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while post(&client, &api.urls[0], &metric("after", 1)).await.0 != 202 {
        assert!(tokio::time::Instant::now() < deadline, "the API did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request leading a call goes away mid-call (its HTTP/2 client gives up and resets the stream, so
/// hyper drops the request): the lead passes on at once to the requests queued behind it, which are
/// committed and acked; nobody waits for a leader that is gone.
#[tokio::test]
async fn a_leader_that_goes_away_mid_call_hands_the_lead_on() {
    let redis = RedisServer::start().unwrap();
    let api = start_api(&redis, &[]).await;
    let impatient = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &api.urls[0], &metric("warm", 0)).await.0, 202);

    pause_writes(&redis);
    let url = api.urls[1].clone();
    let leader = tokio::spawn(async move {
        impatient
            .post(format!("{url}/metrics"))
            .json(&metric("gone", 1))
            .send()
            .await
    });
    wait_for(&api.urls[0], "the leader's call in flight", |m| {
        m["groupCommits"]["commits"] == 2
    })
    .await;
    let mut queued = JoinSet::new();
    for seq in 2..=6 {
        let (client, url) = (client.clone(), api.urls[0].clone());
        queued.spawn(async move { post(&client, &url, &metric("queued", seq)).await });
    }
    wait_for(&api.urls[0], "5 requests queued", |m| {
        m["groupCommits"]["waiting"] == 5
    })
    .await;
    assert!(leader.await.unwrap().is_err(), "the impatient client gave up");
    wait_for(&api.urls[0], "the lead handed on", |m| {
        m["groupCommits"]["commits"] == 3 && m["groupCommits"]["waiting"] == 0
    })
    .await;
    // And Redis has not run the leader's call yet (reads still work while writes are paused): the next
    // call started because the lead was handed on when the leader went away, not because Redis answered.
    let len: usize = common::stream_len(&redis);
    assert_eq!(len, 1, "the pause ended before the lead was handed on");
    unpause(&redis);
    while let Some(done) = queued.join_next().await {
        let (status, body, _) = done.unwrap();
        assert_eq!(status, 202, "{body}");
    }
    let m = monitoring(&api.urls[0]).await;
    assert_eq!(m["groupCommits"]["requests"], 7, "{m}");
}

fn readings(seq: u64) -> lab_core::Metric {
    lab_core::Metric {
        server_id: "lead".into(),
        timestamp: lab_core::now_ms(),
        metrics: lab_core::Readings {
            cpu: 1.0,
            memory: 2.0,
            disk: 3.0,
            network: None,
            extra: vec![],
        },
        seq: Some(seq),
    }
}

/// The lead is sent to the first queued request, which goes away before it wakes up to take it (its
/// client disconnected at that moment): the lead is not lost with it, the next queued request makes
/// the next call. (Driven below the HTTP layer, so that the request can be dropped at exactly that
/// point.)
#[tokio::test]
async fn a_lead_sent_to_a_request_that_went_away_passes_to_the_next() {
    use system1_http::api::commit::{CommitStats, GroupCommit, Target};
    let redis = RedisServer::start().unwrap();
    let stats = CommitStats::default();
    let commit = std::sync::Arc::new(GroupCommit::new(
        Target {
            redis: redis.client().get_connection_manager().await.unwrap(),
            script: redis::Script::new(system1_http::store::INGEST_SCRIPT),
            partitions: common::partitions(),
            channel: "metrics:pubsub".into(),
            maxlen: 1_000_000,
        },
        stats.clone(),
    ));
    assert_eq!(commit.commit(&[readings(0)]).await.unwrap().len(), 1);

    pause_writes(&redis);
    let leader = {
        let commit = commit.clone();
        tokio::spawn(async move { commit.commit(&[readings(1)]).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stats.commits.get() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader's call did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (two, three) = ([readings(2)], [readings(3)]);
    let mut gone = Box::pin(commit.commit(&two));
    let mut next = Box::pin(commit.commit(&three));
    // Polled once each: both queue behind the parked call.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut gone)
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut next)
            .await
            .is_err()
    );
    assert_eq!(commit.waiting(), 2);
    unpause(&redis);
    assert_eq!(leader.await.unwrap().unwrap().len(), 1);
    // The lead now waits in `gone`'s answer, untaken: no call was made.
    assert_eq!(stats.commits.get(), 2);
    drop(gone);
    let ids = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the lead reached the next request")
        .expect("committed");
    assert_eq!(ids.len(), 1);
    assert_eq!(stats.commits.get(), 3);
    let mut seqs: Vec<u64> = stored(&redis).into_values().map(|(_, seq)| seq).collect();
    seqs.sort();
    assert_eq!(seqs, [0, 1, 3], "the request that went away stored nothing");
}
