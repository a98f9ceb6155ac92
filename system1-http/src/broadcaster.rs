//! The broadcaster: Redis pub/sub events out to dashboards over WebSocket (port 4002).
//!
//! ```text
//! SUBSCRIBE metrics:pubsub ──▶ each event (text, relayed verbatim) ──▶ every dashboard whose filter
//!   (resubscribes by itself                                             matches its serverId, through
//!    when Redis comes back)                                             the same bounded outbox as System 2
//! dashboard ─ {"type":"subscribe","serverId":…} ─▶ {"type":"subscription.ack",…}
//! dashboard ─ {"type":"snapshot.request",…} ─▶ HGETALL metrics:latest:<id> ─▶ {"type":"snapshot",…}
//! ```
//!
//! A new dashboard receives every server's events until it subscribes with a filter. Events are not
//! re-serialized: the text Redis delivers is the text dashboards receive. A slow dashboard is handled as
//! in System 2 (queue, then coalesce to the latest per server, then drop and count, then close 1008):
//! it never slows the relay or other dashboards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use lab_core::outbox::{Preferences, Pushed, Update};
use lab_core::parse::parse_dashboard_request;
use lab_core::wire::close::CloseReason;
use lab_core::wire::system1::{DashboardReply, DashboardRequest};
use lab_core::wire::system2::{SnapshotPayload, UpdatePayload};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::TcpListener;
use tokio::time::{MissedTickBehavior, interval, interval_at, timeout};
use tokio_util::sync::CancellationToken;

use crate::config::{BroadcasterArgs, RedisArgs};
use crate::worker::latest_key;

type Outbox = lab_core::outbox::Outbox<Utf8Bytes>;

/// Most servers a snapshot of all servers lists.
pub const SNAPSHOT_MAX_SERVERS: usize = 10_000;

/// Most events sent per wake-up of a dashboard.
const EVENTS_PER_WAKE: usize = 256;

struct Hub {
    config: BroadcasterArgs,
    channel: String,
    /// Every dashboard's outbox (its filter is in its preferences). Read on every event without a lock.
    dashboards: ArcSwap<Vec<Arc<Outbox>>>,
    dashboards_write: std::sync::Mutex<()>,
    redis: ConnectionManager,
    subscribed: AtomicBool,
    next_id: AtomicU64,
    /// What the broadcaster counts. Prometheus metrics (shared atomics), registered in `registry`, so
    /// that `/api/monitoring` and `GET /metrics` read the same numbers.
    stats: Stats,
    /// The Prometheus page (`GET /metrics`).
    registry: Registry,
}

/// The broadcaster's counters and gauge.
#[derive(Debug, Default)]
struct Stats {
    /// Open dashboard connections; also what the connection limit is checked against.
    connections: Gauge<i64, AtomicI64>,
    /// Pub/sub events handed to dashboards.
    relayed: Counter,
    /// Events superseded before a slow dashboard got them.
    coalesced: Counter,
    /// Events dropped because a dashboard's queue was full.
    dropped: Counter,
    /// Pub/sub messages that were not events.
    unreadable: Counter,
    /// Subscriptions to the channel: 1, plus one per resubscription after losing Redis.
    resubscriptions: Counter,
}

impl Stats {
    /// The Prometheus registry over these metrics, under their stable names
    /// (`system1_broadcaster_events_relayed_total`, …, `system1_broadcaster_dashboards`).
    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("system1_broadcaster");
        registry.register(
            "events_relayed",
            "Pub/sub events relayed to dashboards",
            self.relayed.clone(),
        );
        registry.register(
            "updates_coalesced",
            "Events superseded before a slow dashboard got them",
            self.coalesced.clone(),
        );
        registry.register(
            "updates_dropped",
            "Events dropped: dashboard queue full",
            self.dropped.clone(),
        );
        registry.register(
            "events_unreadable",
            "Pub/sub messages that were not events",
            self.unreadable.clone(),
        );
        registry.register(
            "subscriptions",
            "Subscriptions to the channel (1, plus one per resubscription)",
            self.resubscriptions.clone(),
        );
        registry.register(
            "dashboards",
            "Open dashboard connections",
            self.connections.clone(),
        );
        registry
    }
}

