//! Group commit: the requests that arrive while a Redis call is in flight go together in the next one.
//!
//! ```text
//! request ─▶ parse, check ─▶ encode its metrics' script arguments (in its own task)
//!   ├─ no call in flight: it *leads*: one EVALSHA of the ingest script with its metrics ─▶ wait for Redis
//!   │     ─▶ hand the lead to the first request that queued meanwhile, with everything queued
//!   │        (≤ MAX_GROUP_METRICS), so that the next call starts at once; or, if none did, no call
//!   │        is in flight any more
//!   │     ─▶ answer the others of its group (their ids, or their own copy of the error), then itself
//!   └─ a call in flight: queue, and wait: for its answer, or for the lead (then as above, its group
//!         being everything that queued behind the previous call)
//! ```
//!
//! **Why.** A single-metric POST used to cost Redis one script call, and the API one write and one read
//! on the Redis socket (plus redis-rs's hand-off between the request's task and the connection's).
//! The script's fixed cost (looking it up, setting up Lua, the `XLEN` for trimming) and the syscalls
//! are the same for one metric or a hundred: shared by a group, they are paid once.
//!
//! **Why the requests' own tasks make the calls, and no committer task.** A committer task would add two
//! task hand-offs to every request (to it and back), on top of redis-rs's own to its connection task,
//! and they would matter most at low load, where groups hold one request. With the lead passed from
//! request to request, an idle API makes exactly the call it made before group commit, from the
//! request's own task; under load, one wake-up per *call* hands the lead on. (A first version had a
//! committer task; on this shared machine the two could not be told apart in CPU per request, see
//! docs/performance.md, so the choice rests on the hand-offs it saves, not on a measured gain.)
//!
//! **No timer, no added latency.** Nobody waits for a group to fill. When it is idle, the
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
//! **Bounded.** The queue holds fewer than `--max-in-flight` requests: the API holds a permit per request
//! waiting (queued or in the call) and, when none is left, answers `503` at once with a JSON error and
//! counts it (`requestsShed`), as before. A group carries at most [`MAX_GROUP_METRICS`] metrics, so one
//! call's size (and its time in Redis, which blocks every other client) stays bounded; a request's
//! metrics are never split between calls.
//!
//! **A leader that goes away.** hyper drops a request's future when its client disconnects, and a
//! leader's may be dropped in the middle of its call. Its guard (`Lead`) then answers the others of the
//! group with [`CommitError::Abandoned`] (`503`: Redis may or may not have run the call, so they must not
//! be acked) and hands the lead on, so that the queue never waits for a leader that is gone. The lead
//! itself travels as a `Baton`: a request that goes away after the lead was sent to it, before it
//! woke up to take it, drops the baton, which puts its group back in the queue and hands the lead on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use redis::aio::ConnectionManager;
use tokio::sync::oneshot;

use crate::store::{Partitions, TRIM_STEP, trimmed_key};

/// Most metrics in one group commit. Large enough that one call amortizes its fixed cost over hundreds
/// of metrics, small enough that Redis, which runs a script to its end before serving anyone else,
/// is never held for long (a thousand XADDs and PUBLISHes: about a millisecond). A single request
/// (at most [`lab_core::limits::MAX_BATCH_ITEMS`] metrics) always fits.
pub const MAX_GROUP_METRICS: usize = 2_000;

/// Script arguments per metric encoded by a request: serverId, timestamp, readings JSON, seq ('' for none), the
/// metric's JSON. (The call puts one more before them: the number of the metric's partition in its KEYS.)
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
    /// The request that was making the call went away mid-call (its client disconnected): whether
    /// Redis ran it is unknown, so nothing of it can be acked.
    #[error("the group commit carrying this request was abandoned mid-call")]
    Abandoned,
}

/// A request's metrics as the ingest script's arguments, encoded by the request's own task (so that
/// the encoding runs on every core), in one buffer, with each metric's partition.
pub struct Args {
    /// The arguments, back to back.
    bytes: Vec<u8>,
    /// Where each argument ends in `bytes` ([`ARGS_PER_METRIC`] per metric).
    ends: Vec<usize>,
    /// Each metric's partition ([`Partitions::of`] its server).
    partitions: Vec<usize>,
}

