//! A dashboard's outgoing queue, and the policy for dashboards that cannot keep up.
//!
//! Producers must never wait for a dashboard: one slow browser tab must not slow ingest, or any other
//! dashboard. So pushing an update into an [`Outbox`] never blocks and never grows without bound:
//!
//! 1. while the queue has room (`capacity` updates), the update is queued: the dashboard will see
//!    every update, in order, as the original lab promised;
//! 2. when the queue is full, the update is **coalesced**: kept as the latest update of its server,
//!    replacing an older one not yet sent. The dashboard will miss intermediate updates but not the
//!    newest state of any server, and it is *told* what it missed: the update it gets carries
//!    `"coalesced":k` (how many earlier updates it stands for) and `"firstSeq"`/`"lastSeq"` (the
//!    range of `seq`s it covers, its own included), so a client counts those metrics as delivered as
//!    an aggregate, never as lost;
//! 3. when as many servers again are waiting as coalesced, a further server's update is **dropped**,
//!    and counted (per dashboard and in total); the dashboard is told before its next updates, with
//!    a `gap` frame saying how many were dropped and when ([`Outbox::take_dropped`]);
//! 4. a dashboard whose queue stays full longer than the slow-dashboard limit is closed (code 1008) by
//!    its connection task: it is better told than silently starved.
//!
//! A dashboard that asked for `maxHz` skips step 1: every update is coalesced, and its connection task
//! sends the latest of each server at most `maxHz` times a second.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The text of a `metric.update` frame up to its payload; the payload follows, then `}`.
pub const UPDATE_PREFIX: &str = r#"{"type":"metric.update","payload":"#;

/// What a frame must be to travel through an outbox: text, cheap to clone. System 2 uses its WebSocket
/// library's reference-counted `Utf8Bytes`, so that one update sent to a hundred dashboards copies no
/// bytes; `String` works too.
pub trait FrameText: Clone + Deref<Target = str> + From<String> + Send + Sync + 'static {}
impl<T: Clone + Deref<Target = str> + From<String> + Send + Sync + 'static> FrameText for T {}

/// The key that opens an update's payload object in a frame: where coalescing fields are inserted.
const PAYLOAD_KEY: &str = r#""payload":{"#;

/// One server's update, serialized once and shared by every dashboard that receives it.
#[derive(Debug)]
pub struct Update<F> {
    /// Whose update this is: the key for coalescing (System 1's broadcaster adds the event's type to
    /// it, so that only events of one kind coalesce).
    pub server_id: String,
    /// The `seq` of the metric it carries, if it had one: what a coalesced update reports as the range
    /// it covers.
    pub seq: Option<u64>,
    /// The whole frame as sent.
    pub frame: F,
}

impl<F: FrameText> Update<F> {
    /// Wraps a serialized `UpdatePayload` into a System 2 `metric.update` frame.
    pub fn new(server_id: &str, payload_json: &str) -> Self {
        let mut frame = String::with_capacity(UPDATE_PREFIX.len() + payload_json.len() + 1);
        frame.push_str(UPDATE_PREFIX);
        frame.push_str(payload_json);
        frame.push('}');
        Update {
            server_id: server_id.to_owned(),
            seq: None,
            frame: frame.into(),
        }
    }

    /// A frame relayed as it is (System 1's events). If it coalesces, its `payload` object gains the
    /// coalescing fields.
    pub fn verbatim(server_id: &str, frame: F) -> Self {
        Update {
            server_id: server_id.to_owned(),
            seq: None,
            frame,
        }
    }

    /// The same update, knowing the `seq` of its metric.
    pub fn with_seq(mut self, seq: Option<u64>) -> Self {
        self.seq = seq;
        self
    }

