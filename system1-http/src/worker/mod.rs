//! Consumer-group workers: read the stream in batches, aggregate, store snapshots, announce, ack.
//!
//! ```text
//! XAUTOCLAIM (entries a dead consumer left pending) or XREADGROUP … > (new entries), on the worker's
//! own connection
//!   └▶ per server: ZRANGE metrics:samples:<id>  → rebuild the windows (lab-core, as System 2)
//!                  add this batch's metrics in order; skip those already there (redeliveries)
//!   └▶ MULTI: ZADD samples · trim them · HSET metrics:latest:<id>
//!             · EVAL: for each metric, PUBLISH metric.processed (windows on each server's last)
//!                     and XADD it to the capped `metrics:processed` stream, numbered · XACK
//! ```
//!
//! **Why the window state lives in Redis.** All the workers of a group share one stream, and Redis hands
//! each entry to whichever worker asks: the metrics of one server are spread over every worker. Windows
//! kept in a worker's memory would each see a part, and contradict one another. So each server's
//! recent samples are a sorted set in Redis (score: timestamp; member: the metric's identity and
//! values), and a worker rebuilds the windows from it for each batch, with the very code System 2 uses.
//! That costs a read per server per batch: the price of statelessness, and part of the lesson.
//!
//! **At least once, counted once.** An entry is acked only after its writes. A worker that dies before
//! acking leaves the entry pending; after `--claim-idle-ms` another worker claims it (`XAUTOCLAIM`) and
//! processes it again. The sample's member is its identity (`serverId`+`seq`+`timestamp`, or the entry
//! id without a `seq`), so a metric already in the set is recognised and not counted twice, nor
//! announced twice.
//!
//! **Entries trimmed while pending.** The stream's cap (see [`crate::api`]) may remove an entry that a
//! consumer has read but not acked. Redis keeps its id in the pending list; the worker that meets it
//! (its own on resuming, or a dead consumer's through `XAUTOCLAIM`) finds no data, acks it so that it
//! blocks nothing, and counts it as lost in [`trimmed_key`].
//!
//! **A known approximation.** Two workers processing the same server at the same instant each rebuild
//! the windows without the other's new metric; each publishes windows that miss one sample. The stored
//! samples are complete, and the server's next update counts both.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use lab_core::Metric;
use lab_core::aggregate::{Added, ServerWindows, WindowSpec, WindowSummaries};
use lab_core::wire::system1;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncCommands, AsyncConnectionConfig, Value};
use tokio_util::sync::CancellationToken;

use crate::config::{RedisArgs, WorkerArgs};
use crate::store::{
    ANNOUNCE_SCRIPT, latest, latest_key, pending_field, processed_count_key, samples_key, trimmed_key,
    version_key,
};

mod reply;
mod samples;

use reply::{Entry, autoclaim_reply_entries, read_reply_entries};
use samples::{Identity, decode_member, encode_member};

/// What the workers of one process count, together. Prometheus counters (shared atomics: a clone
/// counts into the same number), so that the ops port's `/api/monitoring` JSON and its Prometheus page
/// read the very same values (see [`crate::worker_ops`]).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Entries processed (acked).
    pub processed: Counter,
    /// Redelivered metrics recognised and not counted again.
    pub duplicates: Counter,
    /// Entries that were not metrics (acked and dropped).
    pub unreadable: Counter,
    /// Entries claimed from dead consumers.
    pub claimed: Counter,
    /// Batches that failed (Redis errors); their entries stay pending and are retried.
    pub failures: Counter,
    /// Pending entries found trimmed from the stream (read once, never acked, now gone): lost.
    pub trimmed_pending: Counter,
}

/// Most servers whose windows a worker caches; past it, the cache is cleared (and rebuilt on demand).
const CACHE_MAX_SERVERS: usize = 10_000;

/// A worker's cached view of one server's samples.
struct Cached {
    windows: ServerWindows,
    /// Identities of the samples in `windows`.
    known: HashSet<Identity>,
    /// The sample-set version this view matches.
    version: i64,
}

