//! Turning untrusted bytes into protocol messages, cheaply for good input and precisely for bad.
//!
//! Every entry point follows the same three steps:
//!
//! 1. **Refuse the hostile cheaply.** The size is checked before any parsing
//!    ([`MAX_MESSAGE_BYTES`]). Nesting depth is checked by a byte scan before the input is parsed into
//!    a tree ([`MAX_JSON_DEPTH`]), so a document of a million `[` costs a scan, not a stack overflow.
//!    Numbers too large for an `f64` (`1e400`) are a parse error, not infinity.
//! 2. **Fast path.** serde deserializes straight into typed structs and [`Metric::check`] applies the
//!    value rules. This is the path every valid metric takes; it never builds a JSON tree.
//! 3. **Diagnosing path.** Only when step 2 refused the input (or for rare messages such as
//!    `register`): parse into a `serde_json::Value` and walk it with [`Fields`], recording every
//!    problem with its path. Whatever this path accepts is accepted.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess};
use serde_json::Value;
use thiserror::Error;

use crate::limits::{MAX_BATCH_ITEMS, MAX_DASHBOARD_HZ, MAX_JSON_DEPTH, MAX_MESSAGE_BYTES, MAX_TOKEN_LEN};
use crate::metric::{KeyStr, Metric, ObjectFields, ObjectVisitor, Readings, diagnose_metric, fill};
use crate::problem::{self, Fields, Problem, type_name};
use crate::wire::system1::DashboardRequest;
use crate::wire::system2::{ClientFrame, Register, Role, ServerFrame};

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParseError {
    /// The message is larger than we parse. Checked before parsing.
    #[error("message is {len} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON (or JSON we refuse to read: too deep, numbers out of range, invalid UTF-8).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A frame whose `type` we do not know (`None`: no string `type` at all).
    #[error("unknown message type {0:?}")]
    UnknownType(Option<String>),
    /// JSON of a known kind, with these problems.
    #[error("invalid {kind} message ({} problem(s); first: {})", problems.len(), problems.first().map(|p| p.to_string()).unwrap_or_default())]
    Invalid {
        /// The message's kind: `metric`, `register`, `snapshot.request`, `subscribe`, `body`.
        kind: &'static str,
        /// Every problem, each with its path.
        problems: Vec<Problem>,
    },
}

impl ParseError {
    /// Every problem, for an error response's `details`.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ParseError::Invalid { problems, .. } => problems.clone(),
            ParseError::UnknownType(Some(t)) => {
                vec![Problem::new(
                    "/type",
                    format!(
                        "{t:?} is not a message type (expected one of: register, metric, metrics, snapshot.request)"
                    ),
                )]
            }
            ParseError::UnknownType(None) => {
                vec![Problem::new(
                    "/type",
                    "must be present: every frame is a JSON object with a string `type`",
                )]
            }
            other => vec![Problem::new("", other.to_string())],
        }
    }

    /// The System 2 `error` frame for this error, with the protocol's exact `message`.
    pub fn to_system2_frame(&self) -> ServerFrame {
        let message = match self {
            ParseError::TooLarge { .. } => "Message too large",
            ParseError::InvalidJson(_) => "Invalid JSON payload",
            ParseError::UnknownType(_) => "Unknown message type",
            ParseError::Invalid { kind: "metric", .. } => "Invalid metric payload",
            ParseError::Invalid { kind: "register", .. } => "Invalid register payload",
            ParseError::Invalid { .. } => "Invalid message payload",
        };
        ServerFrame::Error {
            message: message.into(),
            details: self.problems(),
        }
    }
}

