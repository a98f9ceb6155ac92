//! System 1's messages: HTTP bodies (ports 4000/4001), Redis stream entries and pub/sub events, and
//! the dashboard WebSocket (port 4002).
//!
//! ```text
//! agent ──POST /metrics──▶ api ──XADD──▶ stream metrics:stream ──XREADGROUP──▶ worker
//!   ◀── 202 {"status":"accepted"}  │                                           │ HSET metrics:latest:<id>
//!                                  └─PUBLISH metric.ingested──┐                 │ PUBLISH metric.processed
//!                                                             ▼                 ▼
//!                                           channel metrics:pubsub ──▶ broadcaster ──WS──▶ dashboards
//! ```

pub use super::gap::{Gap, GapReason};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregate::WindowSummaries;
use crate::metric::{Metric, Readings};
use crate::problem::Problem;
use crate::wire::system2::SnapshotPayload;

// ---- HTTP bodies ----

/// `202` body: the metric (or the whole batch) is in Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// Always `"accepted"` (the original's body).
    pub status: String,
    /// **(ext)** How many metrics were appended.
    #[serde(default)]
    pub accepted: usize,
    /// **(ext)** The stream entry ids, in the order of the request.
    #[serde(default)]
    pub ids: Vec<String>,
}

impl Accepted {
    /// The body for these stream entry ids.
    pub fn new(ids: Vec<String>) -> Self {
        Accepted {
            status: "accepted".into(),
            accepted: ids.len(),
            ids,
        }
    }
}

/// `400` body: every problem of the request, each with its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidPayload {
    /// Always `"Invalid payload"` (the original's message).
    pub error: String,
    /// Every problem found.
    pub details: Vec<Problem>,
}

impl InvalidPayload {
    /// The body for these problems.
    pub fn new(details: Vec<Problem>) -> Self {
        InvalidPayload {
            error: "Invalid payload".into(),
            details,
        }
    }
}

/// Body of every other error status (413, 415, 429, 503, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// `GET /healthz` body (the original's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthz {
    /// `"ok"` when the process can do its job, `"degraded"` when Redis is unreachable.
    pub status: String,
    /// The state of the Redis connection: `"ready"`, `"reconnecting"`, … (ioredis' words).
    pub redis: String,
}

// ---- Redis stream entries ----

/// The stream entry's field names (the original's), plus our `seq`.
pub mod field {
    /// Field holding the `serverId`.
    pub const SERVER_ID: &str = "serverId";
    /// Field holding the timestamp, as a decimal number.
    pub const TIMESTAMP: &str = "timestamp";
    /// Field holding `metrics` as a JSON string.
    pub const METRICS: &str = "metrics";
    /// **(ext)** Field holding `seq`, when the metric had one.
    pub const SEQ: &str = "seq";
}

/// The fields of a stream entry for `metric`, ready for `XADD`. Timestamps print in Rust's shortest
/// round-trip form, so the worker reads back exactly the `f64` the agent sent.
pub fn to_stream_fields(metric: &Metric) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        (field::SERVER_ID, metric.server_id.clone()),
        (field::TIMESTAMP, metric.timestamp.to_string()),
        (
            field::METRICS,
            serde_json::to_string(&metric.metrics).expect("readings always serialize"),
        ),
    ];
    if let Some(seq) = metric.seq {
        fields.push((field::SEQ, seq.to_string()));
    }
    fields
}