    /// This update standing for `coalesced` earlier ones of its server: the frame with
    /// `"coalesced":k,"firstSeq":a,"lastSeq":b` (the seq fields where known) at the start of its payload
    /// object. A frame without a payload object is returned unchanged.
    fn annotated(&self, coalesced: u64, seqs: Option<(u64, u64)>) -> Update<F> {
        let mut fields = format!(r#""coalesced":{coalesced},"#);
        if let Some((first, last)) = seqs {
            fields.push_str(&format!(r#""firstSeq":{first},"lastSeq":{last},"#));
        }
        let frame: &str = &self.frame;
        let frame = match frame.find(PAYLOAD_KEY) {
            Some(at) => {
                let split = at + PAYLOAD_KEY.len();
                let (head, tail) = frame.split_at(split);
                // An empty payload object takes the fields without their trailing comma.
                let fields = if tail.starts_with('}') {
                    fields.trim_end_matches(',')
                } else {
                    &fields
                };
                let mut out = String::with_capacity(frame.len() + fields.len());
                out.push_str(head);
                out.push_str(fields);
                out.push_str(tail);
                F::from(out)
            }
            None => self.frame.clone(),
        };
        Update {
            server_id: self.server_id.clone(),
            seq: self.seq,
            frame,
        }
    }

    /// The payload object of its frame — a System 2 `metric.update`'s or a System 1 event's — for
    /// `metric.updates` batches; the whole frame if it has none. The object's end is found by
    /// scanning it (strings and escapes respected), so the payload need not be the frame's last key.
    pub fn payload(&self) -> &str {
        let frame: &str = &self.frame;
        // System 2's own frames, built by `Update::new` (or annotated): the payload is the rest.
        if let Some(payload) = frame
            .strip_prefix(UPDATE_PREFIX)
            .and_then(|r| r.strip_suffix('}'))
        {
            return payload;
        }
        let Some(at) = frame.find(PAYLOAD_KEY) else {
            return frame;
        };
        let start = at + PAYLOAD_KEY.len() - 1;
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (i, b) in frame.bytes().enumerate().skip(start) {
            match (in_string, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => in_string = false,
                (true, false, _) => {}
                (false, _, b'"') => in_string = true,
                (false, _, b'{' | b'[') => depth += 1,
                (false, _, b'}' | b']') => {
                    depth -= 1;
                    if depth == 0 {
                        return &frame[start..=i];
                    }
                }
                _ => {}
            }
        }
        frame
    }
}

/// `{"type":"metric.updates","items":[…]}` from already-serialized updates: their payloads, copied
/// once into one frame. Both systems' dashboards that asked for `batchUpdates` get these; each item
/// keeps its own `timestamp` (and `seq`, and coalescing fields), so batching changes how many frames
/// a dashboard parses, never a latency it computes.
pub fn batch_frame<F: FrameText>(updates: &[Arc<Update<F>>]) -> String {
    let size: usize = updates.iter().map(|u| u.payload().len() + 1).sum();
    let mut frame = String::with_capacity(size + 40);
    frame.push_str(r#"{"type":"metric.updates","items":["#);
    for (i, update) in updates.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(update.payload());
    }
    frame.push_str("]}");
    frame
}

/// What happened to a pushed update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued: it will be sent.
    Queued,
    /// Kept as its server's latest in the coalescing table, where no older one was waiting: it will be
    /// sent, and nothing was superseded.
    Kept,
    /// Kept as its server's latest, superseding an older unsent one: the older one is now *coalesced*
    /// into it (and will be reported as such when it is sent).
    Coalesced,
    /// Dropped: the queue and the coalescing table are both full.
    Dropped,
}

/// How a dashboard wants its updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preferences {
    /// Only this server's updates (`None`: all servers).
    pub filter: Option<String>,
    /// At most this many updates per server per second, the latest winning (`None`: every update).
    pub max_hz: Option<u32>,
    /// Several updates per frame (`metric.updates`).
    pub batch: bool,
}

/// One dashboard's outgoing updates. Shared between the producers that push and the dashboard's own
/// connection task that sends.
#[derive(Debug)]
pub struct Outbox<F> {
    /// The connection this outbox belongs to, for the registry and for monitoring.
    pub connection_id: u64,
    /// What the dashboard asked for.
    pub preferences: Preferences,
    /// Updates queued before coalescing starts; also the size of the coalescing table.
    capacity: usize,
    /// The queue and the coalescing table. A std `Mutex`: it is held for a few instructions and
    /// never across an `.await`, which is when a blocking mutex is the faster choice.
    state: Mutex<State<F>>,
    /// Wakes the connection task when there is something to send.
    ready: Notify,
}

#[derive(Debug)]
struct State<F> {
    queue: VecDeque<Arc<Update<F>>>,
    latest: HashMap<String, Slot<F>>,
    /// Since when the queue has been full (or, for `maxHz`, the table), if it is.
    backed_up_since: Option<Instant>,
    /// Updates superseded in the table, since the outbox was made.
    coalesced: u64,
    /// Updates dropped because the table was full, since the outbox was made.
    dropped: u64,
    /// Drops the dashboard has not been told of yet: how many, and the first and last time (epoch
    /// ms).
    unreported: Option<Dropped>,
}

/// Updates an outbox dropped and has not reported yet: what a `gap` frame tells the dashboard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropped {
    /// How many updates.
    pub updates: u64,
    /// When the first of them was dropped, epoch ms.
    pub from_ms: f64,
    /// When the last of them was dropped, epoch ms.
    pub to_ms: f64,
}

