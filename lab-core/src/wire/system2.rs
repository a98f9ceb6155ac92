//! System 2's WebSocket frames (port 4100). Every frame is one JSON object with a `type`.
//!
//! ```text
//! client                                   server
//!   ── connect ───────────────────────────▶
//!   ◀──────────────── {"type":"connection.ack","message":...}
//!   ── {"type":"register","role":"producer"} ▶
//!   ◀──────────────── {"type":"register.ack","role":"producer","serverFilter":null}
//!   ── {"type":"metric",...,"seq":7} ─────▶   (producer)
//!   ◀──────────────── {"type":"metric.ack","serverId":"server-1","seq":7}
//!                     {"type":"metric.update","payload":{...}} ──▶ every matching dashboard
//! ```

use serde::{Deserialize, Serialize};

use crate::aggregate::WindowSummaries;
use crate::metric::Metric;
use crate::problem::Problem;
use crate::wire::gap::Gap;

/// What a connection is for. Producers send metrics; dashboards receive updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends `metric` / `metrics` frames and gets acks.
    Producer,
    /// Receives `metric.update` pushes for the servers it asked for.
    Dashboard,
}

impl Role {
    /// The wire name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Dashboard => "dashboard",
        }
    }
}

/// `{"type":"register",...}`: what a client says it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// Producer or dashboard.
    pub role: Role,
    /// For a dashboard: only updates of this server (`None`: all). For a producer: informative.
    #[serde(rename = "serverId", default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// **(ext)** A dashboard's cap on updates per server per second; the latest update wins.
    #[serde(rename = "maxHz", default, skip_serializing_if = "Option::is_none")]
    pub max_hz: Option<u32>,
    /// **(ext)** A dashboard asks for `metric.updates` frames holding as many updates as are ready.
    #[serde(rename = "batchUpdates", default, skip_serializing_if = "Option::is_none")]
    pub batch_updates: Option<bool>,
    /// **(ext)** The shared secret, when the server requires one (it may also come in the URL query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Every frame a client may send to System 2, after parsing and validation.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// `register`.
    Register(Register),
    /// `metric`: one sample.
    Metric(Metric),
    /// **(ext)** `metrics`: a batch of samples, acked once.
    Metrics(Vec<Metric>),
    /// `snapshot.request`: the current aggregates of one server (`Some`) or all (`None`).
    SnapshotRequest {
        /// Which server, or all.
        server_id: Option<String>,
    },
}

/// The aggregates of one server, as pushed to dashboards and returned in snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatePayload {
    /// Whose aggregates these are.
    #[serde(rename = "serverId")]
    pub server_id: String,
    /// The timestamp of the metric that caused this update (its own, not the server's clock), so a
    /// dashboard computes end-to-end latency as `now − timestamp`.
    pub timestamp: f64,
    /// One summary per window, keyed by the window's length in milliseconds.
    pub windows: WindowSummaries,
    /// **(ext)** The `seq` of the metric that caused this update, so loss is countable end to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// **(ext)** How many earlier updates of this server this one stands for, when a dashboard fell
    /// behind and they were coalesced (see `lab_core::outbox`). Absent when none were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<u64>,
    /// **(ext)** With `coalesced`: the lowest `seq` among the updates this one stands for, itself
    /// included.
    #[serde(rename = "firstSeq", default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// **(ext)** With `coalesced`: the highest such `seq`.
    #[serde(rename = "lastSeq", default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// An [`UpdatePayload`] borrowed from a server's windows: serialized straight from them without
/// copying them into an owned payload first, once per metric, however many dashboards receive it. The
/// same bytes as the owned form with no coalescing fields (a test holds them equal).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UpdatePayloadRef<'a> {
    /// Whose aggregates these are.
    #[serde(rename = "serverId")]
    pub server_id: &'a str,
    /// The timestamp of the metric that caused this update.
    pub timestamp: f64,
    /// One summary per window.
    pub windows: &'a WindowSummaries,
    /// The `seq` of the metric that caused this update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl UpdatePayloadRef<'_> {
    /// The payload as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("payloads always serialize")
    }
}

/// `{"type":"metric.ack","serverId":…,"seq":…}`: [`ServerFrame::MetricAck`] as serde writes it, without
/// copying the server id into an owned frame first (one per metric).
pub fn metric_ack_json(server_id: &str, seq: Option<u64>) -> String {
    #[derive(Serialize)]
    struct Ack<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(rename = "serverId")]
        server_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    }
    serde_json::to_string(&Ack {
        kind: "metric.ack",
        server_id,
        seq,
    })
    .expect("acks always serialize")
}

