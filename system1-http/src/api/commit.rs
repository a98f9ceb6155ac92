//! Group commit: the requests that arrive while a Redis call is in flight go together in the next one.
//!
//! ```text
//! request ─▶ parse, check ─▶ encode its metrics' script arguments (in its own task) ─▶ queue ─┐
//! request ─▶ …                                                                        ─▶ queue ─┤
//!                                                                                               ▼
//!   the committer: take the first waiting part ─ take every other part already waiting (≤ MAX_GROUP_METRICS)
//!                  ─▶ one EVALSHA of the ingest script carrying all their metrics ─▶ wait for Redis
//!                  ─▶ split the reply: each request gets its own ids, or its own copy of the error
//!                  ─▶ again, at once
//! ```
//!
//! **Why.** A single-metric POST used to cost Redis one script call, and the API one write and one read
//! on the Redis socket (plus redis-rs's hand-off between the request's task and the connection's).
//! The script's fixed cost (looking it up, setting up Lua, the `XLEN` for trimming) and the syscalls
//! are the same for one metric or a hundred: shared by a group, they are paid once.
//!
//! **No timer, no added latency.** The committer does not wait for a group to fill. When it is idle, the
//! first request goes alone, at once, as before; requests queue only while a call is in flight, and
//! that call's round trip is the only wait they see. The busier the API, the bigger the groups, and the
//! cheaper each metric: throughput grows with load instead of latency exploding (the same idea as a
//! database's group commit of its log, or Nagle's algorithm without its timer).
//!
//! **Each request still answered on its own, only when durable.** The reply to a group is the list of
//! entry ids, in the order the metrics were sent; each request takes its own slice. A request is
//! answered `202` only once Redis has answered the call that carried it. If the call fails (Redis gone,
//! a timeout, `OOM`, `MISCONF`, `READONLY`, …), *every* request of the group gets that error, each in
//! its own response (`503`). Why not a failure per request: the script's only failures do not depend on
//! a request's contents (the API validated them all before queueing), they are states of Redis or of
//! the connection, which fail the whole call. And a failed call may have written some metrics (a Lua
//! script is not rolled back): the client retries on `503`, and the workers count a re-sent metric
//! once (its identity is its `seq` and timestamp), as after any lost reply: at least once.
//!
//! **Bounded.** The queue holds at most `--max-in-flight` requests (queued or in the call); past it, a
//! request is answered `503` at once with a JSON error and counted (`requestsShed`), as before. A
//! group carries at most [`MAX_GROUP_METRICS`] metrics, so one call's size (and its time in Redis,
//! which blocks every other client) stays bounded; a request's metrics are never split between calls.

use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use crate::store::TRIM_STEP;

/// Most metrics in one group commit. Large enough that one call amortizes its fixed cost over hundreds
/// of metrics, small enough that Redis, which runs a script to its end before serving anyone else,
/// is never held for long (a thousand XADDs and PUBLISHes: about a millisecond). A single request
/// (at most [`lab_core::limits::MAX_BATCH_ITEMS`] metrics) always fits.
pub const MAX_GROUP_METRICS: usize = 2_000;

/// Script arguments per metric: serverId, timestamp, readings JSON, seq ('' for none), the metric's JSON.
const ARGS_PER_METRIC: usize = 5;

/// Why a request's metrics were not committed. Every request of a failed group gets its own copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// Redis refused the call or could not be reached (the message is redis-rs's).
    #[error("Redis failed the group commit: {0}")]
    Redis(String),
    /// Redis answered with something else than one id per metric: nothing can be acked from it.
    #[error("unexpected reply to the group commit: {0}")]
    Reply(String),
    /// The committer has stopped (the API is shutting down).
    #[error("the API is shutting down")]
    Stopped,
}