/// A server's place in the coalescing table: its latest update, and what that update stands for.
#[derive(Debug)]
struct Slot<F> {
    update: Arc<Update<F>>,
    /// Earlier updates of this server it superseded.
    replaced: u64,
    /// The lowest and highest `seq` among those and itself, where known.
    seqs: Option<(u64, u64)>,
}

impl<F: FrameText> Slot<F> {
    fn new(update: &Arc<Update<F>>) -> Self {
        Slot {
            update: update.clone(),
            replaced: 0,
            seqs: update.seq.map(|s| (s, s)),
        }
    }

    /// `update` supersedes the one held.
    fn supersede(&mut self, update: &Arc<Update<F>>) {
        self.replaced += 1;
        self.seqs = match (self.seqs, update.seq) {
            (Some((first, last)), Some(s)) => Some((first.min(s), last.max(s))),
            (seqs, None) => seqs,
            (None, Some(s)) => Some((s, s)),
        };
        self.update = update.clone();
    }

    /// What is sent: the update, annotated if it stands for others.
    fn into_update(self) -> Arc<Update<F>> {
        if self.replaced == 0 {
            self.update
        } else {
            Arc::new(self.update.annotated(self.replaced, self.seqs))
        }
    }
}

impl<F> Default for State<F> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            latest: HashMap::new(),
            backed_up_since: None,
            coalesced: 0,
            dropped: 0,
            unreported: None,
        }
    }
}