/// The consumer names of this process's workers: `--consumer-name` (else host and pid) plus `-1` … `-N`.
/// Distinct across processes, so that a dead process's entries can be told apart and claimed.
pub fn consumer_names(args: &WorkerArgs) -> Vec<String> {
    let prefix = args.consumer_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "host".into());
        format!("{host}-{}", std::process::id())
    });
    (1..=args.workers).map(|i| format!("{prefix}-{i}")).collect()
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed a batch: how many entries, how many were redeliveries already counted, how many were
    /// unreadable (acked and dropped: they can never succeed).
    Processed {
        /// Entries in the batch.
        entries: usize,
        /// Metrics already in the samples (redelivered): acked, not counted again.
        duplicates: usize,
        /// Entries that are not metrics.
        unreadable: usize,
        /// Entries claimed from a dead consumer.
        claimed: usize,
        /// Pending entries found trimmed from the stream: acked (nothing is left to process) and
        /// counted as lost. Not included in `entries`.
        trimmed: usize,
    },
    /// Nothing to do within the block time.
    Empty,
}

/// One consumer of the group.
pub struct Worker {
    /// Its consumer name.
    pub name: String,
    /// Its own connection for the blocking reads: a blocking XREADGROUP would stall every other command
    /// on a shared multiplexed connection.
    reader: MultiplexedConnection,
    /// To open the reader again after Redis went away (a plain connection does not reconnect).
    client: redis::Client,
    reader_config: AsyncConnectionConfig,
    /// The last step failed: open the reader again before the next one.
    reader_broken: bool,
    /// Read this consumer's own pending entries (read before, never acked) before new ones: after a
    /// failure, and at start.
    resume_pending: bool,
    /// Writes go through the shared, auto-reconnecting connection.
    writer: ConnectionManager,
    stream: String,
    group: String,
    channel: String,
    /// The capped stream of `metric.processed` events, and its cap ([`ANNOUNCE_SCRIPT`]).
    processed: String,
    processed_maxlen: u64,
    spec: WindowSpec,
    capacity: usize,
    batch_size: usize,
    block_ms: usize,
    claim_idle_ms: u64,
    /// Per server, the windows as of a known version of its samples: most batches then read nothing.
    cache: HashMap<String, Cached>,
    /// When dead consumers' entries were last looked for.
    last_claim: Option<std::time::Instant>,
    /// Counters shared with the other workers of the process and the ops endpoints.
    stats: std::sync::Arc<WorkerStats>,
}

