//! One WebSocket connection: a loop that `select!`s between the client's next message, its outbox
//! (for dashboards), the heartbeat, and shutdown.
//!
//! Producers are handled inline: a metric is parsed, aggregated, fanned out and acked in the same task
//! that read it, so a producer that sends faster than it reads acks slows down only itself (its acks
//! back up in its own socket). Replies are *fed* into the socket and flushed once per burst of messages
//! that were ready together, not once per message: that is what lets one connection carry hundreds of
//! thousands of metrics per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{FutureExt, SinkExt};
use lab_core::parse::{ParseError, check_not_future, parse_client_frame};
use lab_core::problem::Problem;
use lab_core::wire::system2::{ClientFrame, Register, Role, ServerFrame};
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::time::{MissedTickBehavior, interval, interval_at, timeout};
use tokio_util::sync::CancellationToken;

use lab_core::outbox::Preferences;
use lab_ops::ws::Outbox;

use crate::hub::{Hub, IngestError};
use crate::stats::CloseReason;

/// Most messages handled per wake-up before the loop looks at its other duties (heartbeat,
/// shutdown, outbox): fairness, and a bound on the replies buffered before a flush.
const MESSAGES_PER_WAKE: usize = 256;

/// Most updates sent per wake-up of a dashboard, and most items in one `metric.updates` frame.
const UPDATES_PER_WAKE: usize = 256;

/// How long the server tries to deliver a close frame before it just drops the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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
        heard_from: true,
        hub: hub.clone(),
    };
    connection.role_gauge.inc();
    tracing::debug!(connection = id, open, "connection opened");
    let mut socket = socket;
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
        let frame = CloseFrame {
            code: reason.code(),
            reason: Utf8Bytes::from_static(reason.text()),
        };
        let _ = timeout(CLOSE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
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
    hub: Arc<Hub>,
    /// The connections gauge of the current role, to move the count when the role changes.
    role_gauge: Gauge<i64, AtomicI64>,
    /// The per-connection message rate limit.
    rate: RateLimit,
    /// Whether the token has been shown.
    auth: Auth,
    /// The dashboard's outbox, once it registered as one.
    outbox: Option<Arc<Outbox>>,
    /// Whether anything (a message, a pong) arrived since the last ping.
    heard_from: bool,
}

/// What to do after handling a message.
type Flow = Result<(), Option<CloseReason>>;

impl Connection {
    /// The loop. Returns why the server closes the connection, or `None` if the client left.
    async fn run(&mut self, socket: &mut WebSocket, shutdown: &CancellationToken) -> Option<CloseReason> {
        let hub = self.hub.clone();
        let config = &hub.config;
        let greeting = ServerFrame::ConnectionAck {
            message: GREETING.into(),
        };
        if self.send_now(socket, greeting.to_json()).await.is_err() {
            return None;
        }
        let ping_every = config.ping_interval();
        let mut ping = interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let slow = config.slow_dashboard();
        let mut slow_check = interval((slow / 4).max(Duration::from_millis(10)));
        slow_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Replaced when a dashboard registers with maxHz.
        let mut hz_tick = interval(Duration::from_secs(3600));
        hz_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);