impl Hub {
    fn replace(&self, remove: u64, add: Option<Arc<Outbox>>) {
        let _guard = self.dashboards_write.lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<Arc<Outbox>> = self
            .dashboards
            .load()
            .iter()
            .filter(|o| o.connection_id != remove)
            .cloned()
            .collect();
        list.extend(add);
        self.dashboards.store(Arc::new(list));
    }

    /// Hands one event to every dashboard that wants its server.
    fn relay(&self, text: String) {
        #[derive(serde::Deserialize)]
        struct Event {
            payload: Payload,
        }
        #[derive(serde::Deserialize)]
        struct Payload {
            #[serde(rename = "serverId")]
            server_id: String,
        }
        let Ok(event) = serde_json::from_str::<Event>(&text) else {
            self.stats.unreadable.inc();
            return;
        };
        let server = event.payload.server_id;
        let dashboards = self.dashboards.load();
        let update = Arc::new(Update::verbatim(&server, Utf8Bytes::from(text)));
        self.stats.relayed.inc();
        for outbox in dashboards.iter() {
            if outbox.preferences.filter.as_deref().is_some_and(|f| f != server) {
                continue;
            }
            match outbox.push(&update) {
                Pushed::Queued => {}
                Pushed::Coalesced => {
                    self.stats.coalesced.inc();
                }
                Pushed::Dropped => {
                    self.stats.dropped.inc();
                }
            }
        }
    }
}

/// The broadcaster, bound to its port.
pub struct Broadcaster {
    listener: TcpListener,
    hub: Arc<Hub>,
    client: redis::Client,
}

impl Broadcaster {
    /// Binds the port (0 picks a free one); connects to Redis lazily, so it starts while Redis is down.
    pub async fn bind(args: &BroadcasterArgs, redis: &RedisArgs) -> anyhow::Result<Broadcaster> {
        let client = redis::Client::open(redis.url()).context("invalid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let connection = client.get_connection_manager_lazy(config)?;
        let address = std::net::SocketAddr::new(args.ws_host, args.ws_port);
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot listen on {address} (is the port in use? change it with --ws-port or SYSTEM1_WS_PORT)"
            )
        })?;
        let stats = Stats::default();
        let hub = Arc::new(Hub {
            config: args.clone(),
            channel: redis.channel.clone(),
            dashboards: ArcSwap::default(),
            dashboards_write: std::sync::Mutex::new(()),
            redis: connection,
            subscribed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            registry: stats.registry(),
            stats,
        });
        Ok(Broadcaster {
            listener,
            hub,
            client,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Relays until `shutdown`, then closes every dashboard with 1001.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let relay = tokio::spawn(subscribe_loop(
            self.hub.clone(),
            self.client.clone(),
            stop.clone(),
        ));
        let tasks = tokio_util::task::TaskTracker::new();
        let app = Router::new()
            .route("/", get(websocket))
            .route("/healthz", get(health))
            .route("/api/health", get(health))
            .route("/api/health/websocket", get(websocket_health))
            .route("/api/monitoring", get(monitoring))
            .route("/metrics", get(prometheus))
            .with_state((self.hub.clone(), stop.clone(), tasks.clone()));
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve_stop = stop.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                serve_stop.cancel();
            })
            .await?;
        stop.cancel();
        tasks.close();
        let _ = timeout(Duration::from_secs(5), tasks.wait()).await;
        relay.abort();
        Ok(())
    }
}

/// Subscribes, relays, and on any loss resubscribes with a backoff.
async fn subscribe_loop(hub: Arc<Hub>, client: redis::Client, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&hub.channel).await {
                Ok(()) => {
                    // `inc` returns the count before: anything but 0 means this is a resubscription.
                    if hub.stats.resubscriptions.inc() > 0 {
                        tracing::info!(channel = %hub.channel, "resubscribed");
                    }
                    hub.subscribed.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(m) => match m.get_payload::<String>() {
                                    Ok(text) => hub.relay(text),
                                    Err(_) => { hub.stats.unreadable.inc(); }
                                },
                                None => break,
                            },
                            _ = stop.cancelled() => return,
                        }
                    }
                    hub.subscribed.store(false, Ordering::Relaxed);
                    tracing::warn!(channel = %hub.channel, "lost the Redis subscription; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe yet"),
            },
            Err(e) => tracing::debug!(error = %e, "Redis unreachable; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

type AppState = (Arc<Hub>, CancellationToken, tokio_util::task::TaskTracker);

async fn websocket(upgrade: WebSocketUpgrade, State((hub, stop, tasks)): State<AppState>) -> Response {
    upgrade
        .read_buffer_size(16 * 1024)
        .max_message_size(lab_core::limits::MAX_MESSAGE_BYTES)
        .max_frame_size(lab_core::limits::MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| tasks.track_future(dashboard(socket, hub, stop)))
}

/// The close frame for `reason` (the same codes and words as System 2).
fn close(reason: CloseReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: reason.code(),
        reason: Utf8Bytes::from_static(reason.text()),
    }))
}