/// Refuses input longer than `limit` bytes.
pub fn check_size(bytes: &[u8], limit: usize) -> Result<(), ParseError> {
    if bytes.len() > limit {
        return Err(ParseError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    Ok(())
}

/// Refuses JSON nested deeper than `max` arrays/objects, by scanning bytes (strings are skipped,
/// escapes honoured). Linear, no allocation, no recursion: safe on any input.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ParseError::InvalidJson(format!(
                        "nesting deeper than {max} levels at byte {i}; no message of this protocol nests that deep"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses into a JSON tree for the diagnosing path, after the depth check.
fn parse_tree(bytes: &[u8]) -> Result<Value, ParseError> {
    check_depth(bytes, MAX_JSON_DEPTH)?;
    serde_json::from_slice(bytes).map_err(|e| ParseError::InvalidJson(e.to_string()))
}

/// Runs the value rules over metrics the fast path deserialized; `Ok` only when none is broken.
fn checked(metrics: Vec<Metric>, batch: bool, base: &str) -> Option<Vec<Metric>> {
    let mut problems = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        if batch {
            m.check(&format!("{base}/{i}"), Some(i), &mut problems);
        } else {
            m.check("", None, &mut problems);
        }
    }
    problems.is_empty().then_some(metrics)
}

// ---- System 1: the body of `POST /metrics` ----

/// Parses the body of System 1's `POST /metrics`: one metric object, or **(ext)** an array of
/// 1 to [`MAX_BATCH_ITEMS`] of them, validated all-or-nothing.
pub fn parse_metrics_body(bytes: &[u8]) -> Result<Vec<Metric>, ParseError> {
    check_size(bytes, MAX_MESSAGE_BYTES)?;
    let is_array = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let fast = if is_array {
        serde_json::from_slice::<Vec<Metric>>(bytes)
            .ok()
            .filter(|items| (1..=MAX_BATCH_ITEMS).contains(&items.len()))
            .and_then(|items| checked(items, true, ""))
    } else {
        serde_json::from_slice::<Metric>(bytes)
            .ok()
            .and_then(|m| checked(vec![m], false, ""))
    };
    if let Some(metrics) = fast {
        return Ok(metrics);
    }
    let tree = parse_tree(bytes)?;
    let mut problems = Vec::new();
    let metrics = match &tree {
        Value::Array(items) => diagnose_batch(items, "", &mut problems),
        Value::Object(_) => diagnose_metric(&tree, "", None, &[], &mut problems).map(|m| vec![m]),
        other => {
            problems.push(Problem::new(
                "",
                format!(
                    "must be a metric object or an array of metrics (got {})",
                    type_name(other)
                ),
            ));
            None
        }
    };
    match metrics {
        Some(metrics) if problems.is_empty() => Ok(metrics),
        _ => Err(ParseError::Invalid {
            kind: "body",
            problems,
        }),
    }
}

/// Diagnoses every item of a batch at `base` (`""` for an array body, `/items` in a frame).
fn diagnose_batch(items: &[Value], base: &str, problems: &mut Vec<Problem>) -> Option<Vec<Metric>> {
    if items.is_empty() {
        problems.push(Problem::new(base, "must hold at least one metric"));
        return None;
    }
    if items.len() > MAX_BATCH_ITEMS {
        // Diagnosing each item of an oversize batch would be wasted work: it is refused whole.
        problems.push(Problem::new(
            base,
            format!(
                "holds {} metrics; a batch holds at most {MAX_BATCH_ITEMS}",
                items.len()
            ),
        ));
        return None;
    }
    let metrics: Vec<Option<Metric>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| diagnose_metric(item, &format!("{base}/{i}"), Some(i), &[], problems))
        .collect();
    metrics.into_iter().collect()
}

// ---- System 2: client frames ----

/// The shape of the two hot frames, `metric` and `metrics`, for the fast path. Any other frame, or
/// any mistake, fails this and goes to the diagnosing path. Deserialized from a JSON object only.
#[derive(Default)]
struct HotFrame<'a> {
    kind: Option<KeyStr<'a>>,
    server_id: Option<String>,
    timestamp: Option<f64>,
    metrics: Option<Readings>,
    seq: Option<Option<u64>>,
    items: Option<Vec<Metric>>,
}

impl<'de> ObjectFields<'de> for HotFrame<'de> {
    type Output = HotFrame<'de>;
    const EXPECTING: &'static str = "a frame object";
    fn slot<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "type" => fill(&mut self.kind, "type", map),
            "serverId" => fill(&mut self.server_id, "serverId", map),
            "timestamp" => fill(&mut self.timestamp, "timestamp", map),
            "metrics" => fill(&mut self.metrics, "metrics", map),
            "seq" => fill(&mut self.seq, "seq", map),
            "items" => fill(&mut self.items, "items", map),
            _ => Err(de::Error::custom("not a hot frame")),
        }
    }
    fn finish<E: de::Error>(self) -> Result<Self, E> {
        Ok(self)
    }
}