        loop {
            let outbox = self.outbox.clone();
            let every_update = outbox.as_ref().is_some_and(|o| o.preferences.max_hz.is_none());
            let limited = outbox.as_ref().is_some_and(|o| o.preferences.max_hz.is_some());
            let flow: Flow = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Err(Some(CloseReason::Shutdown)),
                _ = ping.tick() => {
                    if !self.heard_from {
                        Err(Some(CloseReason::Heartbeat))
                    } else {
                        self.heard_from = false;
                        self.send_now(socket, Message::Ping(Default::default())).await
                    }
                }
                _ = slow_check.tick(), if outbox.is_some() => {
                    match outbox.as_ref().and_then(|o| o.backed_up_for()) {
                        Some(d) if d > slow => Err(Some(CloseReason::SlowDashboard)),
                        _ => Ok(()),
                    }
                }
                incoming = socket.recv() => self.on_incoming(socket, incoming).await,
                _ = async { outbox.as_ref().expect("guarded").ready().await }, if every_update => {
                    self.send_updates(socket).await
                }
                _ = hz_tick.tick(), if limited => self.send_updates(socket).await,
            };
            match flow {
                Ok(()) => {}
                Err(reason) => return reason,
            }
            // A dashboard just registered with maxHz: tick at its rate from now on.
            if let Some(hz) = self.outbox.as_ref().and_then(|o| o.preferences.max_hz)
                && hz_tick.period() != Duration::from_secs_f64(1.0 / f64::from(hz))
            {
                hz_tick = interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
                hz_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            }
        }
    }

    /// Handles the message that woke us and every further one already waiting, then flushes once.
    async fn on_incoming(
        &mut self,
        socket: &mut WebSocket,
        first: Option<Result<Message, axum::Error>>,
    ) -> Flow {
        let mut next = first;
        let mut handled = 0;
        loop {
            match next {
                None => return Err(None),
                Some(Err(e)) => return Err(classify_error(&e)),
                Some(Ok(message)) => {
                    self.heard_from = true;
                    self.on_message(socket, message).await?;
                }
            }
            handled += 1;
            // The budget is checked *before* the next message is taken: a message taken from the
            // socket is a message owed an answer. (Checking it after, as a `for` loop over the budget
            // does, took a 257th message at the end of every full burst and dropped it unanswered.)
            if handled == MESSAGES_PER_WAKE {
                break;
            }
            // Poll once: `recv` is cancel-safe, so dropping a *pending* call loses nothing.
            match socket.recv().now_or_never() {
                Some(more) => next = more,
                None => break,
            }
        }
        self.flush(socket).await
    }

    async fn on_message(&mut self, socket: &mut WebSocket, message: Message) -> Flow {
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            // The original's `ws` server parsed binary messages as JSON too.
            Message::Binary(bytes) => bytes,
            Message::Ping(_) | Message::Pong(_) => return Ok(()), // pongs to our pings: heard_from
            Message::Close(_) => return Err(None),
        };
        if !self.rate.take() {
            return Err(Some(CloseReason::RateLimit));
        }
        match parse_client_frame(bytes) {
            Ok(frame) => self.on_frame(socket, frame).await,
            Err(error) => {
                if self.auth == Auth::Pending {
                    return Err(Some(CloseReason::AuthRequired));
                }
                self.reply_error(socket, &error).await
            }
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, frame: ClientFrame) -> Flow {
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
            ClientFrame::Register(register) => self.on_register(socket, register).await,
            ClientFrame::Metric(metric) => {
                let now = lab_core::now_ms();
                let skew = self.hub.config.max_clock_skew_ms as f64;
                if let Err(error) = check_not_future(std::slice::from_ref(&metric), now, skew, None) {
                    return self.reply_error(socket, &error).await;
                }
                match self.hub.ingest(&metric) {
                    Ok(_) => self.feed(socket, ack_json(&metric.server_id, metric.seq)).await,
                    Err(e @ IngestError::ServerLimit { .. }) => {
                        let detail = Problem::new("/serverId", e.to_string());
                        self.reply(socket, server_limit_frame(vec![detail])).await
                    }
                }
            }
            ClientFrame::Metrics(items) => {
                let now = lab_core::now_ms();
                let skew = self.hub.config.max_clock_skew_ms as f64;
                if let Err(error) = check_not_future(&items, now, skew, Some("/items")) {
                    return self.reply_error(socket, &error).await;
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
                    self.reply(socket, server_limit_frame(refused)).await?;
                }
                self.reply(socket, ServerFrame::MetricsAck { accepted }).await
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
                    return self.reply(socket, error).await;
                }
                self.feed(socket, text).await
            }
        }
    }

    async fn on_register(&mut self, socket: &mut WebSocket, register: Register) -> Flow {
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
        self.reply(socket, ack).await
    }

    /// Sends what the outbox holds: each update as its own frame, or all as one `metric.updates`.
    async fn send_updates(&mut self, socket: &mut WebSocket) -> Flow {
        let Some(outbox) = self.outbox.clone() else {
            return Ok(());
        };
        // Drops first: the dashboard hears of them in order with what it does get.
        let told_gap = match outbox.take_dropped() {
            Some(dropped) => {
                let gap = ServerFrame::Gap(lab_core::wire::gap::Gap::dropped("metric.update", dropped));
                self.hub.stats.gaps_sent.inc();
                self.feed(socket, gap.to_json()).await?;
                true
            }
            None => false,
        };
        let updates = outbox.take(UPDATES_PER_WAKE);
        if updates.is_empty() {
            // Nothing fed, nothing to flush: a wake-up with nothing to send costs no write.
            return if told_gap {
                self.flush(socket).await
            } else {
                Ok(())
            };
        }
        self.hub.stats.updates_sent.inc_by(updates.len() as u64);
        if outbox.preferences.batch {
            self.feed(socket, lab_core::outbox::batch_frame(&updates)).await?;
        } else {
            for update in &updates {
                self.feed(socket, update.frame.clone()).await?;
            }
        }
        if updates.len() == UPDATES_PER_WAKE && outbox.preferences.max_hz.is_none() {
            // More may be waiting: come back after looking at the other duties.
            outbox.wake();
        }
        self.flush(socket).await
    }

    async fn reply_error(&mut self, socket: &mut WebSocket, error: &ParseError) -> Flow {
        self.hub
            .stats
            .invalid_messages
            .note("invalid message answered with an error frame", error);
        self.reply(socket, error.to_system2_frame()).await
    }

    async fn reply(&mut self, socket: &mut WebSocket, frame: ServerFrame) -> Flow {
        self.feed(socket, frame.to_json()).await
    }

    /// Queues a message in the socket's write buffer without flushing.
    async fn feed(&mut self, socket: &mut WebSocket, text: impl Into<Utf8Bytes>) -> Flow {
        let slow = self.hub.config.slow_dashboard();
        match timeout(slow, socket.feed(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(CloseReason::WriteStalled)),
        }
    }

    /// Writes out everything fed so far.
    async fn flush(&mut self, socket: &mut WebSocket) -> Flow {
        match timeout(self.hub.config.slow_dashboard(), socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(CloseReason::WriteStalled)),
        }
    }

    async fn send_now(&mut self, socket: &mut WebSocket, message: impl Into<Message>) -> Flow {
        match timeout(self.hub.config.slow_dashboard(), socket.send(message.into())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(CloseReason::WriteStalled)),
        }
    }
}

/// Which socket errors deserve a close frame, and which code (RFC 6455 §7.4.1): a message over the
/// limit gets 1009, a text message that is not UTF-8 1007, a frame that breaks the protocol 1002. A
/// broken connection (reset, end of stream) cannot receive one.
fn classify_error(error: &axum::Error) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    let inner = std::error::Error::source(error).and_then(|e| e.downcast_ref::<WsError>());
    let reason = match inner {
        Some(WsError::Capacity(_)) => Some(CloseReason::TooBig),
        Some(WsError::Utf8(_)) => Some(CloseReason::InvalidUtf8),
        Some(WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        )) => None,
        Some(WsError::Protocol(_)) => Some(CloseReason::ProtocolViolation),
        _ => None,
    };
    if reason.is_none() {
        tracing::debug!(%error, "connection error");
    }
    reason
}

/// `{"type":"metric.ack","serverId":…,"seq":…}`, serialized without copying the server id.
fn ack_json(server_id: &str, seq: Option<u64>) -> String {
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