async fn dashboard(mut socket: WebSocket, hub: Arc<Hub>, stop: CancellationToken) {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    // `inc` returns the count before this one: one atomic step, so two dashboards arriving together
    // cannot both see room for one.
    let open = hub.stats.connections.inc() + 1;
    let mut outbox = new_outbox(&hub, id, None);
    let reason = if open as u64 > hub.config.max_connections {
        Some(close(CloseReason::ConnectionLimit))
    } else {
        hub.replace(id, Some(outbox.clone()));
        serve_dashboard(&mut socket, &hub, &stop, &mut outbox).await
    };
    if let Some(message) = reason {
        let _ = timeout(Duration::from_secs(1), socket.send(message)).await;
    }
    hub.replace(id, None);
    hub.stats.connections.dec();
}

/// A dashboard's outbox for this filter.
fn new_outbox(hub: &Hub, id: u64, filter: Option<String>) -> Arc<Outbox> {
    let preferences = Preferences {
        filter,
        max_hz: None,
        batch: false,
    };
    Arc::new(Outbox::new(id, preferences, hub.config.dashboard_queue as usize))
}

/// The dashboard's loop; returns the close frame to send, if any.
async fn serve_dashboard(
    socket: &mut WebSocket,
    hub: &Hub,
    stop: &CancellationToken,
    outbox: &mut Arc<Outbox>,
) -> Option<Message> {
    let config = &hub.config;
    let slow = Duration::from_millis(config.slow_dashboard_ms);
    let ping_every = Duration::from_millis(config.ping_interval_ms);
    let mut ping = interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut slow_check = interval((slow / 4).max(Duration::from_millis(10)));
    let mut heard_from = true;
    loop {
        let current = outbox.clone();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Some(close(CloseReason::Shutdown)),
            _ = ping.tick() => {
                if !heard_from {
                    return Some(close(CloseReason::Heartbeat));
                }
                heard_from = false;
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return None;
                }
            }
            _ = slow_check.tick() => {
                if current.backed_up_for().is_some_and(|d| d > slow) {
                    return Some(close(CloseReason::SlowDashboard));
                }
            }
            incoming = socket.recv() => {
                let message = match incoming {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return failed(e).map(close),
                    None => return None,
                };
                heard_from = true;
                let bytes: &[u8] = match &message {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) => b,
                    Message::Close(_) => return None,
                    _ => continue,
                };
                let reply = match parse_dashboard_request(bytes) {
                    Ok(DashboardRequest::Subscribe { server_id }) => {
                        // A new filter: a new outbox (what the old one held is dropped with it).
                        let fresh = new_outbox(hub, current.connection_id, server_id.clone());
                        hub.replace(current.connection_id, Some(fresh.clone()));
                        *outbox = fresh;
                        DashboardReply::SubscriptionAck { server_id }
                    }
                    Ok(DashboardRequest::SnapshotRequest { server_id }) => {
                        match snapshot(hub.redis.clone(), server_id.as_deref()).await {
                            Ok(payload) => DashboardReply::Snapshot { payload },
                            Err(e) => DashboardReply::Error { message: format!("Snapshot unavailable: {e}"), details: vec![] },
                        }
                    }
                    Err(e) => DashboardReply::Error { message: "Malformed client message".into(), details: e.problems() },
                };
                let text = serde_json::to_string(&reply).expect("replies serialize");
                if timeout(slow, socket.send(Message::Text(text.into()))).await.map_or(true, |r| r.is_err()) {
                    return None;
                }
            }
            _ = current.ready() => {
                let events = current.take(EVENTS_PER_WAKE);
                for event in &events {
                    match timeout(slow, socket.feed(Message::Text(event.frame.clone()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return None,
                        Err(_) => return Some(close(CloseReason::WriteStalled)),
                    }
                }
                match timeout(slow, socket.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => return Some(close(CloseReason::WriteStalled)),
                }
                if events.len() == EVENTS_PER_WAKE {
                    current.wake();
                }
            }
        }
    }
}