impl<'de> Deserialize<'de> for HotFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor::<HotFrame<'de>>(std::marker::PhantomData))
    }
}

impl HotFrame<'_> {
    fn into_frame(self) -> Option<ClientFrame> {
        let seq = self.seq.flatten();
        match (
            self.kind.as_ref().map(KeyStr::as_str),
            self.server_id,
            self.timestamp,
            self.metrics,
            self.items,
        ) {
            (Some("metric"), Some(server_id), Some(timestamp), Some(metrics), None) => {
                let metric = Metric {
                    server_id,
                    timestamp,
                    metrics,
                    seq,
                };
                checked(vec![metric], false, "").map(|mut m| ClientFrame::Metric(m.remove(0)))
            }
            (Some("metrics"), None, None, None, Some(items)) if self.seq.is_none() => {
                if !(1..=MAX_BATCH_ITEMS).contains(&items.len()) {
                    return None;
                }
                checked(items, true, "/items").map(ClientFrame::Metrics)
            }
            _ => None,
        }
    }
}

/// Parses one System 2 client frame (a WebSocket text message).
pub fn parse_client_frame(bytes: &[u8]) -> Result<ClientFrame, ParseError> {
    check_size(bytes, MAX_MESSAGE_BYTES)?;
    if let Some(frame) = serde_json::from_slice::<HotFrame>(bytes)
        .ok()
        .and_then(HotFrame::into_frame)
    {
        return Ok(frame);
    }
    let tree = parse_tree(bytes)?;
    let kind = match tree.get("type") {
        Some(Value::String(t)) => t.as_str(),
        _ => return Err(ParseError::UnknownType(None)),
    };
    let mut problems = Vec::new();
    let (kind, frame) = match kind {
        "metric" => (
            "metric",
            diagnose_metric(&tree, "", None, &["type"], &mut problems).map(ClientFrame::Metric),
        ),
        "metrics" => ("metric", diagnose_metrics_frame(&tree, &mut problems)),
        "register" => ("register", diagnose_register(&tree, &mut problems)),
        "snapshot.request" => (
            "snapshot.request",
            diagnose_server_filter(&tree, &mut problems)
                .map(|server_id| ClientFrame::SnapshotRequest { server_id }),
        ),
        other => return Err(ParseError::UnknownType(Some(other.to_owned()))),
    };
    match frame {
        Some(frame) if problems.is_empty() => Ok(frame),
        _ => Err(ParseError::Invalid { kind, problems }),
    }
}

fn diagnose_metrics_frame(tree: &Value, problems: &mut Vec<Problem>) -> Option<ClientFrame> {
    let mut f = Fields::of(tree, "", None, problems)?;
    f.deny_unknown(&["type", "items"]);
    let items = f.required("items")?;
    match items {
        Value::Array(items) => diagnose_batch(items, "/items", problems).map(ClientFrame::Metrics),
        other => {
            f.problem(
                "items",
                format!("must be an array of metrics (got {})", type_name(other)),
            );
            None
        }
    }
}

fn parse_role(value: &str) -> Result<(), String> {
    match value {
        "producer" | "dashboard" => Ok(()),
        other => Err(format!("must be \"producer\" or \"dashboard\" (got {other:?})")),
    }
}

fn check_token(token: &str) -> Result<(), String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "must be at most {MAX_TOKEN_LEN} bytes long (got {})",
            token.len()
        ));
    }
    Ok(())
}