impl Args {
    /// Encodes `metrics` (already validated), to go to their servers' partitions of `partitions`.
    pub fn new(metrics: &[lab_core::Metric], partitions: &Partitions) -> Args {
        let mut bytes = Vec::with_capacity(metrics.len() * 384);
        let mut ends = Vec::with_capacity(metrics.len() * ARGS_PER_METRIC);
        let mut payload = Vec::with_capacity(256);
        let partitions = metrics.iter().map(|m| partitions.of(&m.server_id)).collect();
        // The `metric.ingested` payload and the stream entry's `metrics` field, written once for both
        // (the call carries both): lab-core's fast writer, held byte-equal to serde there.
        for metric in metrics {
            let readings = lab_core::wire::system1::write_ingested_payload(metric, &mut payload);
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
        Args {
            bytes,
            ends,
            partitions,
        }
    }

    /// The number of metrics.
    fn metrics(&self) -> usize {
        self.ends.len() / ARGS_PER_METRIC
    }

    /// The script arguments of metric `m`.
    fn of_metric(&self, m: usize) -> impl Iterator<Item = &[u8]> {
        let first = m * ARGS_PER_METRIC;
        (first..first + ARGS_PER_METRIC).map(move |a| {
            let start = if a == 0 { 0 } else { self.ends[a - 1] };
            &self.bytes[start..self.ends[a]]
        })
    }
}

/// A queued request: its arguments, and where it hears back.
struct Part {
    args: Args,
    reply: oneshot::Sender<Answer>,
}

/// What a queued request hears.
enum Answer {
    /// Its group was committed (its entry ids, in order) or failed.
    Done(Result<Vec<String>, CommitError>),
    /// It leads the next group.
    Lead(Baton),
}

/// The lead, on its way to the request that is to make the next call: that request's own metrics and
/// the requests queued behind it. If it is dropped untaken (the request went away after the lead was
/// sent to it, before it woke up), the queued requests go back to the front of the queue and the lead
/// goes to the next one: a lead is never lost, or the queue would wait for ever.
struct Baton {
    shared: Arc<Shared>,
    group: Option<(Args, Vec<Part>)>,
}

impl Baton {
    fn take(mut self) -> (Args, Vec<Part>) {
        self.group.take().expect("a baton is taken once")
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        if let Some((_, others)) = self.group.take() {
            let mut state = self.shared.lock();
            for part in others.into_iter().rev() {
                state.queue.push_front(part);
            }
            self.shared.hand_on(&mut state);
        }
    }
}

/// What the group commit counts, for `GET /metrics` and `GET /api/monitoring`.
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

/// Where the group commit appends, and with what.
pub struct Target {
    /// The connection (reconnects by itself).
    pub redis: ConnectionManager,
    /// The ingest script ([`crate::store::INGEST_SCRIPT`]).
    pub script: redis::Script,
    /// The stream's partitions: each metric goes to its server's.
    pub partitions: Partitions,
    /// The channel of `metric.ingested` events.
    pub channel: String,
    /// Each partition's cap ([`Partitions::maxlen_each`]).
    pub maxlen: u64,
}

/// Whether a call is in flight, and who waits behind it.
#[derive(Default)]
struct State {
    /// A request is leading a group (making its call, or handing the lead on).
    leading: bool,
    /// Requests waiting for the next group. Empty whenever `leading` is false.
    queue: VecDeque<Part>,
}

/// The API's group commit (see the module's documentation). Shared by every request handler.
pub struct GroupCommit {
    shared: Arc<Shared>,
}

/// What the requests share: where to append, who waits, what was counted.
struct Shared {
    target: Target,
    state: Mutex<State>,
    stats: CommitStats,
}

impl GroupCommit {
    /// A group commit into `target`, counting into `stats`.
    pub fn new(target: Target, stats: CommitStats) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                target,
                state: Mutex::default(),
                stats,
            }),
        }
    }

    /// Commits `metrics` (one request's, validated) in the next group and waits until Redis has them:
    /// their entry ids, in order, or why not. The caller holds one of the API's in-flight permits,
    /// which bounds the queue.
    pub async fn commit(&self, metrics: &[lab_core::Metric]) -> Result<Vec<String>, CommitError> {
        let shared = &self.shared;
        let args = Args::new(metrics, &shared.target.partitions);
        let waiting = {
            let mut state = shared.lock();
            if state.leading {
                let (reply, answer) = oneshot::channel();
                state.queue.push_back(Part { args, reply });
                Err(answer)
            } else {
                state.leading = true;
                Ok(args)
            }
        };
        match waiting {
            Ok(args) => shared.lead(args, Vec::new()).await,
            Err(answer) => match answer.await {
                Ok(Answer::Done(result)) => result,
                Ok(Answer::Lead(baton)) => {
                    let (own, others) = baton.take();
                    shared.lead(own, others).await
                }
                // The group commit itself was dropped (the API stopped) with this request queued.
                Err(_) => Err(CommitError::Abandoned),
            },
        }
    }

    /// Requests waiting for the next group.
    pub fn waiting(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing half-done in `State` worth refusing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the call for `own` (the leader's metrics) and `others`, hands the lead on, answers
    /// `others`, and returns the leader's own answer.
    async fn lead(self: &Arc<Self>, own: Args, others: Vec<Part>) -> Result<Vec<String>, CommitError> {
        let metrics = own.metrics() + others.iter().map(|p| p.args.metrics()).sum::<usize>();
        self.stats.commits.inc();
        self.stats.requests.inc_by(1 + others.len() as u64);
        self.stats.metrics.inc_by(metrics as u64);
        let command = self.command(&own, &others, metrics);
        let mut lead = Lead {
            shared: self,
            others: Some(others),
        };
        let result = self.call(command, metrics).await;
        let others = lead.others.take().expect("taken only here and on drop");
        // Hands the lead on before answering anyone: the next call starts at once.
        drop(lead);
        if result.is_err() {
            self.stats.failed.inc();
        }
        match result {
            Ok(mut ids) => {
                // Each request its slice, from the back so that each split is a move.
                for part in others.into_iter().rev() {
                    let theirs = ids.split_off(ids.len() - part.args.metrics());
                    let _ = part.reply.send(Answer::Done(Ok(theirs)));
                }
                Ok(ids)
            }
            Err(e) => {
                for part in others {
                    let _ = part.reply.send(Answer::Done(Err(e.clone())));
                }
                Err(e)
            }
        }
    }

    /// Gives the lead to the first request still waiting, with the group queued behind it, or, if
    /// nobody waits, marks that no call is in flight. Called with the state locked.
    fn hand_on(self: &Arc<Self>, state: &mut State) {
        loop {
            let Some(next) = state.queue.pop_front() else {
                state.leading = false;
                return;
            };
            let mut metrics = next.args.metrics();
            let mut others = Vec::new();
            while let Some(part) = state.queue.front() {
                if metrics + part.args.metrics() > MAX_GROUP_METRICS {
                    break;
                }
                metrics += part.args.metrics();
                others.extend(state.queue.pop_front());
            }
            let baton = Baton {
                shared: self.clone(),
                group: Some((next.args, others)),
            };
            match next.reply.send(Answer::Lead(baton)) {
                Ok(()) => return,
                // Its request went away while queued (the client disconnected): nobody waits for its
                // metrics, and it cannot lead; the others go back to the front of the queue. (Taken
                // out of the baton here, so that its drop does not hand on again under this lock.)
                Err(Answer::Lead(baton)) => {
                    let (_, others) = baton.take();
                    for part in others.into_iter().rev() {
                        state.queue.push_front(part);
                    }
                }
                Err(Answer::Done(_)) => unreachable!("a lead was sent"),
            }
        }
    }

    /// One `EVALSHA` of the ingest script with every request's arguments, in order, each metric
    /// preceded by the number of its partition's keys in the call. Built directly rather than through
    /// `redis::Script`'s invocation, which would keep each argument in an allocation of its own and
    /// then copy them all into the command.
    fn command(&self, own: &Args, others: &[Part], metrics: usize) -> redis::Cmd {
        let t = &self.target;
        let group = || std::iter::once(own).chain(others.iter().map(|p| &p.args));
        // The partitions the group goes to, numbered 1, 2, … in the call's KEYS.
        let mut slot = vec![0usize; t.partitions.count()];
        let mut touched = Vec::new();
        for args in group() {
            for &p in &args.partitions {
                if slot[p] == 0 {
                    touched.push(p);
                    slot[p] = touched.len();
                }
            }
        }
        let bytes: usize = group().map(|a| a.bytes.len()).sum();
        let mut command = redis::Cmd::with_capacity(
            7 + 2 * touched.len() + (ARGS_PER_METRIC + 1) * metrics,
            128 + bytes,
        );
        command
            .arg("EVALSHA")
            .arg(t.script.get_hash())
            .arg(2 * touched.len());
        for &p in &touched {
            let stream = t.partitions.stream(p);
            command.arg(&stream).arg(trimmed_key(&stream));
        }
        command.arg(t.maxlen).arg(&t.channel).arg(metrics).arg(TRIM_STEP);
        for args in group() {
            for (m, &p) in args.partitions.iter().enumerate() {
                command.arg(slot[p]);
                for arg in args.of_metric(m) {
                    command.arg(arg);
                }
            }
        }
        command
    }

    /// Sends `command`; if Redis does not know the script (it restarted, or the warm-up load has not
    /// happened yet), `SCRIPT LOAD` and again, as `redis::Script` does. The reply must hold one id per
    /// metric, or nothing can be acked from it.
    async fn call(&self, command: redis::Cmd, metrics: usize) -> Result<Vec<String>, CommitError> {
        let t = &self.target;
        let mut redis = t.redis.clone();
        let reply: redis::RedisResult<Vec<String>> = match command.query_async(&mut redis).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                match t.script.prepare_invoke().load_async(&mut redis).await {
                    Ok(_) => command.query_async(&mut redis).await,
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

/// The lead while its call is in flight. Dropped with the group still in it (the leader's request went
/// away mid-call), it answers the group [`CommitError::Abandoned`]; dropped either way, it hands the
/// lead on.
struct Lead<'a> {
    shared: &'a Arc<Shared>,
    others: Option<Vec<Part>>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        for part in self.others.take().into_iter().flatten() {
            let _ = part.reply.send(Answer::Done(Err(CommitError::Abandoned)));
        }
        let mut state = self.shared.lock();
        self.shared.hand_on(&mut state);
    }
}
