//! Consumer-group workers: each owns some of the stream's partitions, keeps their servers' windows in
//! memory, and commits every batch (snapshots, announcements, acks) in one script.
//!
//! ```text
//! every lease/3: heartbeat (the group's live members) · renew this worker's leases · give back what
//!                is over its fair share (partitions ÷ members) · take free partitions up to it
//!   └▶ a partition taken (or recovered after an error): claim all its pending entries, rebuild its
//!      servers' windows from its recent entries already processed, then process the claimed ones
//! XREADGROUP … STREAMS <its partitions> > > … (one blocking read, on the worker's own connection)
//!   └▶ per partition, per server: add the batch's metrics to the windows held in memory (lab-core,
//!      as System 2), skipping those already counted (a client's retry)
//!   └▶ EVALSHA commit: lease still ours? · HSET metrics:latest:<id> · PUBLISH and XADD each
//!      metric.processed, numbered · XACK · renew the lease
//! ```
//!
//! **Why partitions with one owner each.** If every worker took whichever entries Redis handed it,
//! the metrics of one server would be spread over all of them, and windows held in a worker's memory
//! would each see a part. The stream is therefore cut into partitions by server ([`Partitions`]), and
//! each partition is read by one worker at a time: that worker sees every metric of its servers, in
//! order, and its windows in memory are the truth. (Before, the windows lived in Redis, as a sorted set
//! per server read back for every batch: exact, and the slowest part of System 1.) This is how Kafka's
//! consumer groups and Kinesis's shards work: scaling out is adding owners, and the unit that moves is
//! a partition.
//!
//! **Who owns what: leases, not one consumer group per partition.** A partition's owner is the name in
//! its lease key ([`Partitions::lease`]), set with `NX` and a time to live (`--lease-ms`), renewed every
//! third of it. A worker that dies stops renewing; after at most the lease, another takes the partition.
//! A worker takes no more than its fair share (partitions ÷ live members, rounded up, the members
//! counted by heartbeats in [`Partitions::members`]), and gives back what is over it when workers join,
//! so the partitions spread over everyone. (One consumer group per partition would still let two
//! workers read one partition at once; the lease is what makes an owner.) The lease is also a fence:
//! the commit script writes nothing unless the lease is still the worker's, so a worker that stalled
//! past its lease and wakes up cannot overwrite its successor's state.
//!
//! **Taking over, exactly.** A worker that takes a partition has no windows for its servers. They are
//! rebuilt from Redis: the group's `last-delivered-id` says which entries were handed out; of those,
//! the pending ones (read, never committed) are claimed (`XAUTOCLAIM`, all of them, at once: the lease
//! says their reader is gone) and processed as new; the others were committed, and are replayed into
//! the windows without being announced again. Replayed are the entries that arrived within the longest
//! window (plus [`REBUILD_SLACK_MS`] for clocks), which is all the windows can contain; so the windows
//! after a takeover equal those of an uninterrupted run. The same rebuild follows a failed batch (Redis
//! gone mid-batch), whose metrics the windows in memory already held.
//!
//! **At least once, counted once.** An entry is acked only by the script that stores what it changed,
//! so a worker that dies before committing leaves it pending, and the partition's next owner
//! processes it. A client that re-sends a metric (its `202` was lost) appends it again under a new id:
//! the worker recognises its identity (`serverId`+`seq`+`timestamp`, or the entry id without a `seq`)
//! among its server's recent ones (the last 2 × `--buffer-size`) and does not count it twice.
//!
//! **Entries trimmed while pending.** The stream's cap (see [`crate::api`]) may remove an entry that a
//! consumer has read but not acked. Redis keeps its id in the pending list; the worker that meets it
//! (its own on resuming, or a dead consumer's when claiming) finds no data, acks it so that it blocks
//! nothing, and counts it as lost in [`crate::store::trimmed_key`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab_core::Metric;
use lab_core::aggregate::{ServerWindows, WindowSpec};
use lab_core::wire::system1;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Value};
use tokio_util::sync::CancellationToken;

use crate::config::{RedisArgs, WorkerArgs};
use crate::store::{
    COMMIT_SCRIPT, HEARTBEAT_SCRIPT, LEAVE_SCRIPT, Partitions, RELEASE_SCRIPT, RENEW_SCRIPT, latest_key,
    processed_count_key,
};