/// The close reason for a read error the client caused, if any (RFC 6455 §7.4): 1007 for a text
/// message that is not UTF-8, 1009 for one over the size limit. Other errors (the connection broke, the
/// peer broke the framing) leave nothing to say, or nobody to say it to. tungstenite keeps the
/// connection open after these two errors, so the close frame can still be sent.
fn failed(error: axum::Error) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Utf8(_)) => Some(CloseReason::InvalidUtf8),
        Ok(Error::Capacity(_)) => Some(CloseReason::TooBig),
        _ => None,
    }
}

/// One server's snapshot (or `None`), or every server's, from the workers' hashes.
pub async fn snapshot(mut redis: ConnectionManager, server: Option<&str>) -> anyhow::Result<SnapshotPayload> {
    match server {
        Some(id) => {
            let hash: Vec<(String, String)> = redis.hgetall(latest_key(id)).await?;
            Ok(SnapshotPayload::One(payload_from_hash(&hash)))
        }
        None => {
            let mut keys: Vec<String> = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(latest_key("*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut redis)
                    .await?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 || keys.len() >= SNAPSHOT_MAX_SERVERS {
                    break;
                }
            }
            keys.truncate(SNAPSHOT_MAX_SERVERS);
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.hgetall(key);
            }
            let hashes: Vec<Vec<(String, String)>> = pipe.query_async(&mut redis).await?;
            let mut all: Vec<UpdatePayload> = hashes.iter().filter_map(|h| payload_from_hash(h)).collect();
            all.sort_by(|a, b| a.server_id.cmp(&b.server_id));
            Ok(SnapshotPayload::All(all))
        }
    }
}

fn payload_from_hash(hash: &[(String, String)]) -> Option<UpdatePayload> {
    let get = |name: &str| hash.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    Some(UpdatePayload {
        server_id: get("serverId")?.to_owned(),
        timestamp: get("timestamp")?.parse().ok()?,
        windows: get("windows")
            .and_then(|w| serde_json::from_str(w).ok())
            .unwrap_or_default(),
        seq: get("seq").and_then(|s| s.parse().ok()),
    })
}

async fn health(State((hub, _, _)): State<AppState>) -> Response {
    let subscribed = hub.subscribed.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "status": if subscribed { "ok" } else { "degraded" },
        "redis": if subscribed { "subscribed" } else { "resubscribing" },
    });
    let status = if subscribed {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn websocket_health(State((hub, stop, _)): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "status": if stop.is_cancelled() { "shutting-down" } else { "ok" },
        "dashboards": hub.stats.connections.get(),
        "maxConnections": hub.config.max_connections,
    }))
}

async fn monitoring(State((hub, _, _)): State<AppState>) -> Json<serde_json::Value> {
    let dashboards: Vec<serde_json::Value> = hub
        .dashboards
        .load()
        .iter()
        .map(|o| {
            let (queued, coalesced) = o.depth();
            serde_json::json!({"connectionId": o.connection_id, "filter": o.preferences.filter, "queued": queued, "coalescedPending": coalesced})
        })
        .collect();
    Json(serde_json::json!({
        "role": "broadcaster",
        "subscribed": hub.subscribed.load(Ordering::Relaxed),
        "channel": hub.channel,
        "eventsRelayed": hub.stats.relayed.get(),
        "eventsUnreadable": hub.stats.unreadable.get(),
        "updatesCoalesced": hub.stats.coalesced.get(),
        "updatesDropped": hub.stats.dropped.get(),
        "subscriptions": hub.stats.resubscriptions.get(),
        "dashboards": dashboards,
    }))
}

async fn prometheus(State((hub, _, _)): State<AppState>) -> Response {
    let mut text = String::new();
    encode(&mut text, &hub.registry).expect("writing to a String cannot fail");
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
