//! One WebSocket connection of System 2: what its messages mean. The loop around it — heartbeat,
//! slow-dashboard check, drain-per-wake, feed and flush, write stalls — is the one both systems run,
//! [`lab_core::delivery::run`]; this module is its [`Handler`].
//!
//! Producers are handled inline: a metric is parsed, aggregated, fanned out and acked in the same task
//! that read it, so a producer that sends faster than it reads acks slows down only itself (its acks
//! back up in its own socket). Replies are *fed* into the socket and flushed once per burst of messages
//! that were ready together, not once per message: that is what lets one connection carry hundreds of
//! thousands of metrics per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::extract::ws::{Utf8Bytes, WebSocket};
use lab_core::delivery::{self, Flow, Handler, Message, Timing};
use lab_core::outbox::Preferences;
use lab_core::parse::{ParseError, check_not_future, parse_client_frame};
use lab_core::problem::Problem;
use lab_core::wire::system2::{ClientFrame, Register, Role, ServerFrame, metric_ack_json};
use lab_ops::ws::{Outbox, Socket};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, IngestError};
use crate::stats::CloseReason;

/// The greeting of `connection.ack`.
pub const GREETING: &str = "Connected to System 2 WebSocket server";

/// Whether the client has proven it knows the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No token is required, or the URL carried the right one.
    Ok,
    /// A token is required: the first message must be a `register` that carries it.
    Pending,
    /// The URL carried a wrong token: the connection is closed at once.
    Refused,
}

/// A token bucket: `rate` messages per second sustained, bursts of up to one second's worth.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: u64) -> Self {
        RateLimit {
            rate: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    /// Takes one token; `false` when the client is over its rate. A rate of 0 is no limit.
    fn take(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if self.tokens < 1.0 {
            let now = Instant::now();
            let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.rate);
            self.last = now;
            if self.tokens < 1.0 {
                return false;
            }
        }
        self.tokens -= 1.0;
        true
    }
}

/// Serves one upgraded WebSocket until it closes, then cleans up after it.
pub async fn serve(socket: WebSocket, hub: Arc<Hub>, auth: Auth, shutdown: CancellationToken) {
    let id = hub.next_connection_id();
    let open = hub.connections.fetch_add(1, Ordering::AcqRel) + 1;
    let mut connection = Connection {
        id,
        role_gauge: hub.stats.connections_of("unregistered"),
        rate: RateLimit::new(hub.config.max_messages_per_sec),
        auth,
        outbox: None,
        hub: hub.clone(),
    };
    connection.role_gauge.inc();
    tracing::debug!(connection = id, open, "connection opened");
    let mut socket = Socket(socket);
    let reason = if open as u64 > hub.config.max_connections {
        Some(CloseReason::ConnectionLimit)
    } else if auth == Auth::Refused {
        Some(CloseReason::BadToken)
    } else {
        connection.run(&mut socket, &shutdown).await
    };
    if let Some(reason) = reason {
        hub.stats.closed(reason);
        tracing::info!(
            connection = id,
            code = reason.code(),
            reason = reason.text(),
            "closing connection"
        );
        delivery::close(&mut socket, reason).await;
    }
    connection.role_gauge.dec();
    if connection.outbox.is_some() {
        hub.remove_dashboard(id);
    }
    hub.connections.fetch_sub(1, Ordering::AcqRel);
    tracing::debug!(connection = id, "connection closed");
}

/// The state of one connection.
struct Connection {
    /// This connection's id (registry key, log field).
    id: u64,
    /// The shared state: windows, dashboards, counters, configuration.
    hub: Arc<Hub>,
    /// The connections gauge of the current role, to move the count when the role changes.
    role_gauge: Gauge<i64, AtomicI64>,
    /// The per-connection message rate limit.
    rate: RateLimit,
    /// Whether the token has been shown.
    auth: Auth,
    /// The dashboard's outbox, once it registered as one.
    outbox: Option<Arc<Outbox>>,
}

impl Handler<Utf8Bytes> for Connection {
    async fn on_message(&mut self, bytes: &[u8], replies: &mut Vec<Utf8Bytes>) -> Flow {
        if !self.rate.take() {
            return Err(Some(CloseReason::RateLimit));
        }
        match parse_client_frame(bytes) {
            Ok(frame) => self.on_frame(frame, replies),
            Err(error) => {
                if self.auth == Auth::Pending {
                    return Err(Some(CloseReason::AuthRequired));
                }
                self.reply_error(replies, &error)
            }
        }
    }

    fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.outbox.as_ref()
    }

    fn gap_event_type(&self) -> &'static str {
        "metric.update"
    }

    fn on_send(&mut self, gap: bool, updates: usize) {
        if gap {
            self.hub.stats.gaps_sent.inc();
        }
        self.hub.stats.updates_sent.inc_by(updates as u64);
    }
}

impl Connection {
    /// Greets the client, then runs the delivery loop. Returns why the server closes the connection,
    /// or `None` if the client left.
    async fn run(&mut self, socket: &mut Socket, shutdown: &CancellationToken) -> Option<CloseReason> {
        let config = &self.hub.config;
        let timing = Timing {
            ping_every: config.ping_interval(),
            slow: config.slow_dashboard(),
        };
        let greeting = ServerFrame::ConnectionAck {
            message: GREETING.into(),
        };
        let greeting = Message::Text(greeting.to_json().into());
        if delivery::send(socket, greeting, timing.slow).await.is_err() {
            return None;
        }
        delivery::run(socket, self, timing, shutdown.cancelled()).await
    }