mod identity;
mod ownership;
mod reply;

use identity::{Identity, Known};
use reply::{Entry, autoclaim_reply_entries, read_reply_streams};

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
    /// Partitions this process's workers took (at start, from a dead or departed worker, or back
    /// after an error).
    pub takeovers: Counter,
    /// Partitions lost to another worker while owned (the lease lapsed: the worker stalled, or Redis
    /// was away too long); the batch under way was not committed, and the new owner redoes it.
    pub leases_lost: Counter,
    /// Entries replayed into the windows when a partition was taken over (processed before, not
    /// announced again).
    pub replayed: Counter,
    /// Servers whose windows were dropped while still recent because a worker held
    /// [`MAX_SERVERS_PER_WORKER`]: their next windows miss what came before.
    pub evicted: Counter,
}

/// Most servers whose windows one worker holds. Past it, the least recently seen ones are dropped (and
/// counted in [`WorkerStats::evicted`]): a bound on memory for a group given far more servers than it
/// was sized for. (A server silent for longer than the longest window is dropped anyway, and that
/// loses nothing: its next metric starts every window afresh.)
pub const MAX_SERVERS_PER_WORKER: usize = 100_000;

/// How long a stopping worker lets the batch under way finish (see [`Worker::run`]).
pub const FINISH_GRACE: Duration = Duration::from_secs(5);

/// How often a worker that owns less than its fair share looks for partitions to take (given back by
/// a worker that saw it join, or lapsed): the longest a partition given back waits for a new owner.
pub const POLL_UNDER_SHARE: Duration = Duration::from_millis(100);

/// How long a worker waits, the first time, between saying it is alive and counting the live
/// workers: workers started together (one process's `--workers`, or a whole deployment) then see
/// each other before taking partitions, and take their shares at once instead of one taking all and
/// giving half back a moment later.
pub const JOIN_WAIT: Duration = Duration::from_millis(100);

/// How much earlier than the longest window a takeover starts replaying a partition's entries, in ms
/// of arrival time, to allow for metrics whose timestamps run behind their arrival (clock skew,
/// delays). A window is exact after a takeover if its metrics arrived no more than this late.
pub const REBUILD_SLACK_MS: u64 = 5_000;

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
        /// Metrics already counted (re-sent or redelivered): acked, not counted again.
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

impl Outcome {
    /// Both outcomes' counts together (a step may process several partitions).
    fn and(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Empty, o) | (o, Outcome::Empty) => o,
            (
                Outcome::Processed {
                    entries: a,
                    duplicates: b,
                    unreadable: c,
                    claimed: d,
                    trimmed: e,
                },
                Outcome::Processed {
                    entries: f,
                    duplicates: g,
                    unreadable: h,
                    claimed: i,
                    trimmed: j,
                },
            ) => Outcome::Processed {
                entries: a + f,
                duplicates: b + g,
                unreadable: c + h,
                claimed: d + i,
                trimmed: e + j,
            },
        }
    }

    /// Entries claimed and entries found trimmed, nothing processed (yet).
    fn claims(claimed: usize, trimmed: usize) -> Outcome {
        if claimed == 0 && trimmed == 0 {
            return Outcome::Empty;
        }
        Outcome::Processed {
            entries: 0,
            duplicates: 0,
            unreadable: 0,
            claimed,
            trimmed,
        }
    }
}

/// A server's windows, as the owner of its partition holds them.
struct ServerState {
    windows: ServerWindows,
    known: Known,
    /// When its last metric was processed or replayed: servers silent for longer than the longest
    /// window are dropped.
    last_seen: Instant,
}

impl ServerState {
    /// No metrics yet; windows of `spec` over the last `capacity` samples (as System 2's buffer), and
    /// the identities of twice as many.
    fn new(spec: &WindowSpec, capacity: usize, now: Instant) -> ServerState {
        ServerState {
            windows: ServerWindows::new(spec, capacity).expect("the spec was checked at start"),
            known: Known::new(2 * capacity),
            last_seen: now,
        }
    }
}