/// One request's part of a group commit: its metrics' script arguments, encoded by the request's own
/// task (so that the encoding runs on every core, not in the one committer), one buffer per request.
pub struct Part {
    /// The arguments, back to back.
    bytes: Vec<u8>,
    /// Where each argument ends in `bytes` ([`ARGS_PER_METRIC`] per metric).
    ends: Vec<usize>,
    /// Where the request hears back: its entry ids, in order, or why not.
    reply: oneshot::Sender<Result<Vec<String>, CommitError>>,
}

impl Part {
    /// Encodes `metrics` (already validated) as the ingest script's arguments; returns the part and
    /// where its answer will come.
    pub fn new(metrics: &[lab_core::Metric]) -> (Part, oneshot::Receiver<Result<Vec<String>, CommitError>>) {
        let mut bytes = Vec::with_capacity(metrics.len() * 384);
        let mut ends = Vec::with_capacity(metrics.len() * ARGS_PER_METRIC);
        let mut payload = Vec::with_capacity(256);
        for metric in metrics {
            let readings = super::ingested_payload(metric, &mut payload);
            let mut push = |arg: &[u8]| {
                bytes.extend_from_slice(arg);
                ends.push(bytes.len());
            };
            push(metric.server_id.as_bytes());
            push(metric.timestamp.to_string().as_bytes());
            push(&payload[readings]);
            match metric.seq {
                Some(seq) => push(seq.to_string().as_bytes()),
                None => push(b""),
            }
            push(&payload);
        }
        let (reply, answer) = oneshot::channel();
        (Part { bytes, ends, reply }, answer)
    }

    /// The number of metrics in this part.
    fn metrics(&self) -> usize {
        self.ends.len() / ARGS_PER_METRIC
    }

    fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let arg = &self.bytes[start..end];
            start = end;
            arg
        })
    }
}

/// What the committer counts, for `GET /metrics` and `GET /api/monitoring`.
#[derive(Debug, Clone, Default)]
pub struct CommitStats {
    /// Calls made to Redis (one per group).
    pub commits: Counter,
    /// Requests carried by those calls.
    pub requests: Counter,
    /// Metrics carried by those calls.
    pub metrics: Counter,
    /// Calls that failed (every request of the group answered 503).
    pub failed: Counter,
}

/// Where the committer appends, and with what.
pub struct Target {
    /// The connection (reconnects by itself).
    pub redis: ConnectionManager,
    /// The ingest script ([`crate::store::INGEST_SCRIPT`]).
    pub script: redis::Script,
    /// The stream.
    pub stream_key: String,
    /// Where trimming counts what it dropped unread ([`crate::store::trimmed_key`]).
    pub trimmed_key: String,
    /// The channel of `metric.ingested` events.
    pub channel: String,
    /// The stream's cap.
    pub maxlen: u64,
}

/// The component that makes the calls: one group at a time, each started as soon as the previous one
/// returned. Its shutdown signal is its queue closing: when the API's last request handler is gone
/// (the servers stopped), it commits what is still queued, answers it, and returns.
pub struct Committer {
    queue: mpsc::Receiver<Part>,
    target: Target,
    stats: CommitStats,
    /// A part taken from the queue that did not fit in the last group: it starts the next one.
    carried: Option<Part>,
}

impl Committer {
    /// A committer and the queue's sending side, bounded at `capacity` parts. (The API keeps the
    /// queue from ever filling: it holds a permit of a semaphore of the same size per request waiting,
    /// and sheds with 503 when none is left; see [`crate::api`].)
    pub fn new(target: Target, capacity: usize, stats: CommitStats) -> (Committer, mpsc::Sender<Part>) {
        let (sender, queue) = mpsc::channel(capacity.max(1));
        (
            Committer {
                queue,
                target,
                stats,
                carried: None,
            },
            sender,
        )
    }

