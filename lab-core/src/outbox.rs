//! A dashboard's outgoing queue, and the policy for dashboards that cannot keep up.
//!
//! Producers must never wait for a dashboard: one slow browser tab must not slow ingest, or any other
//! dashboard. So pushing an update into an [`Outbox`] never blocks and never grows without bound:
//!
//! 1. while the queue has room (`capacity` updates), the update is queued: the dashboard will see
//!    every update, in order, as the original lab promised;
//! 2. when the queue is full, the update is **coalesced**: kept as the latest update of its server,
//!    replacing an older one not yet sent. The dashboard will miss intermediate updates but not the
//!    newest state of any server;
//! 3. when as many servers again are waiting as coalesced, a further server's update is **dropped**,
//!    and counted;
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

/// One server's update, serialized once and shared by every dashboard that receives it.
#[derive(Debug)]
pub struct Update<F> {
    /// Whose update this is: the key for coalescing.
    pub server_id: String,
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
            frame: frame.into(),
        }
    }

    /// A frame relayed as it is (System 1's pub/sub events).
    pub fn verbatim(server_id: &str, frame: F) -> Self {
        Update {
            server_id: server_id.to_owned(),
            frame,
        }
    }

    /// The payload of a `metric.update` frame, for `metric.updates` batches.
    pub fn payload(&self) -> &str {
        self.frame
            .strip_prefix(UPDATE_PREFIX)
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or(&self.frame)
    }
}

/// What happened to a pushed update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued: it will be sent.
    Queued,
    /// Kept as its server's latest (replacing an older unsent one, if any).
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
    latest: HashMap<String, Arc<Update<F>>>,
    /// Since when the queue has been full (or, for `maxHz`, the table), if it is.
    backed_up_since: Option<Instant>,
}

impl<F> Default for State<F> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            latest: HashMap::new(),
            backed_up_since: None,
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
                        *slot = update.clone();
                        Pushed::Coalesced
                    }
                    None if table_full => Pushed::Dropped,
                    None => {
                        s.latest.insert(update.server_id.clone(), update.clone());
                        Pushed::Coalesced
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
                if let Some(update) = s.latest.remove(&key) {
                    out.push(update);
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
        assert_eq!(o.push(&update("a", 2)), Pushed::Coalesced);
        assert_eq!(o.push(&update("a", 3)), Pushed::Coalesced, "replaces a/2");
        assert_eq!(o.push(&update("b", 0)), Pushed::Coalesced);
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
        assert!(o.backed_up_for().is_some());
        let sent = payloads(&o.take(10));
        assert_eq!(
            &sent[..2],
            [r#"{"serverId":"a","n":0}"#, r#"{"serverId":"a","n":1}"#]
        );
        let mut latest = sent[2..].to_vec();
        latest.sort();
        assert_eq!(latest, [r#"{"serverId":"a","n":3}"#, r#"{"serverId":"b","n":1}"#]);
        assert_eq!(o.backed_up_for(), None, "drained: no longer backed up");
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
        for n in 0..100 {
            assert_eq!(o.push(&update("a", n)), Pushed::Coalesced);
        }
        assert_eq!(o.depth(), (0, 1));
        assert_eq!(o.backed_up_for(), None, "coalescing is their normal path");
        assert_eq!(payloads(&o.take(10)), [r#"{"serverId":"a","n":99}"#]);
    }

    #[test]
    fn verbatim_frames_travel_unchanged() {
        let u: Update<String> = Update::verbatim("s", r#"{"type":"metric.processed"}"#.to_owned());
        assert_eq!(u.payload(), r#"{"type":"metric.processed"}"#);
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