fn diagnose_register(tree: &Value, problems: &mut Vec<Problem>) -> Option<ClientFrame> {
    let mut f = Fields::of(tree, "", None, problems)?;
    f.deny_unknown(&["type", "role", "serverId", "maxHz", "batchUpdates", "token"]);
    let role = f.req_str("role", parse_role);
    let server_id = f.opt_str("serverId", problem::check_server_id);
    let max_hz = f.opt_u64("maxHz", u64::from(MAX_DASHBOARD_HZ));
    if max_hz == Some(0) {
        f.problem(
            "maxHz",
            format!("must be between 1 and {MAX_DASHBOARD_HZ} (got 0)"),
        );
    }
    let batch_updates = f.opt_bool("batchUpdates");
    let token = f.opt_str("token", check_token);
    let role = match role? {
        "producer" => Role::Producer,
        _ => Role::Dashboard,
    };
    Some(ClientFrame::Register(Register {
        role,
        server_id: server_id.map(str::to_owned),
        max_hz: max_hz.map(|hz| hz as u32),
        batch_updates,
        token: token.map(str::to_owned),
    }))
}

/// System 1's `subscribe`: an optional `serverId` filter (`null`: all servers) and **(ext)** an
/// optional `batchUpdates`.
fn diagnose_subscribe(tree: &Value, problems: &mut Vec<Problem>) -> Option<DashboardRequest> {
    let mut f = Fields::of(tree, "", None, problems)?;
    f.deny_unknown(&["type", "serverId", "batchUpdates"]);
    let server_id = f.opt_str("serverId", problem::check_server_id).map(str::to_owned);
    let batch_updates = f.opt_bool("batchUpdates").unwrap_or(false);
    Some(DashboardRequest::Subscribe {
        server_id,
        batch_updates,
    })
}

/// A message whose only field beside `type` is an optional `serverId` filter: System 2's and System 1's
/// `snapshot.request`. `Some(None)` means "all servers".
fn diagnose_server_filter(tree: &Value, problems: &mut Vec<Problem>) -> Option<Option<String>> {
    let mut f = Fields::of(tree, "", None, problems)?;
    f.deny_unknown(&["type", "serverId"]);
    let server_id = f.opt_str("serverId", problem::check_server_id).map(str::to_owned);
    Some(server_id)
}

// ---- System 1: the dashboard WebSocket ----

/// Parses a System 1 dashboard's message: `subscribe` or `snapshot.request`. Every failure is
/// answered with the original's `Malformed client message`, with our details.
pub fn parse_dashboard_request(bytes: &[u8]) -> Result<DashboardRequest, ParseError> {
    check_size(bytes, MAX_MESSAGE_BYTES)?;
    let tree = parse_tree(bytes)?;
    let mut problems = Vec::new();
    let (kind, request) = match tree.get("type").and_then(Value::as_str) {
        Some("subscribe") => ("subscribe", diagnose_subscribe(&tree, &mut problems)),
        Some("snapshot.request") => (
            "snapshot.request",
            diagnose_server_filter(&tree, &mut problems)
                .map(|server_id| DashboardRequest::SnapshotRequest { server_id }),
        ),
        Some(other) => return Err(ParseError::UnknownType(Some(other.to_owned()))),
        None => return Err(ParseError::UnknownType(None)),
    };
    match request {
        Some(request) if problems.is_empty() => Ok(request),
        _ => Err(ParseError::Invalid { kind, problems }),
    }
}

/// Refuses metrics stamped more than `max_skew_ms` after `now_ms` (the receiving server's clock).
///
/// A timestamp from the far future would become its server's "now" in the aggregator and push every
/// later, honest sample out of the windows, so it is an input error, said as such. This needs the
/// clock, so it is not part of parsing: servers call it right after. `batch_base` is the batch's JSON
/// Pointer (`""` for an array body, `/items` in a frame), or `None` for a single metric.
pub fn check_not_future(
    metrics: &[Metric],
    now_ms: f64,
    max_skew_ms: f64,
    batch_base: Option<&str>,
) -> Result<(), ParseError> {
    let problems: Vec<Problem> = metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| m.timestamp > now_ms + max_skew_ms)
        .map(|(i, m)| Problem {
            path: match batch_base {
                Some(base) => format!("{base}/{i}/timestamp"),
                None => "/timestamp".into(),
            },
            index: batch_base.map(|_| i),
            message: format!(
                "is {:.0} ms ahead of the server clock; at most {max_skew_ms:.0} ms of clock skew is allowed",
                m.timestamp - now_ms
            ),
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ParseError::Invalid {
        kind: "metric",
        problems,
    })
}