    /// Commits groups until the queue is closed and empty.
    pub async fn run(mut self) {
        let mut group: Vec<Part> = Vec::new();
        loop {
            let first = match self.carried.take() {
                Some(part) => part,
                None => match self.queue.recv().await {
                    Some(part) => part,
                    None => break,
                },
            };
            let mut metrics = first.metrics();
            group.push(first);
            // Everything already waiting, up to the bound: no waiting for more.
            while metrics < MAX_GROUP_METRICS {
                let Ok(part) = self.queue.try_recv() else { break };
                if metrics + part.metrics() > MAX_GROUP_METRICS {
                    self.carried = Some(part);
                    break;
                }
                metrics += part.metrics();
                group.push(part);
            }
            self.commit(&mut group, metrics).await;
        }
        tracing::debug!("group committer stopped");
    }

    /// One call for `group` (`metrics` metrics in all); answers every part and empties `group`.
    async fn commit(&mut self, group: &mut Vec<Part>, metrics: usize) {
        self.stats.commits.inc();
        self.stats.requests.inc_by(group.len() as u64);
        self.stats.metrics.inc_by(metrics as u64);
        let result = self.call(group, metrics).await;
        match result {
            Ok(mut ids) => {
                // Hand each request its slice, from the back so that each split is a move.
                for part in group.drain(..).rev() {
                    let own = ids.split_off(ids.len() - part.metrics());
                    let _ = part.reply.send(Ok(own));
                }
            }
            Err(e) => {
                self.stats.failed.inc();
                for part in group.drain(..) {
                    let _ = part.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// `EVALSHA` of the ingest script with every part's arguments, in order; if Redis does not know the
    /// script (it restarted, or the warm-up load has not happened yet), `SCRIPT LOAD` and again, as
    /// `redis::Script` does. Built directly rather than through `redis::Script`'s invocation, which
    /// would keep each argument in an allocation of its own and then copy them all into the command.
    async fn call(&mut self, group: &[Part], metrics: usize) -> Result<Vec<String>, CommitError> {
        let t = &mut self.target;
        let bytes: usize = group.iter().map(|p| p.bytes.len()).sum();
        let mut command = redis::Cmd::with_capacity(9 + ARGS_PER_METRIC * metrics, 128 + bytes);
        command
            .arg("EVALSHA")
            .arg(t.script.get_hash())
            .arg(2)
            .arg(&t.stream_key)
            .arg(&t.trimmed_key)
            .arg(t.maxlen)
            .arg(&t.channel)
            .arg(metrics)
            .arg(TRIM_STEP);
        for part in group {
            for arg in part.args() {
                command.arg(arg);
            }
        }
        let reply: redis::RedisResult<Vec<String>> = match command.query_async(&mut t.redis).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                match t.script.prepare_invoke().load_async(&mut t.redis).await {
                    Ok(_) => command.query_async(&mut t.redis).await,
                    Err(e) => Err(e),
                }
            }
            result => result,
        };
        let ids = reply.map_err(|e| CommitError::Redis(e.to_string()))?;
        if ids.len() != metrics {
            return Err(CommitError::Reply(format!(
                "{} ids for {metrics} metrics",
                ids.len()
            )));
        }
        Ok(ids)
    }
}

/// The committer's side as the request handlers see it: enqueue a part, wait for its answer.
#[derive(Clone)]
pub struct Queue {
    sender: mpsc::Sender<Part>,
}

impl Queue {
    /// The handlers' end of `sender`.
    pub fn new(sender: mpsc::Sender<Part>) -> Self {
        Queue { sender }
    }

    /// Commits `metrics` in the next group and waits until Redis has them: their entry ids, in order.
    /// The caller must hold one of the API's in-flight permits (which keeps the queue from filling).
    pub async fn commit(&self, metrics: &[lab_core::Metric]) -> Result<Vec<String>, CommitError> {
        let (part, answer) = Part::new(metrics);
        self.sender.send(part).await.map_err(|_| CommitError::Stopped)?;
        answer.await.unwrap_or(Err(CommitError::Stopped))
    }

    /// Parts waiting in the queue (not yet taken into a group).
    pub fn waiting(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}