impl Worker {
    /// Connects a consumer called `name`.
    pub async fn connect(args: &WorkerArgs, redis: &RedisArgs, name: String) -> anyhow::Result<Worker> {
        let client = redis::Client::open(redis.url()).context("invalid Redis URL")?;
        // The response timeout must exceed the BLOCK time, or every idle read would time out.
        let reader_config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_millis(args.block_ms + 5_000)))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let reader = client
            .get_multiplexed_async_connection_with_config(&reader_config)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to Redis at {}",
                    client.get_connection_info().addr()
                )
            })?;
        let writer_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let writer = client
            .get_connection_manager_with_config(writer_config)
            .await
            .context("cannot connect to Redis")?;
        let spec = WindowSpec::from_base(args.agg_window_ms)?;
        Ok(Worker {
            name,
            reader,
            client: client.clone(),
            reader_config,
            reader_broken: false,
            resume_pending: true,
            writer,
            stream: redis.stream_key.clone(),
            group: args.group.clone(),
            channel: redis.channel.clone(),
            processed: redis.processed_stream.clone(),
            processed_maxlen: redis.processed_maxlen,
            spec,
            capacity: args.buffer_size as usize,
            batch_size: args.batch_size as usize,
            block_ms: args.block_ms as usize,
            claim_idle_ms: args.claim_idle_ms,
            cache: HashMap::new(),
            last_claim: None,
            stats: Default::default(),
        })
    }

    /// Counts into `stats` (shared with the other workers of the process) from now on.
    pub fn with_stats(mut self, stats: std::sync::Arc<WorkerStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Creates the consumer group (and the stream) if absent.
    pub async fn ensure_group(&mut self) -> anyhow::Result<()> {
        let created: redis::RedisResult<()> = self
            .writer
            .xgroup_create_mkstream(&self.stream, &self.group, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e).context("cannot create the consumer group"),
        }
    }

    /// One step: this consumer's own pending entries first (after a failure), else what dead consumers
    /// left, else new entries; process and ack them. A failed step leaves its entries pending; the next
    /// step reconnects and resumes them.
    pub async fn process_batch(&mut self) -> anyhow::Result<Outcome> {
        if self.reader_broken {
            self.reader = self
                .client
                .get_multiplexed_async_connection_with_config(&self.reader_config)
                .await
                .context("cannot reconnect to Redis")?;
            self.reader_broken = false;
        }
        let result = self.step().await;
        if let Ok(Outcome::Processed {
            entries,
            duplicates,
            unreadable,
            claimed,
            trimmed,
        }) = &result
        {
            self.stats.processed.inc_by(*entries as u64);
            self.stats.duplicates.inc_by(*duplicates as u64);
            self.stats.unreadable.inc_by(*unreadable as u64);
            self.stats.claimed.inc_by(*claimed as u64);
            self.stats.trimmed_pending.inc_by(*trimmed as u64);
        }
        if result.is_err() {
            self.reader_broken = true;
            self.resume_pending = true;
            self.cache.clear();
        }
        result
    }

    async fn step(&mut self) -> anyhow::Result<Outcome> {
        if self.resume_pending {
            let reply: Value = self
                .read_group("0", None)
                .query_async(&mut self.reader)
                .await
                .context("XREADGROUP 0 failed")?;
            let own = read_reply_entries(&reply)?;
            if own.is_empty() {
                self.resume_pending = false;
            } else {
                tracing::info!(worker = %self.name, entries = own.len(), "resuming entries read before and never acked");
                return self.process(&own).await;
            }
        }
        // Looking for a dead consumer's entries costs a command: do it a few times per idle period only.
        let claim_every = Duration::from_millis(self.claim_idle_ms / 4);
        let claim_reply = if self.last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
            self.last_claim = Some(std::time::Instant::now());
            redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.name)
                .arg(self.claim_idle_ms)
                .arg("0-0")
                .arg("COUNT")
                .arg(self.batch_size)
                .query_async(&mut self.reader)
                .await
                .context("XAUTOCLAIM failed")?
        } else {
            Value::Nil
        };
        let (claimed, deleted) = autoclaim_reply_entries(&claim_reply)?;
        // Pending entries the stream no longer has (trimmed before their consumer acked them): Redis
        // 7 lists them apart and drops them from the pending list itself. Nothing is left to process:
        // count them as lost, group-wide.
        let trimmed = deleted;
        if trimmed > 0 {
            tracing::warn!(worker = %self.name, trimmed, "pending entries were trimmed from the stream before they were processed: lost");
            let _: i64 = self
                .writer
                .hincr(trimmed_key(&self.stream), pending_field(&self.group), trimmed)
                .await
                .context("counting trimmed entries failed")?;
        }
        let read_reply: Value;
        let (entries, claimed) = if claimed.is_empty() {
            read_reply = self
                .read_group(">", Some(self.block_ms))
                .query_async(&mut self.reader)
                .await
                .context("XREADGROUP failed")?;
            (read_reply_entries(&read_reply)?, 0)
        } else {
            let n = claimed.len();
            tracing::info!(worker = %self.name, claimed = n, "claimed entries left pending by another consumer");
            (claimed, n)
        };
        if entries.is_empty() {
            return Ok(if trimmed > 0 {
                Outcome::Processed {
                    entries: 0,
                    duplicates: 0,
                    unreadable: 0,
                    claimed: 0,
                    trimmed,
                }
            } else {
                Outcome::Empty
            });
        }
        let mut outcome = self.process(&entries).await?;
        if let Outcome::Processed {
            claimed: c,
            trimmed: t,
            ..
        } = &mut outcome
        {
            *c = claimed;
            *t += trimmed;
        }
        Ok(outcome)
    }

    /// `XREADGROUP GROUP <group> <name> COUNT <batch> [BLOCK <ms>] STREAMS <stream> <from>`: read as a
    /// raw [`Value`] and walked by [`read_reply_entries`], borrowing.
    fn read_group(&self, from: &str, block_ms: Option<usize>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.batch_size);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        cmd
    }

    /// Aggregates, stores, announces and acks `entries`.
    ///
    /// An entry without fields is one this consumer read before and that was trimmed from the stream
    /// since (`XREADGROUP … 0` returns its id with no data): it is acked, so that it stops blocking the
    /// consumer's pending list, and counted as lost.
    async fn process(&mut self, entries: &[Entry<'_>]) -> anyhow::Result<Outcome> {
        let (gone, entries): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| e.fields.is_empty());
        let trimmed = gone.len();
        if trimmed > 0 {
            tracing::warn!(worker = %self.name, trimmed, "entries read before were trimmed from the stream before they were processed: lost");
        }
        // Read every entry back into a metric; group them by server, keeping their order.
        let mut unreadable = 0;
        let mut by_server: Vec<(String, Vec<(&str, Metric)>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for entry in &entries {
            match system1::from_stream_fields(entry.field_pairs()) {
                Ok(metric) => {
                    let i = match index.get(&metric.server_id) {
                        Some(&i) => i,
                        None => {
                            index.insert(metric.server_id.clone(), by_server.len());
                            by_server.push((metric.server_id.clone(), Vec::new()));
                            by_server.len() - 1
                        }
                    };
                    by_server[i].1.push((entry.id, metric));
                }
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(entry = %entry.id, error = %e, "unreadable stream entry: acking it so it is not retried forever");
                }
            }
        }
        // Which cached views are still the truth: one round trip for the versions.
        let mut versions = redis::pipe();
        for (server, _) in &by_server {
            versions.get(version_key(server)).zcard(samples_key(server));
        }
        // (An empty pipeline is an error in redis-rs: a batch of only trimmed entries has no servers.)
        let states: Vec<(Option<i64>, usize)> = if by_server.is_empty() {
            Vec::new()
        } else {
            versions
                .query_async(&mut self.writer)
                .await
                .context("reading versions failed")?
        };
        if self.cache.len() > CACHE_MAX_SERVERS {
            self.cache.clear();
        }
        for ((server, _), (version, count)) in by_server.iter().zip(states) {
            self.refresh(server, version.unwrap_or(0), count).await?;
        }

        let mut writes = redis::pipe();
        writes.atomic();
        let mut duplicates = 0;
        let mut touched: Vec<&str> = Vec::new();
        let mut event = Vec::new();
        let mut announce = redis::cmd("EVAL");
        announce
            .arg(ANNOUNCE_SCRIPT)
            .arg(2)
            .arg(&self.processed)
            .arg(processed_count_key(&self.processed))
            .arg(&self.channel)
            .arg(self.processed_maxlen);
        let mut announced = 0;
        for (server, metrics) in &by_server {
            let cached = self.cache.get_mut(server).expect("refreshed above");
            let (windows, known) = (&mut cached.windows, &mut cached.known);
            let mut new_members: Vec<(f64, String)> = Vec::new();
            // This server's metrics not seen before, in order: each is announced.
            let mut fresh: Vec<(&str, &Metric)> = Vec::with_capacity(metrics.len());
            let mut identities = Vec::with_capacity(metrics.len());
            for (id, metric) in metrics {
                let Some(identity) = Identity::of(metric, id) else {
                    unreadable += 1;
                    tracing::warn!(entry = %id, "stream entry id is not <ms>-<seq>: acking it so it is not retried forever");
                    continue;
                };
                if !known.insert(identity) {
                    duplicates += 1;
                    continue;
                }
                fresh.push((id, metric));
                identities.push(identity);
            }
            // All at once: when another worker's newer samples came in first, every one of these is
            // late, and adding them one by one would rebuild the min/max bookkeeping for each.
            let mut added = Vec::with_capacity(fresh.len());
            windows.add_all(fresh.iter().map(|(_, m)| (m.timestamp, &m.metrics)), |a| {
                added.push(a)
            });
            for (((_, metric), identity), added) in fresh.iter().zip(&identities).zip(added) {
                if added != Added::Stale {
                    new_members.push((metric.timestamp, encode_member(identity, metric)));
                }
            }
            // One `metric.processed` event per metric, so that every metric (and its seq) reaches the
            // dashboards; the windows, the server's state after the batch, ride on the last one only:
            // computing and writing 45 numbers for every metric cost more than all the rest.
            let summaries = (!fresh.is_empty()).then(|| windows.summaries());
            for (i, (id, metric)) in fresh.iter().enumerate() {
                let with_windows = (i + 1 == fresh.len()).then_some(()).and(summaries.as_ref());
                event.clear();
                write_processed(&mut event, id, metric, with_windows);
                announce.arg(event.as_slice());
                announced += 1;
            }
            let last = fresh.last().zip(summaries.as_ref());
            let key = samples_key(server);
            if !new_members.is_empty() {
                touched.push(server);
                writes.zadd_multiple(&key, &new_members).ignore();
                writes.incr(version_key(server), 1);
                // Keep the newest `capacity` samples, and none older than every window.
                writes
                    .zremrangebyrank(&key, 0, -(self.capacity as isize) - 1)
                    .ignore();
                if let Some(newest) = windows.newest() {
                    let oldest_useful = newest - *self.spec.lengths_ms().last().unwrap_or(&0) as f64;
                    writes
                        .cmd("ZREMRANGEBYSCORE")
                        .arg(&key)
                        .arg("-inf")
                        .arg(format!("({oldest_useful}"))
                        .ignore();
                }
            }
            if let Some(((id, metric), summaries)) = last {
                let fields = [
                    (latest::SERVER_ID, metric.server_id.clone()),
                    (latest::TIMESTAMP, metric.timestamp.to_string()),
                    (
                        latest::METRICS,
                        serde_json::to_string(&metric.metrics).expect("readings serialize"),
                    ),
                    (latest::SEQ, metric.seq.map(|s| s.to_string()).unwrap_or_default()),
                    (latest::ENTRY_ID, (*id).to_owned()),
                    (
                        latest::WINDOWS,
                        serde_json::to_string(&summaries).expect("windows serialize"),
                    ),
                ];
                writes.hset_multiple(latest_key(server), &fields).ignore();
            }
        }
        if announced > 0 {
            writes.add_command(announce).ignore();
        }
        let ids: Vec<&str> = entries.iter().chain(&gone).map(|e| e.id).collect();
        writes.xack(&self.stream, &self.group, &ids).ignore();
        if trimmed > 0 {
            writes
                .hincr(trimmed_key(&self.stream), pending_field(&self.group), trimmed)
                .ignore();
        }
        let new_versions: Vec<i64> = match writes.query_async(&mut self.writer).await {
            Ok(v) => v,
            Err(e) => {
                // The cached views now hold metrics that were not stored: forget them.
                self.cache.clear();
                return Err(e).context("writing the batch failed");
            }
        };
        for (server, version) in touched.iter().zip(new_versions) {
            let cached = self.cache.get_mut(*server).expect("cached above");
            // If another worker wrote in between, the versions differ by more than one: the next batch
            // of this server notices the mismatch and catches up.
            cached.version = if version == cached.version + 1 {
                version
            } else {
                -1
            };
        }
        Ok(Outcome::Processed {
            entries: entries.len(),
            duplicates,
            unreadable,
            claimed: 0,
            trimmed,
        })
    }

    /// Makes the cached view of `server` match its samples in Redis (`version`, `count` members).
    ///
    /// Same version: nothing to do. Otherwise another worker wrote: fetch only the samples newer than
    /// the newest we have, and if the count still differs (someone inserted an older, late sample, or
    /// this worker never saw the server), rebuild the view from all of them.
    async fn refresh(&mut self, server: &str, version: i64, count: usize) -> anyhow::Result<()> {
        if self
            .cache
            .get(server)
            .is_some_and(|c| c.version == version && c.windows.len() == count)
        {
            return Ok(());
        }
        let key = samples_key(server);
        if let Some(cached) = self.cache.get_mut(server)
            && let Some(newest) = cached.windows.newest()
        {
            let newer: Vec<(String, f64)> = self
                .writer
                .zrangebyscore_withscores(&key, format!("({newest}"), "+inf")
                .await?;
            for (member, score) in &newer {
                if let Some((identity, readings)) = decode_member(member)
                    && cached.known.insert(identity)
                {
                    cached.windows.add(*score, &readings);
                }
            }
            if cached.windows.len() == count {
                cached.version = version;
                return Ok(());
            }
        }
        let samples: Vec<(String, f64)> = self.writer.zrange_withscores(&key, 0, -1).await?;
        let mut windows = ServerWindows::new(&self.spec, self.capacity)?;
        let mut known = HashSet::with_capacity(samples.len());
        for (member, score) in &samples {
            if let Some((identity, readings)) = decode_member(member) {
                windows.add(*score, &readings);
                known.insert(identity);
            }
        }
        self.cache.insert(
            server.to_owned(),
            Cached {
                windows,
                known,
                version,
            },
        );
        Ok(())
    }

    /// Processes batches until `shutdown`; a batch under way is finished and acked first. Errors (Redis
    /// gone) are logged and retried with a backoff: the entries stay pending and are processed later.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut group_ready = false;
        while !shutdown.is_cancelled() {
            if !group_ready {
                match self.ensure_group().await {
                    Ok(()) => group_ready = true,
                    Err(e) => {
                        tracing::warn!(worker = %self.name, error = %format!("{e:#}"), "cannot create the group yet")
                    }
                }
            }
            let result = if group_ready {
                self.process_batch().await
            } else {
                Err(anyhow::anyhow!("no group yet"))
            };
            match result {
                Ok(outcome) => {
                    backoff = Duration::from_millis(100);
                    if let Outcome::Processed {
                        entries, duplicates, ..
                    } = outcome
                    {
                        tracing::debug!(worker = %self.name, entries, duplicates, "processed a batch");
                    }
                }
                Err(e) => {
                    self.stats.failures.inc();
                    tracing::warn!(worker = %self.name, error = %format!("{e:#}"), ?backoff, "batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    group_ready = false;
                }
            }
        }
        tracing::info!(worker = %self.name, "worker stopped");
    }
}