/// Why a stream entry could not be read back as a metric. Entries are written by our API after
/// validation, so this means someone else wrote to the stream: the worker logs and acks such an
/// entry (it can never succeed) and counts it.
#[derive(Debug, Error, PartialEq)]
pub enum StreamEntryError {
    /// A required field is absent.
    #[error("stream entry has no `{0}` field")]
    Missing(&'static str),
    /// A field is present but unreadable.
    #[error("stream entry field `{field}` is invalid: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Reads a stream entry's fields back into a metric, applying the same rules as ingest.
pub fn from_stream_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Metric, StreamEntryError> {
    let (mut server_id, mut timestamp, mut metrics, mut seq) = (None, None, None, None);
    for (name, value) in fields {
        match name {
            field::SERVER_ID => server_id = Some(value),
            field::TIMESTAMP => timestamp = Some(value),
            field::METRICS => metrics = Some(value),
            field::SEQ => seq = Some(value),
            _ => {} // unknown fields are tolerated: others may annotate entries
        }
    }
    let text = |field: &'static str, v: &'a [u8]| {
        std::str::from_utf8(v).map_err(|e| StreamEntryError::Invalid {
            field,
            reason: e.to_string(),
        })
    };
    let invalid = |field: &'static str| {
        move |e: &dyn std::fmt::Display| StreamEntryError::Invalid {
            field,
            reason: e.to_string(),
        }
    };
    let server_id = text(
        field::SERVER_ID,
        server_id.ok_or(StreamEntryError::Missing(field::SERVER_ID))?,
    )?;
    let timestamp = text(
        field::TIMESTAMP,
        timestamp.ok_or(StreamEntryError::Missing(field::TIMESTAMP))?,
    )?
    .parse::<f64>()
    .map_err(|e| invalid(field::TIMESTAMP)(&e))?;
    let metrics: Readings = serde_json::from_slice(metrics.ok_or(StreamEntryError::Missing(field::METRICS))?)
        .map_err(|e| invalid(field::METRICS)(&e))?;
    let seq = match seq {
        None => None,
        Some(v) => Some(
            text(field::SEQ, v)?
                .parse::<u64>()
                .map_err(|e| invalid(field::SEQ)(&e))?,
        ),
    };
    let metric = Metric {
        server_id: server_id.to_owned(),
        timestamp,
        metrics,
        seq,
    };
    let mut problems = Vec::new();
    metric.check("", None, &mut problems);
    match problems.into_iter().next() {
        None => Ok(metric),
        Some(p) => Err(StreamEntryError::Invalid {
            field: "metric",
            reason: p.to_string(),
        }),
    }
}

// ---- pub/sub events (channel `metrics:pubsub`), relayed verbatim to dashboards ----

/// What a worker publishes once it has processed a metric: the metric and its server's aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Processed {
    /// The metric's server.
    #[serde(rename = "serverId")]
    pub server_id: String,
    /// The metric's own timestamp, so a dashboard can compute end-to-end latency.
    pub timestamp: f64,
    /// The metric's readings (the original's payload).
    pub metrics: Readings,
    /// **(ext)** The metric's `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// **(ext)** The server's window aggregates after this metric, as System 2 computes them. System
    /// 1's workers attach them to the last event of each server in a batch only (the state after the
    /// batch); the server's other events in that batch have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowSummaries>,
}

/// An event on the pub/sub channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// The API appended a metric to the stream.
    #[serde(rename = "metric.ingested")]
    Ingested {
        /// The stream entry id.
        #[serde(rename = "entryId")]
        entry_id: String,
        /// The metric as received.
        payload: Metric,
    },
    /// A worker aggregated a metric and stored the snapshot.
    #[serde(rename = "metric.processed")]
    Processed {
        /// The stream entry id.
        #[serde(rename = "entryId")]
        entry_id: String,
        /// The metric and its server's aggregates.
        payload: Processed,
    },
}

impl Event {
    /// The `serverId` the event is about, for dashboard filters.
    pub fn server_id(&self) -> &str {
        match self {
            Event::Ingested { payload, .. } => &payload.server_id,
            Event::Processed { payload, .. } => &payload.server_id,
        }
    }
}

// ---- the fast writers: the same bytes as serde writes for the types above, without building them ----
//
// The servers write these messages thousands of times a second. Building an owned `Metric`, `Accepted`
// or `Event` first only to serialize it would clone every string and every window, so the hot paths
// write the JSON straight from what they hold. Each writer lives beside the type whose bytes it must
// match, and a test (here, and a property test in `tests/properties.rs`) holds the two byte-equal: the
// typed form is the protocol's definition, the fast form an optimisation of it.