/// The payload of a `snapshot`: one server's aggregates (or `null` if unknown), or all servers'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SnapshotPayload {
    /// Answer to a request that named a server.
    One(Option<UpdatePayload>),
    /// Answer to a request for all servers.
    All(Vec<UpdatePayload>),
}

/// Every frame System 2 sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    /// Sent once, right after the WebSocket opens.
    #[serde(rename = "connection.ack")]
    ConnectionAck {
        /// A greeting, for people reading a capture.
        message: String,
    },
    /// Answer to `register`.
    #[serde(rename = "register.ack")]
    RegisterAck {
        /// The role now in force.
        role: Role,
        /// The dashboard's server filter (`null`: all servers).
        #[serde(rename = "serverFilter")]
        server_filter: Option<String>,
    },
    /// A producer's `metric` was accepted.
    #[serde(rename = "metric.ack")]
    MetricAck {
        /// The metric's server.
        #[serde(rename = "serverId")]
        server_id: String,
        /// **(ext)** The metric's `seq`, when it had one, so acks match sends without relying on order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// **(ext)** A producer's `metrics` batch was accepted, whole.
    #[serde(rename = "metrics.ack")]
    MetricsAck {
        /// How many metrics the batch held.
        accepted: usize,
    },
    /// One server's aggregates changed (the original's one update per metric).
    #[serde(rename = "metric.update")]
    MetricUpdate {
        /// The new aggregates.
        payload: UpdatePayload,
    },
    /// **(ext)** Several updates in one frame, for dashboards that registered with `batchUpdates`.
    #[serde(rename = "metric.updates")]
    MetricUpdates {
        /// The updates, oldest first.
        items: Vec<UpdatePayload>,
    },
    /// Answer to `snapshot.request`.
    #[serde(rename = "snapshot")]
    Snapshot {
        /// One server's aggregates, or all.
        payload: SnapshotPayload,
    },
    /// **(ext)** Updates this dashboard did not get, said out loud: its queue and coalescing table
    /// were full and they were dropped ([`crate::wire::gap`]). Sent before the next updates.
    #[serde(rename = "gap")]
    Gap(Gap),
    /// A client message could not be used. The connection stays open.
    #[serde(rename = "error")]
    Error {
        /// One of the protocol's fixed messages: `Invalid JSON payload`, `Invalid metric payload`,
        /// `Unknown message type`, …
        message: String,
        /// Every problem found, each with its field path.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        details: Vec<Problem>,
    },
}

impl ServerFrame {
    /// The frame as JSON text. Serializing these types cannot fail (no maps with non-string keys,
    /// no failing `Serialize` impls), so this does not return a `Result`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::{ServerWindows, WindowSpec};
    use crate::metric::Readings;
    use crate::outbox::{Update, batch_frame};

    fn windows() -> WindowSummaries {
        let mut windows = ServerWindows::new(&WindowSpec::default(), 10).unwrap();
        let readings = Readings {
            cpu: 12.5,
            memory: 40.0,
            disk: 0.1,
            network: None,
            extra: vec![],
        };
        windows.add(1_000.0, &readings);
        windows.add(1_500.5, &readings);
        windows.summaries()
    }

    #[test]
    fn the_borrowed_payload_is_the_owned_ones_json() {
        let windows = windows();
        for seq in [None, Some(7)] {
            let fast = UpdatePayloadRef {
                server_id: "s-1",
                timestamp: 1_500.5,
                windows: &windows,
                seq,
            };
            let typed = UpdatePayload {
                server_id: "s-1".into(),
                timestamp: 1_500.5,
                windows: windows.clone(),
                seq,
                coalesced: None,
                first_seq: None,
                last_seq: None,
            };
            assert_eq!(fast.to_json(), serde_json::to_string(&typed).unwrap());
            // And wrapped by the outbox, it is the `metric.update` frame; batched, `metric.updates`.
            let update = Arc::new(Update::<String>::new("s-1", &fast.to_json()));
            let frame = ServerFrame::MetricUpdate {
                payload: typed.clone(),
            };
            assert_eq!(update.frame, frame.to_json());
            let batch = ServerFrame::MetricUpdates {
                items: vec![typed.clone(), typed],
            };
            assert_eq!(batch_frame(&[update.clone(), update]), batch.to_json());
        }
    }

    #[test]
    fn the_ack_is_the_typed_frames_json() {
        for (server_id, seq) in [("server-1", Some(7)), ("a\"b", None)] {
            let typed = ServerFrame::MetricAck {
                server_id: server_id.into(),
                seq,
            };
            assert_eq!(metric_ack_json(server_id, seq), typed.to_json());
        }
    }
}