/// A partition this worker owns.
struct Owned {
    /// Its stream, lease and trimmed-counts keys.
    stream: String,
    lease: String,
    trimmed: String,
    /// Its servers' windows: exact as of everything committed, unless `rebuild`.
    servers: HashMap<String, ServerState>,
    /// The windows must be rebuilt from the stream before the next batch (just taken; or a batch
    /// failed after its metrics were added to them).
    rebuild: bool,
    /// Read this consumer's own pending entries of the partition before new ones.
    resume_pending: bool,
}

/// The scripts a worker runs (`EVALSHA`, loaded again by redis-rs if Redis forgot them).
struct Scripts {
    commit: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    heartbeat: redis::Script,
    leave: redis::Script,
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
    /// Writes go through the shared, auto-reconnecting connection.
    writer: ConnectionManager,
    partitions: Partitions,
    group: String,
    channel: String,
    /// The capped stream of `metric.processed` events, and its cap ([`COMMIT_SCRIPT`]).
    processed: String,
    processed_maxlen: u64,
    spec: WindowSpec,
    capacity: usize,
    batch_size: usize,
    block_ms: u64,
    claim_idle_ms: u64,
    lease_ms: u64,
    /// The partitions this worker owns, by number.
    owned: BTreeMap<usize, Owned>,
    /// When the leases were last renewed (and the fair share looked at).
    last_maintenance: Option<Instant>,
    /// The fair share at the last look: while it owns fewer, the worker looks again every
    /// [`POLL_UNDER_SHARE`], so that partitions given back by others are taken at once.
    share: usize,
    /// When stalled consumers' entries in owned partitions were last looked for.
    last_claim: Option<Instant>,
    scripts: Scripts,
    /// Counters shared with the other workers of the process and the ops endpoints.
    stats: Arc<WorkerStats>,
}

