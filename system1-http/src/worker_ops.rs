//! The workers' ops endpoints (`--ops-port`, 4003): what the consumer group is doing.
//!
//! `GET /api/monitoring` reads the group's state from Redis itself (`XLEN`, `XINFO GROUPS`,
//! `XINFO CONSUMERS`, the leases and the trimmed-entry counts of every partition), so it shows every
//! worker of the group, in every process, not only this one's, and who owns which partition. `trimmedUnprocessed` is the number of metrics the stream's cap threw
//! away before this group processed them: `trimmed.unread` (no consumer had read them) plus
//! `trimmed.pending` (a consumer had read them and never acknowledged them). The group's `lag` is
//! Redis's own figure; after a trim it is wrong on Redis 7.0 (it keeps counting the trimmed entries).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{RedisArgs, WorkerArgs};
use crate::store::{Partitions, pending_field, trimmed_key, unread_field};
use crate::worker::WorkerStats;

/// The group's counts of entries trimmed before they were processed: never read, and read but never
/// acknowledged (see [`trimmed_key`]).
type Trimmed = (Option<u64>, Option<u64>);

struct Ops {
    redis: ConnectionManager,
    /// The stream's name (`--stream-key`) and its partitions.
    stream: String,
    partitions: Partitions,
    group: String,
    stats: Arc<WorkerStats>,
    started: std::time::Instant,
    /// The Prometheus page: this process's counters (clones of those in `stats`, so the same numbers)
    /// and the group's trimmed counts.
    registry: Registry,
    /// The group's trimmed counts, read from Redis on each scrape, for the registry to show.
    trimmed: Arc<GroupTrimmed>,
}

/// The group-wide counts of entries trimmed before processing, as a Prometheus collector. They live in
/// Redis (every process of the group adds to them), so a scrape first reads them, then encodes.
#[derive(Debug)]
struct GroupTrimmed {
    group: String,
    /// `(unread, pending)` as last read; `None` until Redis answered. A std `Mutex` is right here: it is
    /// held only to copy two numbers, never across an `.await`.
    counts: std::sync::Mutex<Option<(u64, u64)>>,
}