/// A `metric.processed` event, as [`system1::Event::Processed`] serializes, but borrowing the metric and its
/// windows instead of cloning them, into a buffer the worker reuses.
fn write_processed(out: &mut Vec<u8>, entry_id: &str, metric: &Metric, windows: Option<&WindowSummaries>) {
    #[derive(serde::Serialize)]
    struct ProcessedEvent<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(rename = "entryId")]
        entry_id: &'a str,
        payload: Payload<'a>,
    }
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        #[serde(rename = "serverId")]
        server_id: &'a str,
        timestamp: f64,
        metrics: &'a lab_core::Readings,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        windows: Option<&'a WindowSummaries>,
    }
    let event = ProcessedEvent {
        kind: "metric.processed",
        entry_id,
        payload: Payload {
            server_id: &metric.server_id,
            timestamp: metric.timestamp,
            metrics: &metric.metrics,
            seq: metric.seq,
            windows,
        },
    };
    serde_json::to_writer(out, &event).expect("events serialize");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processed_events_are_the_protocols() {
        use lab_core::wire::system1::{Event, Processed};
        let metric = Metric {
            server_id: "s".into(),
            timestamp: 1.5,
            metrics: lab_core::Readings {
                cpu: 12.5,
                memory: 1.0,
                disk: 2.0,
                network: Some(lab_core::Network { rx: 3.0, tx: 4.0 }),
                extra: vec![],
            },
            seq: Some(9),
        };
        let mut windows = ServerWindows::new(&WindowSpec::default(), 10).unwrap();
        windows.add(metric.timestamp, &metric.metrics);
        let summaries = windows.summaries();
        for with in [None, Some(&summaries)] {
            let mut ours = Vec::new();
            write_processed(&mut ours, "1-0", &metric, with);
            let theirs = Event::Processed {
                entry_id: "1-0".into(),
                payload: Processed {
                    server_id: metric.server_id.clone(),
                    timestamp: metric.timestamp,
                    metrics: metric.metrics.clone(),
                    seq: metric.seq,
                    windows: with.cloned(),
                },
            };
            assert_eq!(ours, serde_json::to_vec(&theirs).unwrap());
            assert_eq!(serde_json::from_slice::<Event>(&ours).unwrap(), theirs);
        }
    }
}