impl<F: FrameText> Outbox<F> {
    /// An empty outbox.
    pub fn new(connection_id: u64, preferences: Preferences, capacity: usize) -> Self {
        Outbox {
            connection_id,
            preferences,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<F>> {
        // A panic while holding this lock cannot leave the queue inconsistent (every mutation is a
        // single push or take), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an update, never blocking. See the module docs for the policy.
    pub fn push(&self, update: &Arc<Update<F>>) -> Pushed {
        let outcome = {
            let mut s = self.state();
            if self.preferences.max_hz.is_none() && s.queue.len() < self.capacity {
                s.queue.push_back(update.clone());
                Pushed::Queued
            } else {
                let table_full = s.latest.len() >= self.capacity;
                let outcome = match s.latest.get_mut(&update.server_id) {
                    Some(slot) => {
                        slot.supersede(update);
                        s.coalesced += 1;
                        Pushed::Coalesced
                    }
                    None if table_full => {
                        s.dropped += 1;
                        let now = crate::now_ms();
                        let unreported = s.unreported.get_or_insert(Dropped {
                            updates: 0,
                            from_ms: now,
                            to_ms: now,
                        });
                        unreported.updates += 1;
                        unreported.to_ms = now;
                        Pushed::Dropped
                    }
                    None => {
                        s.latest.insert(update.server_id.clone(), Slot::new(update));
                        Pushed::Kept
                    }
                };
                let backed_up = self.preferences.max_hz.is_none() || table_full;
                if backed_up && s.backed_up_since.is_none() {
                    s.backed_up_since = Some(Instant::now());
                }
                outcome
            }
        };
        if self.preferences.max_hz.is_none() {
            self.ready.notify_one();
        }
        outcome
    }

    /// Waits until something was pushed since the last wait (returns at once if it was).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Wakes the connection task, as a push would (it stopped with updates still waiting).
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Takes up to `max` updates to send: queued ones first, in order, then coalesced ones.
    pub fn take(&self, max: usize) -> Vec<Arc<Update<F>>> {
        let mut s = self.state();
        let from_queue = s.queue.len().min(max);
        let mut out: Vec<_> = s.queue.drain(..from_queue).collect();
        if out.len() < max && !s.latest.is_empty() {
            let keys: Vec<String> = s.latest.keys().take(max - out.len()).cloned().collect();
            for key in keys {
                if let Some(slot) = s.latest.remove(&key) {
                    out.push(slot.into_update());
                }
            }
        }
        if s.queue.len() < self.capacity && s.latest.len() < self.capacity {
            s.backed_up_since = None;
        }
        out
    }

    /// How long this dashboard has been backed up, if it is. For `maxHz` dashboards, coalescing is the
    /// normal path, so only a full coalescing table counts.
    pub fn backed_up_for(&self) -> Option<Duration> {
        let s = self.state();
        let backed_up = match self.preferences.max_hz {
            None => s.queue.len() >= self.capacity,
            Some(_) => s.latest.len() >= self.capacity,
        };
        s.backed_up_since
            .filter(|_| backed_up)
            .map(|since| since.elapsed())
    }

    /// (queued, coalesced) updates waiting, for monitoring.
    pub fn depth(&self) -> (usize, usize) {
        let s = self.state();
        (s.queue.len(), s.latest.len())
    }

    /// The drops not reported yet, if any, now counted as reported: the connection task sends them as
    /// a `gap` frame before the updates it takes next, so the dashboard hears of them in order.
    pub fn take_dropped(&self) -> Option<Dropped> {
        self.state().unreported.take()
    }

    /// (coalesced, dropped) updates since this outbox was made, for monitoring: what this dashboard
    /// got as aggregates, and what it never got.
    pub fn losses(&self) -> (u64, u64) {
        let s = self.state();
        (s.coalesced, s.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(server: &str, n: u32) -> Arc<Update<String>> {
        Arc::new(Update::new(
            server,
            &format!(r#"{{"serverId":"{server}","n":{n}}}"#),
        ))
    }

    fn every_update(capacity: usize) -> Outbox<String> {
        Outbox::new(
            1,
            Preferences {
                filter: None,
                max_hz: None,
                batch: false,
            },
            capacity,
        )
    }

    fn payloads(updates: &[Arc<Update<String>>]) -> Vec<String> {
        updates.iter().map(|u| u.payload().to_owned()).collect()
    }

    #[test]
    fn updates_are_queued_in_order_while_there_is_room() {
        let o = every_update(3);
        for n in 0..3 {
            assert_eq!(o.push(&update("a", n)), Pushed::Queued);
        }
        assert_eq!(o.depth(), (3, 0));
        assert_eq!(
            payloads(&o.take(10)),
            [
                r#"{"serverId":"a","n":0}"#,
                r#"{"serverId":"a","n":1}"#,
                r#"{"serverId":"a","n":2}"#
            ]
        );
        assert_eq!(o.depth(), (0, 0));
    }

    #[test]
    fn a_full_queue_coalesces_to_the_latest_per_server_then_drops() {
        let o = every_update(2);
        o.push(&update("a", 0));
        o.push(&update("a", 1));
        assert_eq!(
            o.push(&update("a", 2)),
            Pushed::Kept,
            "a's first place in the table"
        );
        assert_eq!(o.push(&update("a", 3)), Pushed::Coalesced, "replaces a/2");
        assert_eq!(o.push(&update("b", 0)), Pushed::Kept);
        assert_eq!(
            o.push(&update("c", 0)),
            Pushed::Dropped,
            "table of 2 servers is full"
        );
        assert_eq!(
            o.push(&update("b", 1)),
            Pushed::Coalesced,
            "a known server still coalesces"
        );
        assert_eq!(o.losses(), (2, 1));
        let dropped = o.take_dropped().expect("the drop is to be reported");
        assert_eq!(dropped.updates, 1);
        assert!(dropped.from_ms <= dropped.to_ms);
        assert_eq!(o.take_dropped(), None, "reported once");
        assert!(o.backed_up_for().is_some());
        let sent = payloads(&o.take(10));
        assert_eq!(
            &sent[..2],
            [r#"{"serverId":"a","n":0}"#, r#"{"serverId":"a","n":1}"#]
        );
        let mut latest = sent[2..].to_vec();
        latest.sort();
        assert_eq!(
            latest,
            [
                r#"{"coalesced":1,"serverId":"a","n":3}"#,
                r#"{"coalesced":1,"serverId":"b","n":1}"#
            ],
            "each says it stands for one earlier update"
        );
        assert_eq!(o.backed_up_for(), None, "drained: no longer backed up");
    }

    #[test]
    fn a_coalesced_update_names_the_seqs_it_covers() {
        let o = every_update(1);
        let seq = |n: u64| {
            Arc::new(Update::new("a", &format!(r#"{{"serverId":"a","seq":{n}}}"#)).with_seq(Some(n)))
        };
        assert_eq!(o.push(&seq(10)), Pushed::Queued);
        assert_eq!(o.push(&seq(11)), Pushed::Kept);
        assert_eq!(o.push(&seq(12)), Pushed::Coalesced);
        assert_eq!(o.push(&seq(13)), Pushed::Coalesced);
        let sent: Vec<String> = o.take(10).iter().map(|u| u.frame.clone()).collect();
        assert_eq!(
            sent,
            [
                r#"{"type":"metric.update","payload":{"serverId":"a","seq":10}}"#,
                r#"{"type":"metric.update","payload":{"coalesced":2,"firstSeq":11,"lastSeq":13,"serverId":"a","seq":13}}"#,
            ]
        );
        // Out of order, the range is still the lowest and highest seq covered.
        o.push(&seq(20));
        o.push(&seq(25));
        o.push(&seq(21));
        let sent = o.take(10);
        assert!(
            sent[1]
                .frame
                .contains(r#""coalesced":1,"firstSeq":21,"lastSeq":25,"#),
            "{}",
            sent[1].frame
        );
        assert_eq!(o.losses(), (3, 0));
    }

    #[test]
    fn verbatim_frames_are_annotated_inside_their_payload() {
        let o = every_update(1);
        let event = |n: u64| {
            let frame = format!(
                r#"{{"type":"metric.processed","entryId":"1-{n}","payload":{{"serverId":"s","seq":{n}}}}}"#
            );
            Arc::new(Update::verbatim("s", frame).with_seq(Some(n)))
        };
        o.push(&event(0));
        o.push(&event(1));
        o.push(&event(2));
        let sent = o.take(10);
        assert_eq!(
            sent[1].frame,
            r#"{"type":"metric.processed","entryId":"1-2","payload":{"coalesced":1,"firstSeq":1,"lastSeq":2,"serverId":"s","seq":2}}"#
        );
        let empty: Update<String> = Update::verbatim("s", r#"{"payload":{}}"#.to_owned());
        assert_eq!(empty.annotated(3, None).frame, r#"{"payload":{"coalesced":3}}"#);
        let none: Update<String> = Update::verbatim("s", r#"{"type":"x"}"#.to_owned());
        assert_eq!(
            none.annotated(3, None).frame,
            r#"{"type":"x"}"#,
            "no payload: unchanged"
        );
    }

    #[test]
    fn max_hz_dashboards_always_coalesce() {
        let o = Outbox::new(
            1,
            Preferences {
                filter: None,
                max_hz: Some(5),
                batch: false,
            },
            10,
        );
        assert_eq!(o.push(&update("a", 0)), Pushed::Kept);
        for n in 1..100 {
            assert_eq!(o.push(&update("a", n)), Pushed::Coalesced);
        }
        assert_eq!(o.depth(), (0, 1));
        assert_eq!(o.backed_up_for(), None, "coalescing is their normal path");
        assert_eq!(
            payloads(&o.take(10)),
            [r#"{"coalesced":99,"serverId":"a","n":99}"#],
            "the tick's update says it stands for the 99 before it"
        );
        o.push(&update("a", 100));
        assert_eq!(
            payloads(&o.take(10)),
            [r#"{"serverId":"a","n":100}"#],
            "alone since the last tick"
        );
    }

    #[test]
    fn verbatim_frames_travel_unchanged() {
        let u: Update<String> = Update::verbatim("s", r#"{"type":"metric.processed"}"#.to_owned());
        assert_eq!(u.frame.as_str(), r#"{"type":"metric.processed"}"#);
        assert_eq!(
            u.payload(),
            r#"{"type":"metric.processed"}"#,
            "no payload: the whole frame"
        );
    }

    #[test]
    fn a_system1_events_payload_batches_like_a_system2_update() {
        let event =
            r#"{"type":"metric.processed","entryId":"1-0","payload":{"serverId":"s","timestamp":5,"seq":7}}"#;
        let u: Arc<Update<String>> = Arc::new(Update::verbatim("s", event.to_owned()));
        assert_eq!(u.payload(), r#"{"serverId":"s","timestamp":5,"seq":7}"#);
        // Wherever the payload stands in the frame, with braces and quotes inside its strings.
        let odd = r#"{"payload":{"serverId":"s}\"{","w":{"x":[1,{"y":2}]}},"type":"metric.processed"}"#;
        let o: Update<String> = Update::verbatim("s", odd.to_owned());
        assert_eq!(o.payload(), r#"{"serverId":"s}\"{","w":{"x":[1,{"y":2}]}}"#);
        let v: Arc<Update<String>> = Arc::new(Update::new("t", r#"{"serverId":"t"}"#));
        assert_eq!(
            batch_frame(&[u, v]),
            r#"{"type":"metric.updates","items":[{"serverId":"s","timestamp":5,"seq":7},{"serverId":"t"}]}"#
        );
        let coalesced = every_update(1);
        for n in 0..3 {
            coalesced.push(&Arc::new(
                Update::verbatim("s", event.replace("\"seq\":7", &format!("\"seq\":{n}"))).with_seq(Some(n)),
            ));
        }
        // The coalescing fields stay inside the payload, so inside the batch item.
        assert!(
            batch_frame(&coalesced.take(5))
                .contains(r#"{"coalesced":1,"firstSeq":1,"lastSeq":2,"serverId":"s""#)
        );
    }

    #[test]
    fn take_respects_its_limit() {
        let o = every_update(10);
        for n in 0..5 {
            o.push(&update("a", n));
        }
        assert_eq!(o.take(2).len(), 2);
        assert_eq!(o.depth(), (3, 0));
    }

    #[test]
    fn the_update_frame_wraps_the_payload() {
        let u: Update<String> = Update::new("s", r#"{"serverId":"s"}"#);
        assert_eq!(
            u.frame.as_str(),
            r#"{"type":"metric.update","payload":{"serverId":"s"}}"#
        );
        assert_eq!(u.payload(), r#"{"serverId":"s"}"#);
    }
}