/// Writes `metric`'s JSON into `buffer` (cleared first), byte for byte what serde writes for
/// [`Metric`]: the `metric.ingested` payload. Returns where the readings (the `"metrics":` value) sit in
/// it, which is the stream entry's `metrics` field ([`to_stream_fields`] writes the same bytes), so the
/// API serializes each metric once for both.
pub fn write_ingested_payload(metric: &Metric, buffer: &mut Vec<u8>) -> std::ops::Range<usize> {
    const WRITE: &str = "writing JSON to a Vec cannot fail";
    buffer.clear();
    buffer.extend_from_slice(b"{\"serverId\":");
    serde_json::to_writer(&mut *buffer, &metric.server_id).expect(WRITE);
    buffer.extend_from_slice(b",\"timestamp\":");
    serde_json::to_writer(&mut *buffer, &metric.timestamp).expect(WRITE);
    buffer.extend_from_slice(b",\"metrics\":");
    let start = buffer.len();
    serde_json::to_writer(&mut *buffer, &metric.metrics).expect(WRITE);
    let end = buffer.len();
    if let Some(seq) = metric.seq {
        buffer.extend_from_slice(b",\"seq\":");
        serde_json::to_writer(&mut *buffer, &seq).expect(WRITE);
    }
    buffer.push(b'}');
    start..end
}

/// The `202` body, [`Accepted`] in JSON, written directly: stream ids are digits and one dash, so they
/// need no escaping, and this skips serde's machinery for a few dozen bytes.
pub fn accepted_json(ids: &[String]) -> String {
    use std::fmt::Write as _;
    let mut body = String::with_capacity(48 + ids.len() * 24);
    body.push_str(r#"{"status":"accepted","accepted":"#);
    let _ = write!(body, "{}", ids.len());
    body.push_str(r#","ids":["#);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push('"');
        body.push_str(id);
        body.push('"');
    }
    body.push_str("]}");
    body
}

/// The text of a `metric.ingested` event up to its entry id: [`Event::Ingested`] as serde writes it.
///
/// **The API's Lua ingest script (`system1-http`'s `store::INGEST_SCRIPT`) spells this envelope
/// itself**, since it learns the entry id only inside Redis: `PREFIX .. id .. PAYLOAD_KEY .. payload ..
/// '}'`. It must spell [`INGESTED_PREFIX`] and [`INGESTED_PAYLOAD_KEY`] exactly; [`ingested_event`] is
/// the same concatenation in Rust, tested against serde, for the script's test to compare with.
pub const INGESTED_PREFIX: &str = r#"{"type":"metric.ingested","entryId":""#;

/// The text of a `metric.ingested` event between its entry id and its payload (see
/// [`INGESTED_PREFIX`]).
pub const INGESTED_PAYLOAD_KEY: &str = r#"","payload":"#;

/// A `metric.ingested` event from its entry id and its payload's JSON ([`write_ingested_payload`]),
/// concatenated as the Lua ingest script does (see [`INGESTED_PREFIX`]).
pub fn ingested_event(entry_id: &str, payload_json: &str) -> String {
    let mut event = String::with_capacity(
        INGESTED_PREFIX.len() + entry_id.len() + INGESTED_PAYLOAD_KEY.len() + payload_json.len() + 1,
    );
    event.push_str(INGESTED_PREFIX);
    event.push_str(entry_id);
    event.push_str(INGESTED_PAYLOAD_KEY);
    event.push_str(payload_json);
    event.push('}');
    event
}

/// Appends a `metric.processed` event to `out`, byte for byte what serde writes for
/// [`Event::Processed`], but borrowing the metric and its windows instead of cloning them into a
/// [`Processed`], into a buffer the worker reuses.
pub fn write_processed(
    out: &mut Vec<u8>,
    entry_id: &str,
    metric: &Metric,
    windows: Option<&WindowSummaries>,
) {
    #[derive(Serialize)]
    struct ProcessedEvent<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(rename = "entryId")]
        entry_id: &'a str,
        payload: Payload<'a>,
    }
    #[derive(Serialize)]
    struct Payload<'a> {
        #[serde(rename = "serverId")]
        server_id: &'a str,
        timestamp: f64,
        metrics: &'a Readings,
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