impl Worker {
    /// Connects a consumer called `name`.
    pub async fn connect(args: &WorkerArgs, redis: &RedisArgs, name: String) -> anyhow::Result<Worker> {
        if args.lease_ms < 3 * args.block_ms {
            anyhow::bail!(
                "--lease-ms ({}) must be at least three times --block-ms ({}): a worker renews its \
                 leases between reads, and would lose them while blocked",
                args.lease_ms,
                args.block_ms
            );
        }
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
            writer,
            partitions: redis.partitions(),
            group: args.group.clone(),
            channel: redis.channel.clone(),
            processed: redis.processed_stream.clone(),
            processed_maxlen: redis.processed_maxlen,
            spec,
            capacity: args.buffer_size as usize,
            batch_size: args.batch_size as usize,
            block_ms: args.block_ms,
            claim_idle_ms: args.claim_idle_ms,
            lease_ms: args.lease_ms,
            owned: BTreeMap::new(),
            last_maintenance: None,
            share: 0,
            last_claim: None,
            scripts: Scripts {
                commit: redis::Script::new(COMMIT_SCRIPT),
                renew: redis::Script::new(RENEW_SCRIPT),
                release: redis::Script::new(RELEASE_SCRIPT),
                heartbeat: redis::Script::new(HEARTBEAT_SCRIPT),
                leave: redis::Script::new(LEAVE_SCRIPT),
            },
            stats: Default::default(),
        })
    }

    /// Counts into `stats` (shared with the other workers of the process) from now on.
    pub fn with_stats(mut self, stats: Arc<WorkerStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The partitions this worker owns now, by number.
    pub fn owned_partitions(&self) -> Vec<usize> {
        self.owned.keys().copied().collect()
    }

    /// Creates the consumer group (and the stream) of every partition, where absent.
    pub async fn ensure_group(&mut self) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for stream in self.partitions.streams() {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM");
        }
        let results: Vec<redis::RedisResult<Value>> =
            pipe.ignore_errors().query_async(&mut self.writer).await?;
        for result in results {
            match result {
                Ok(_) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e).context("cannot create the consumer group"),
            }
        }
        Ok(())
    }

    /// One step: renew the leases and take or give partitions when due; rebuild what must be; then
    /// this consumer's own pending entries (after a takeover or a failure), else what stalled
    /// consumers left, else new entries; process and commit them. A failed step leaves its entries
    /// pending; the next step reconnects, rebuilds and resumes them.
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
            // Whatever was under way may have reached the windows and not Redis: rebuild them all.
            for owned in self.owned.values_mut() {
                owned.rebuild = true;
            }
            // And look at the leases again at once: Redis may have been away longer than them.
            self.last_maintenance = None;
        }
        result
    }

    async fn step(&mut self) -> anyhow::Result<Outcome> {
        let renew_every = Duration::from_millis(self.lease_ms / 3);
        let every = if self.owned.len() < self.share {
            POLL_UNDER_SHARE.min(renew_every)
        } else {
            renew_every
        };
        let due = self.last_maintenance.is_none_or(|t| t.elapsed() >= every);
        if due {
            self.maintain().await?;
        }
        let mut outcome = Outcome::Empty;
        let rebuild: Vec<usize> = self
            .owned
            .iter()
            .filter(|(_, o)| o.rebuild)
            .map(|(&p, _)| p)
            .collect();
        for p in rebuild {
            outcome = outcome.and(self.adopt(p).await?);
        }
        if self.owned.is_empty() {
            // Nothing to read: wait for the next look at the partitions.
            tokio::time::sleep(POLL_UNDER_SHARE.min(Duration::from_millis(self.lease_ms / 3))).await;
            return Ok(outcome);
        }

        // This consumer's own pending entries first: read before and never committed.
        let resuming: Vec<usize> = self
            .owned
            .iter()
            .filter(|(_, o)| o.resume_pending)
            .map(|(&p, _)| p)
            .collect();
        if !resuming.is_empty() {
            let reply: Value = self
                .read_group(&resuming, "0", None)
                .query_async(&mut self.reader)
                .await
                .context("XREADGROUP 0 failed")?;
            let streams = read_reply_streams(&reply)?;
            let mut any = false;
            for &p in &resuming {
                let stream = &self.owned[&p].stream;
                let entries = streams
                    .iter()
                    .find(|(s, _)| s == stream)
                    .map(|(_, e)| e.as_slice())
                    .unwrap_or(&[]);
                if entries.is_empty() {
                    self.owned.get_mut(&p).expect("owned").resume_pending = false;
                } else {
                    any = true;
                    tracing::info!(worker = %self.name, partition = p, entries = entries.len(), "resuming entries read before and never committed");
                    outcome = outcome.and(self.process(p, entries).await?);
                }
            }
            if any {
                return Ok(outcome);
            }
        }

        // Entries left pending in an owned partition by a consumer that stalled (a former owner that
        // read after its lease ran out): a few looks per idle period.
        let claim_every = Duration::from_millis(self.claim_idle_ms / 4);
        if self.last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
            self.last_claim = Some(Instant::now());
            let owned: Vec<usize> = self.owned.keys().copied().collect();
            let mut claimed_any = false;
            for p in owned {
                let reply: Value = redis::cmd("XAUTOCLAIM")
                    .arg(&self.owned[&p].stream)
                    .arg(&self.group)
                    .arg(&self.name)
                    .arg(self.claim_idle_ms)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(self.batch_size)
                    .query_async(&mut self.reader)
                    .await
                    .context("XAUTOCLAIM failed")?;
                let (claimed, deleted) = autoclaim_reply_entries(&reply)?;
                if deleted > 0 {
                    self.count_trimmed(p, deleted).await?;
                    outcome = outcome.and(Outcome::claims(0, deleted));
                }
                if !claimed.is_empty() {
                    claimed_any = true;
                    tracing::info!(worker = %self.name, partition = p, claimed = claimed.len(), "claimed entries left pending by another consumer");
                    let done = self.process(p, &claimed).await?;
                    outcome = outcome.and(done).and(Outcome::claims(claimed.len(), 0));
                }
            }
            if claimed_any {
                return Ok(outcome);
            }
        }

        // New entries, from every owned partition at once.
        let owned: Vec<usize> = self.owned.keys().copied().collect();
        // (Without blocking if this step did something already: its outcome is due.)
        let block = (outcome == Outcome::Empty).then(|| self.block_ms.min(self.lease_ms / 3));
        let reply: Value = self
            .read_group(&owned, ">", block)
            .query_async(&mut self.reader)
            .await
            .context("XREADGROUP failed")?;
        let streams = read_reply_streams(&reply)?;
        for (stream, entries) in &streams {
            if entries.is_empty() {
                continue;
            }
            // (A partition lost while committing another of this read is no longer in `owned`.)
            let Some(&p) = owned
                .iter()
                .find(|&&p| self.owned.get(&p).is_some_and(|o| o.stream == *stream))
            else {
                continue;
            };
            outcome = outcome.and(self.process(p, entries).await?);
        }
        Ok(outcome)
    }

    /// `XREADGROUP GROUP <group> <name> COUNT <batch> [BLOCK <ms>] STREAMS <partitions…> <from…>`:
    /// read as a raw [`Value`] and walked by [`read_reply_streams`], borrowing.
    fn read_group(&self, partitions: &[usize], from: &str, block_ms: Option<u64>) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.batch_size);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS");
        for p in partitions {
            cmd.arg(&self.owned[p].stream);
        }
        for _ in partitions {
            cmd.arg(from);
        }
        cmd
    }

    /// Adds `count` entries of partition `p`, found trimmed while pending, to the group's lost count.
    async fn count_trimmed(&mut self, p: usize, count: usize) -> anyhow::Result<()> {
        tracing::warn!(worker = %self.name, partition = p, trimmed = count, "pending entries were trimmed from the stream before they were processed: lost");
        let _: i64 = redis::cmd("HINCRBY")
            .arg(&self.owned[&p].trimmed)
            .arg(crate::store::pending_field(&self.group))
            .arg(count)
            .query_async(&mut self.writer)
            .await
            .context("counting trimmed entries failed")?;
        Ok(())
    }

    /// Aggregates, stores, announces and acks `entries` of partition `p`, in one script
    /// ([`COMMIT_SCRIPT`]).
    ///
    /// An entry without fields is one this consumer read before and that was trimmed from the stream
    /// since (`XREADGROUP … 0` returns its id with no data): it is acked, so that it stops blocking the
    /// consumer's pending list, and counted as lost.
    async fn process(&mut self, p: usize, entries: &[Entry<'_>]) -> anyhow::Result<Outcome> {
        let (gone, entries): (Vec<&Entry>, Vec<&Entry>) = entries.iter().partition(|e| e.fields.is_empty());
        let trimmed = gone.len();
        if trimmed > 0 {
            tracing::warn!(worker = %self.name, partition = p, trimmed, "entries read before were trimmed from the stream before they were processed: lost");
        }
        // Read every entry back into a metric; group them by server, keeping their order.
        let mut unreadable = 0;
        let mut by_server: Vec<(String, Vec<(&str, Metric)>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for entry in &entries {
            match system1::from_stream_fields(entry.field_pairs()) {
                Ok(metric) => {
                    let i = *index.entry(metric.server_id.clone()).or_insert_with(|| {
                        by_server.push((metric.server_id.clone(), Vec::new()));
                        by_server.len() - 1
                    });
                    by_server[i].1.push((entry.id, metric));
                }
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(entry = %entry.id, error = %e, "unreadable stream entry: acking it so it is not retried forever");
                }
            }
        }

        let owned = self.owned.get_mut(&p).expect("processing an owned partition");
        let mut duplicates = 0;
        let mut events: Vec<Vec<u8>> = Vec::new();
        let mut snapshots: Vec<(String, [String; 6])> = Vec::new();
        let now = Instant::now();
        for (server, metrics) in &by_server {
            let state = owned
                .servers
                .entry(server.clone())
                .or_insert_with(|| ServerState::new(&self.spec, self.capacity, now));
            state.last_seen = now;
            // This server's metrics not counted before, in order: each is announced.
            let mut fresh: Vec<(&str, &Metric)> = Vec::with_capacity(metrics.len());
            for (id, metric) in metrics {
                let Some(identity) = Identity::of(metric, id) else {
                    unreadable += 1;
                    tracing::warn!(entry = %id, "stream entry id is not <ms>-<seq>: acking it so it is not retried forever");
                    continue;
                };
                if !state.known.insert(identity) {
                    duplicates += 1;
                    tracing::debug!(entry = %id, %identity, "a metric counted already (re-sent): acked, not counted again");
                    continue;
                }
                fresh.push((id, metric));
            }
            if fresh.is_empty() {
                continue;
            }
            // All at once: late metrics among them would otherwise rebuild the min/max bookkeeping
            // for each.
            state
                .windows
                .add_all(fresh.iter().map(|(_, m)| (m.timestamp, &m.metrics)), |_| {});
            // One `metric.processed` event per metric, so that every metric (and its seq) reaches the
            // dashboards; the windows, the server's state after the batch, ride on the last one only:
            // computing and writing 45 numbers for every metric cost more than all the rest.
            let summaries = state.windows.summaries();
            for (i, (id, metric)) in fresh.iter().enumerate() {
                let with_windows = (i + 1 == fresh.len()).then_some(&summaries);
                let mut event = Vec::with_capacity(256);
                system1::write_processed(&mut event, id, metric, with_windows);
                events.push(event);
            }
            let (id, metric) = fresh.last().expect("not empty");
            // The fields of `store::latest`, in its order: COMMIT_SCRIPT names them in that order (the
            // store's test holds the names).
            snapshots.push((
                latest_key(server),
                [
                    metric.server_id.clone(),
                    metric.timestamp.to_string(),
                    serde_json::to_string(&metric.metrics).expect("readings serialize"),
                    metric.seq.map(|s| s.to_string()).unwrap_or_default(),
                    (*id).to_owned(),
                    serde_json::to_string(&summaries).expect("windows serialize"),
                ],
            ));
        }

        let mut commit = self.scripts.commit.prepare_invoke();
        commit
            .key(&owned.lease)
            .key(&owned.stream)
            .key(&owned.trimmed)
            .key(&self.processed)
            .key(processed_count_key(&self.processed));
        for (key, _) in &snapshots {
            commit.key(key);
        }
        let ids: Vec<&str> = entries.iter().chain(&gone).map(|e| e.id).collect();
        commit
            .arg(&self.name)
            .arg(self.lease_ms)
            .arg(&self.group)
            .arg(&self.channel)
            .arg(self.processed_maxlen)
            .arg(trimmed)
            .arg(ids.len())
            .arg(events.len());
        for id in &ids {
            commit.arg(*id);
        }
        for event in &events {
            commit.arg(event.as_slice());
        }
        for (_, fields) in &snapshots {
            for field in fields {
                commit.arg(field);
            }
        }
        let result: redis::RedisResult<usize> = commit.invoke_async(&mut self.writer).await;
        match result {
            Ok(_) => Ok(Outcome::Processed {
                entries: entries.len(),
                duplicates,
                unreadable,
                claimed: 0,
                trimmed,
            }),
            Err(e) if e.code() == Some("LEASE") => {
                // Another worker owns the partition now (this one stalled past its lease): nothing
                // was written; the new owner processes these entries. Forget the partition.
                self.owned.remove(&p);
                self.stats.leases_lost.inc();
                tracing::warn!(worker = %self.name, partition = p, "lost the partition's lease before committing: its new owner redoes the batch");
                Ok(Outcome::Empty)
            }
            Err(e) => Err(e).context("committing the batch failed"),
        }
    }

    /// Processes batches until `shutdown`; a batch under way is finished and committed first. Errors
    /// (Redis gone) are logged and retried with a backoff: the entries stay pending and are processed
    /// later. On the way out, the worker gives its partitions back, so that the others take them at
    /// once rather than when the leases lapse.
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
                // On shutdown, the batch under way may finish and commit (milliseconds, normally),
                // for at most FINISH_GRACE: if Redis is gone it never will, and what it read stays
                // pending for the partition's next owner, which is as safe. A worker that owns
                // nothing is only waiting: it stops at once.
                let owns = !self.owned.is_empty();
                let stop = async {
                    shutdown.cancelled().await;
                    if owns {
                        tokio::time::sleep(FINISH_GRACE).await;
                    }
                };
                tokio::select! {
                    result = self.process_batch() => result,
                    _ = stop => break,
                }
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
        self.leave().await;
        tracing::info!(worker = %self.name, "worker stopped");
    }
}