impl Collector for GroupTrimmed {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((unread, pending)) = *self.counts.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(());
        };
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "trimmed_unprocessed",
            "Stream entries trimmed before this group processed them (whole group, from Redis), by \
             kind: unread (never delivered) or pending (delivered, never acked)",
            None,
            counter.metric_type(),
        )?;
        for (kind, value) in [("unread", unread), ("pending", pending)] {
            let labels = [("group", self.group.as_str()), ("kind", kind)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The ops port's Prometheus registry: this process's counters under their stable names
/// (`system1_worker_…_total`), and the group's trimmed counts.
fn registry(stats: &WorkerStats, trimmed: Arc<GroupTrimmed>) -> Registry {
    let mut registry = Registry::with_prefix("system1_worker");
    for (name, help, counter) in [
        (
            "entries_processed",
            "Stream entries processed and acked",
            &stats.processed,
        ),
        (
            "duplicates",
            "Redelivered metrics recognised and not counted again",
            &stats.duplicates,
        ),
        ("unreadable", "Entries that were not metrics", &stats.unreadable),
        ("claimed", "Entries claimed from dead consumers", &stats.claimed),
        (
            "failed_batches",
            "Batches that failed and will be retried",
            &stats.failures,
        ),
        (
            "trimmed_pending",
            "Pending entries this process found trimmed from the stream before they were processed (lost)",
            &stats.trimmed_pending,
        ),
        (
            "partitions_taken",
            "Partitions this process's workers took (at start, from a departed worker, or back after an error)",
            &stats.takeovers,
        ),
        (
            "leases_lost",
            "Partitions lost to another worker while owned (the lease lapsed)",
            &stats.leases_lost,
        ),
        (
            "entries_replayed",
            "Entries replayed into the windows when a partition was taken over",
            &stats.replayed,
        ),
        (
            "servers_evicted",
            "Servers whose recent windows were dropped because a worker held too many",
            &stats.evicted,
        ),
    ] {
        registry.register(name, help, counter.clone());
    }
    registry.register_collector(Box::new(trimmed));
    registry
}

/// Binds the ops port and serves it until `shutdown`.
pub async fn serve(
    args: &WorkerArgs,
    redis: &RedisArgs,
    stats: Arc<WorkerStats>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let client = redis::Client::open(redis.url()).context("invalid Redis URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let connection = client.get_connection_manager_lazy(config)?;
    let address = std::net::SocketAddr::new(args.ops_host, args.ops_port);
    let hint =
        "--ops-port / SYSTEM1_WORKER_OPS_PORT, or the address with --ops-host / SYSTEM1_WORKER_OPS_HOST";
    let listener = lab_ops::listen(address, hint).await?;
    let address = listener.local_addr()?;
    let trimmed = Arc::new(GroupTrimmed {
        group: args.group.clone(),
        counts: std::sync::Mutex::new(None),
    });
    let state = Arc::new(Ops {
        redis: connection,
        stream: redis.stream_key.clone(),
        partitions: redis.partitions(),
        group: args.group.clone(),
        registry: registry(&stats, trimmed.clone()),
        stats,
        started: std::time::Instant::now(),
        trimmed,
    });
    let app =
        lab_ops::http::ops_routes(get(health), get(monitoring), get(prometheus), None).with_state(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    });
    Ok((address, task))
}

async fn health(State(ops): State<Arc<Ops>>) -> Response {
    let mut redis = ops.redis.clone();
    let ok = tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("PING").query_async::<String>(&mut redis),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let body = serde_json::json!({"status": if ok { "ok" } else { "degraded" }, "redis": if ok { "ready" } else { "unavailable" }});
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
        .into_response()
}

/// `XINFO` replies as a list of field/value maps.
fn to_maps(value: redis::Value) -> Vec<serde_json::Map<String, serde_json::Value>> {
    fn json(v: &redis::Value) -> serde_json::Value {
        match v {
            redis::Value::Int(i) => serde_json::json!(i),
            redis::Value::BulkString(b) => serde_json::json!(String::from_utf8_lossy(b)),
            redis::Value::SimpleString(s) => serde_json::json!(s),
            redis::Value::Nil => serde_json::Value::Null,
            other => serde_json::json!(format!("{other:?}")),
        }
    }
    let redis::Value::Array(items) = value else {
        return vec![];
    };
    items
        .into_iter()
        .filter_map(|item| match item {
            redis::Value::Array(pairs) => Some(
                pairs
                    .chunks(2)
                    .filter_map(|kv| match &kv[0] {
                        redis::Value::BulkString(k) => {
                            Some((String::from_utf8_lossy(k).into_owned(), json(&kv[1])))
                        }
                        redis::Value::SimpleString(k) => Some((k.clone(), json(&kv[1]))),
                        _ => None,
                    })
                    .collect(),
            ),
            redis::Value::Map(pairs) => Some(
                pairs
                    .iter()
                    .filter_map(|(k, v)| match k {
                        redis::Value::BulkString(k) => {
                            Some((String::from_utf8_lossy(k).into_owned(), json(v)))
                        }
                        redis::Value::SimpleString(k) => Some((k.clone(), json(v))),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The group's trimmed counts `(unread, pending)`, summed over the partitions.
async fn read_trimmed(ops: &Ops) -> redis::RedisResult<(u64, u64)> {
    let mut pipe = redis::pipe();
    for stream in ops.partitions.streams() {
        pipe.cmd("HMGET")
            .arg(trimmed_key(&stream))
            .arg(unread_field(&ops.group))
            .arg(pending_field(&ops.group));
    }
    let counts: Vec<Trimmed> = pipe.query_async(&mut ops.redis.clone()).await?;
    Ok(counts.into_iter().fold((0, 0), |(u, p), (unread, pending)| {
        (u + unread.unwrap_or(0), p + pending.unwrap_or(0))
    }))
}

/// A number in an `XINFO` map, if it is one.
fn number(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<i64> {
    map.get(key).and_then(|v| v.as_i64())
}

/// This process's own counts in the workers' monitoring document (the workers of this process only;
/// the rest of the document is the whole group's, from Redis).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThisProcess {
    /// Entries processed (acked).
    pub processed: u64,
    /// Metrics counted already (re-sent or redelivered): acked, not counted again.
    pub duplicates: u64,
    /// Entries that were not metrics.
    pub unreadable: u64,
    /// Entries claimed from other consumers.
    pub claimed: u64,
    /// Batches that failed and were retried.
    pub failed_batches: u64,
    /// Pending entries found trimmed from the stream (lost).
    pub trimmed_pending: u64,
    /// Partitions taken.
    pub takeovers: u64,
    /// Partitions lost to another worker while owned.
    pub leases_lost: u64,
    /// Entries replayed into the windows on takeovers.
    pub replayed: u64,
    /// Servers whose recent windows were dropped (too many for one worker).
    pub evicted: u64,
    /// `processed` over the process's life, per second.
    pub processed_per_sec_average: f64,
}

/// The group in the workers' monitoring document: its figures summed over the partitions.
#[derive(Debug, serde::Serialize)]
pub struct GroupSummary {
    /// The consumer group (`--group`).
    pub name: String,
    /// Consumers that have read from any partition.
    pub consumers: usize,
    /// Entries read and not yet acked, in all partitions.
    pub pending: i64,
    /// Entries not yet read by the group, in all partitions (`null` if Redis could not say for one).
    pub lag: Option<i64>,
}

/// One partition in the workers' monitoring document.
#[derive(Debug, serde::Serialize)]
pub struct PartitionSummary {
    /// Its number.
    pub partition: usize,
    /// Its stream.
    pub stream: String,
    /// Entries in it.
    pub length: u64,
    /// The worker that holds its lease (`null`: none now).
    pub owner: Option<String>,
    /// The group's pending entries in it.
    pub pending: Option<i64>,
    /// The group's lag in it.
    pub lag: Option<i64>,
}

/// Entries trimmed before the group processed them, by kind (see [`trimmed_key`]).
#[derive(Debug, serde::Serialize)]
pub struct TrimmedCounts {
    /// Never delivered to a consumer.
    pub unread: u64,
    /// Delivered, never acked.
    pub pending: u64,
}

/// The workers' `GET /api/monitoring` document (`503` with [`WorkerMonitoringError`] when Redis does
/// not answer).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMonitoring {
    /// Always `"worker"`: which of System 1's roles answers.
    pub role: &'static str,
    /// The stream's name (`--stream-key`).
    pub stream: String,
    /// Entries in all its partitions.
    pub stream_length: u64,
    /// The group, summed over the partitions (`null` before the group exists).
    pub group: Option<GroupSummary>,
    /// Every consumer, as `XINFO CONSUMERS` shows it (its `pending` summed over the partitions, its
    /// `idle` and `inactive` the least among them).
    pub consumers: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Each partition: its length, owner, pending and lag.
    pub partitions: Vec<PartitionSummary>,
    /// `trimmed.unread + trimmed.pending`: metrics the stream's cap threw away unprocessed.
    pub trimmed_unprocessed: u64,
    /// The same, by kind.
    pub trimmed: TrimmedCounts,
    /// This process's own counts.
    pub this_process: ThisProcess,
}

/// The workers' monitoring document when Redis does not answer.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerMonitoringError {
    /// Always `"worker"`.
    pub role: &'static str,
    /// What failed.
    pub error: String,
    /// This process's own counts (they need no Redis).
    pub this_process: ThisProcess,
}

/// `GET /api/monitoring`: the whole group, from Redis. Per partition (`partitions`): its stream's
/// length, its owner (the lease), and the group's `pending`/`lag` there; summed over them, the figures
/// of one stream as before partitions (`streamLength`, `group`, `consumers`), so that a reader of the
/// single-stream layout reads the same fields.
async fn monitoring(State(ops): State<Arc<Ops>>) -> Response {
    let mut redis = ops.redis.clone();
    let mut pipe = redis::pipe();
    for (p, stream) in ops.partitions.streams().iter().enumerate() {
        pipe.cmd("XLEN")
            .arg(stream)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
            .arg(&ops.group)
            .cmd("GET")
            .arg(ops.partitions.lease(p, &ops.group));
    }
    // (A partition's stream may not exist yet: XINFO fails for it, and it shows as empty.)
    let replies: redis::RedisResult<Vec<redis::RedisResult<redis::Value>>> =
        pipe.ignore_errors().query_async(&mut redis).await;
    let trimmed = match replies {
        Ok(_) => read_trimmed(&ops).await,
        Err(ref e) => Err(e.clone()),
    };
    let s = &ops.stats;
    let this_process = ThisProcess {
        processed: s.processed.get(),
        duplicates: s.duplicates.get(),
        unreadable: s.unreadable.get(),
        claimed: s.claimed.get(),
        failed_batches: s.failures.get(),
        trimmed_pending: s.trimmed_pending.get(),
        takeovers: s.takeovers.get(),
        leases_lost: s.leases_lost.get(),
        replayed: s.replayed.get(),
        evicted: s.evicted.get(),
        processed_per_sec_average: s.processed.get() as f64 / ops.started.elapsed().as_secs_f64().max(1.0),
    };
    let (replies, (unread, pending)) = match (replies, trimmed) {
        (Ok(replies), Ok(trimmed)) => (replies, trimmed),
        (Err(e), _) | (_, Err(e)) => {
            let body = WorkerMonitoringError {
                role: "worker",
                error: format!("Redis is unavailable: {e}"),
                this_process,
            };
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
    };
    let mut stream_length = 0;
    let mut group_pending = 0;
    let mut group_lag = Some(0);
    let mut group_found = false;
    let mut consumers: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    let mut partitions = Vec::new();
    for (p, chunk) in replies.chunks(4).enumerate() {
        let ok = |i: usize| chunk.get(i).and_then(|r| r.as_ref().ok()).cloned();
        let length = ok(0)
            .and_then(|v| redis::from_redis_value::<u64>(v).ok())
            .unwrap_or(0);
        stream_length += length;
        let group = ok(1)
            .map(to_maps)
            .unwrap_or_default()
            .into_iter()
            .find(|g| g.get("name").and_then(|n| n.as_str()) == Some(ops.group.as_str()));
        if let Some(g) = &group {
            group_found = true;
            group_pending += number(g, "pending").unwrap_or(0);
            group_lag = group_lag.zip(number(g, "lag")).map(|(a, b)| a + b);
        }
        for c in ok(2).map(to_maps).unwrap_or_default() {
            let name = c.get("name").cloned();
            match consumers
                .iter_mut()
                .find(|seen| seen.get("name") == name.as_ref())
            {
                Some(seen) => {
                    let add = number(seen, "pending").unwrap_or(0) + number(&c, "pending").unwrap_or(0);
                    seen.insert("pending".into(), add.into());
                    for key in ["idle", "inactive"] {
                        if let (Some(a), Some(b)) = (number(seen, key), number(&c, key)) {
                            seen.insert(key.into(), a.min(b).into());
                        }
                    }
                }
                None => consumers.push(c),
            }
        }
        partitions.push(PartitionSummary {
            partition: p,
            stream: ops.partitions.stream(p),
            length,
            owner: ok(3).and_then(|v| redis::from_redis_value::<String>(v).ok()),
            pending: group.as_ref().and_then(|g| number(g, "pending")),
            lag: group.as_ref().and_then(|g| number(g, "lag")),
        });
    }
    let group = group_found.then(|| GroupSummary {
        name: ops.group.clone(),
        consumers: consumers.len(),
        pending: group_pending,
        lag: group_lag,
    });
    Json(WorkerMonitoring {
        role: "worker",
        stream: ops.stream.clone(),
        stream_length,
        group,
        consumers,
        partitions,
        trimmed_unprocessed: unread + pending,
        trimmed: TrimmedCounts { unread, pending },
        this_process,
    })
    .into_response()
}

async fn prometheus(State(ops): State<Arc<Ops>>) -> Response {
    // The group-wide counts first (from Redis); if Redis is away, the page shows the last ones read.
    match read_trimmed(&ops).await {
        Ok((unread, pending)) => {
            *ops.trimmed.counts.lock().unwrap_or_else(|e| e.into_inner()) = Some((unread, pending));
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the trimmed counts for Prometheus"),
    }
    lab_ops::http::prometheus(&ops.registry)
}