/// What the broadcaster reads of each [`Event`] it relays: enough to route it (its kind, its server)
/// and to report coalescing (its `seq`), without reading the readings and windows it passes on
/// verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRoute {
    /// `metric.ingested` or `metric.processed` (any other kind is read too, and routed alike).
    pub kind: String,
    /// The payload's `serverId`: which dashboards' filters it passes.
    pub server_id: String,
    /// The payload's `seq`, if it has one.
    pub seq: Option<u64>,
}

impl EventRoute {
    /// Reads the route of an event's JSON text; fails for text that is not an event.
    pub fn read(text: &str) -> Result<EventRoute, serde_json::Error> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "type")]
            kind: String,
            payload: Payload,
        }
        #[derive(Deserialize)]
        struct Payload {
            #[serde(rename = "serverId")]
            server_id: String,
            #[serde(default)]
            seq: Option<u64>,
        }
        let head: Head = serde_json::from_str(text)?;
        Ok(EventRoute {
            kind: head.kind,
            server_id: head.payload.server_id,
            seq: head.payload.seq,
        })
    }
}

// ---- the dashboard WebSocket (port 4002) ----

/// What a System 1 dashboard may ask, after parsing (see [`crate::parse::parse_dashboard_request`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DashboardRequest {
    /// `{"type":"subscribe","serverId":"server-1"}`, or `null` for every server.
    Subscribe {
        /// Which server, or all.
        server_id: Option<String>,
        /// **(ext)** `"batchUpdates":true`: what a System 2 dashboard that asks the same gets — the
        /// aggregated updates (`metric.processed` payloads; no `metric.ingested`), as many per
        /// `{"type":"metric.updates","items":[…]}` frame as are ready. Absent or `false`: every event,
        /// one per frame, as the original.
        batch_updates: bool,
    },
    /// `{"type":"snapshot.request","serverId"?}`.
    SnapshotRequest {
        /// Which server, or all.
        server_id: Option<String>,
    },
}