    fn on_frame(&mut self, frame: ClientFrame, replies: &mut Vec<Utf8Bytes>) -> Flow {
        if self.auth == Auth::Pending {
            match &frame {
                ClientFrame::Register(Register {
                    token: Some(token), ..
                }) => {
                    let expected = self
                        .hub
                        .config
                        .auth_token
                        .as_ref()
                        .map(|t| t.expose())
                        .unwrap_or("");
                    if !constant_time_eq(token.as_bytes(), expected.as_bytes()) {
                        return Err(Some(CloseReason::BadToken));
                    }
                    self.auth = Auth::Ok;
                }
                _ => return Err(Some(CloseReason::AuthRequired)),
            }
        }
        match frame {
            ClientFrame::Register(register) => self.on_register(register, replies),
            ClientFrame::Metric(metric) => {
                let now = lab_core::now_ms();
                let skew = self.hub.config.max_clock_skew_ms as f64;
                if let Err(error) = check_not_future(std::slice::from_ref(&metric), now, skew, None) {
                    return self.reply_error(replies, &error);
                }
                match self.hub.ingest(&metric) {
                    Ok(_) => replies.push(metric_ack_json(&metric.server_id, metric.seq).into()),
                    Err(e @ IngestError::ServerLimit { .. }) => {
                        let detail = Problem::new("/serverId", e.to_string());
                        reply(replies, server_limit_frame(vec![detail]));
                    }
                }
                Ok(())
            }
            ClientFrame::Metrics(items) => {
                let now = lab_core::now_ms();
                let skew = self.hub.config.max_clock_skew_ms as f64;
                if let Err(error) = check_not_future(&items, now, skew, Some("/items")) {
                    return self.reply_error(replies, &error);
                }
                // Validation is all-or-nothing (done above and by the parser). The server table can
                // still fill up part-way through a batch: the metrics it could take are aggregated and
                // acked by count, and the refused ones are named, with their index, in an error frame.
                let mut refused = Vec::new();
                for (i, metric) in items.iter().enumerate() {
                    if let Err(e) = self.hub.ingest(metric) {
                        refused.push(Problem {
                            path: format!("/items/{i}/serverId"),
                            index: Some(i),
                            message: e.to_string(),
                        });
                    }
                }
                let accepted = items.len() - refused.len();
                if !refused.is_empty() {
                    reply(replies, server_limit_frame(refused));
                }
                reply(replies, ServerFrame::MetricsAck { accepted });
                Ok(())
            }
            ClientFrame::SnapshotRequest { server_id } => {
                let payload = self.hub.snapshot(server_id.as_deref());
                let text = ServerFrame::Snapshot { payload }.to_json();
                if text.len() > lab_core::limits::MAX_SNAPSHOT_BYTES {
                    let detail = Problem::new(
                        "/serverId",
                        format!(
                            "a snapshot of every server is {} bytes, over the {} byte limit: ask for one server by serverId",
                            text.len(),
                            lab_core::limits::MAX_SNAPSHOT_BYTES
                        ),
                    );
                    let error = ServerFrame::Error {
                        message: "Snapshot too large".into(),
                        details: vec![detail],
                    };
                    reply(replies, error);
                } else {
                    replies.push(text.into());
                }
                Ok(())
            }
        }
    }

    fn on_register(&mut self, register: Register, replies: &mut Vec<Utf8Bytes>) -> Flow {
        // Re-registering replaces the previous role (the original allowed it too).
        if self.outbox.take().is_some() {
            self.hub.remove_dashboard(self.id);
        }
        self.role_gauge.dec();
        self.role_gauge = self.hub.stats.connections_of(register.role.as_str());
        self.role_gauge.inc();
        if register.role == Role::Dashboard {
            let preferences = Preferences {
                filter: register.server_id.clone(),
                max_hz: register.max_hz,
                batch: register.batch_updates.unwrap_or(false),
            };
            let outbox = Arc::new(Outbox::new(
                self.id,
                preferences,
                self.hub.config.dashboard_queue as usize,
            ));
            self.hub.add_dashboard(outbox.clone());
            self.outbox = Some(outbox);
        }
        tracing::debug!(connection = self.id, role = register.role.as_str(), filter = ?register.server_id, "registered");
        let ack = ServerFrame::RegisterAck {
            role: register.role,
            server_filter: register.server_id,
        };
        reply(replies, ack);
        Ok(())
    }

    fn reply_error(&mut self, replies: &mut Vec<Utf8Bytes>, error: &ParseError) -> Flow {
        self.hub
            .stats
            .invalid_messages
            .note("invalid message answered with an error frame", error);
        reply(replies, error.to_system2_frame());
        Ok(())
    }
}

/// Queues `frame` as the next reply.
fn reply(replies: &mut Vec<Utf8Bytes>, frame: ServerFrame) {
    replies.push(frame.to_json().into());
}

fn server_limit_frame(details: Vec<Problem>) -> ServerFrame {
    ServerFrame::Error {
        message: "Server limit reached".into(),
        details,
    }
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