/// What the System 1 broadcaster says to a dashboard, besides relaying [`Event`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DashboardReply {
    /// Answer to `subscribe`.
    #[serde(rename = "subscription.ack")]
    SubscriptionAck {
        /// The filter now in force (`null`: all servers).
        #[serde(rename = "serverId")]
        server_id: Option<String>,
    },
    /// Answer to `snapshot.request`, read from the Redis hashes.
    #[serde(rename = "snapshot")]
    Snapshot {
        /// One server's aggregates, or all.
        payload: SnapshotPayload,
    },
    /// **(ext)** Events the broadcaster could not deliver, said out loud instead of left for the
    /// dashboard to guess: after a gap it cannot fill, every dashboard gets one, in order with the
    /// events (events before it came before the gap, events after it came after). Old clients ignore
    /// the unknown type.
    ///
    /// `{"type":"gap","eventType":"metric.processed","events":12,"fromMs":…,"toMs":…,"reason":"trimmed"}`
    #[serde(rename = "gap")]
    Gap(Gap),
    /// A client message could not be used; the connection stays open.
    #[serde(rename = "error")]
    Error {
        /// `Malformed client message` (the original's), …
        message: String,
        /// **(ext)** Every problem found.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        details: Vec<Problem>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{ServerWindows, WindowSpec};
    use crate::metric::Network;

    fn metrics() -> Vec<Metric> {
        let readings = Readings {
            cpu: 12.5,
            memory: 40.0,
            disk: 0.1,
            network: Some(Network { rx: 1e-7, tx: 2.0e20 }),
            extra: vec![("gpu".into(), 99.0), ("tempC".into(), -3.25)],
        };
        vec![
            Metric {
                server_id: "server-1".into(),
                timestamp: 1_763_800_000_000.0,
                metrics: readings.clone(),
                seq: Some(0),
            },
            Metric {
                server_id: "a.b:c_d-E".into(),
                timestamp: 1_763_800_000_123.456,
                metrics: Readings {
                    network: None,
                    extra: vec![],
                    ..readings
                },
                seq: None,
            },
        ]
    }

    #[test]
    fn the_ingested_payload_and_its_stream_field_are_what_serde_writes() {
        let mut buffer = Vec::new();
        for metric in metrics() {
            let readings = write_ingested_payload(&metric, &mut buffer);
            let payload = std::str::from_utf8(&buffer).unwrap();
            assert_eq!(payload, serde_json::to_string(&metric).unwrap());
            let fields = to_stream_fields(&metric);
            let field = fields.iter().find(|(k, _)| *k == field::METRICS).unwrap();
            assert_eq!(std::str::from_utf8(&buffer[readings]).unwrap(), field.1);
            // The envelope the Lua script writes around it.
            let event = Event::Ingested {
                entry_id: "1763800000000-7".into(),
                payload: metric.clone(),
            };
            assert_eq!(
                ingested_event("1763800000000-7", payload),
                serde_json::to_string(&event).unwrap()
            );
        }
    }

    #[test]
    fn the_accepted_body_is_accepted_in_json() {
        for ids in [
            vec![],
            vec!["1763800000000-0".to_owned()],
            vec!["1-0".into(), "1-1".into()],
        ] {
            let typed = serde_json::to_string(&Accepted::new(ids.clone())).unwrap();
            assert_eq!(accepted_json(&ids), typed);
        }
    }

    #[test]
    fn processed_events_are_the_protocols() {
        let metric = metrics().remove(0);
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

    #[test]
    fn an_events_route_is_read_from_its_typed_form() {
        for metric in metrics() {
            let ingested = Event::Ingested {
                entry_id: "1-0".into(),
                payload: metric.clone(),
            };
            let route = EventRoute::read(&serde_json::to_string(&ingested).unwrap()).unwrap();
            assert_eq!(
                route,
                EventRoute {
                    kind: "metric.ingested".into(),
                    server_id: ingested.server_id().into(),
                    seq: metric.seq,
                }
            );
            let mut processed = Vec::new();
            write_processed(&mut processed, "1-0", &metric, None);
            let route = EventRoute::read(std::str::from_utf8(&processed).unwrap()).unwrap();
            assert_eq!(route.kind, "metric.processed");
            assert_eq!((route.server_id, route.seq), (metric.server_id, metric.seq));
        }
        assert!(
            EventRoute::read(r#"{"type":"metric.ingested"}"#).is_err(),
            "no payload"
        );
        assert!(EventRoute::read("not json").is_err());
    }

    #[test]
    fn a_gap_frame_is_the_documented_json() {
        let gap = DashboardReply::Gap(Gap {
            event_type: "metric.processed".into(),
            events: Some(12),
            from_ms: 1_000,
            to_ms: 3_500,
            reason: GapReason::Trimmed,
        });
        let text = serde_json::to_string(&gap).unwrap();
        assert_eq!(
            text,
            r#"{"type":"gap","eventType":"metric.processed","events":12,"fromMs":1000,"toMs":3500,"reason":"trimmed"}"#
        );
        assert_eq!(serde_json::from_str::<DashboardReply>(&text).unwrap(), gap);
        let unknown: DashboardReply = serde_json::from_str(
            r#"{"type":"gap","eventType":"*","events":null,"fromMs":1,"toMs":2,"reason":"unsubscribed"}"#,
        )
        .unwrap();
        let DashboardReply::Gap(gap) = unknown else {
            panic!()
        };
        assert_eq!((gap.events, gap.reason), (None, GapReason::Unsubscribed));
    }
}
