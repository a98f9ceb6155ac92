//! The broadcaster: the workers' events out to dashboards over WebSocket (port 4002).
//!
//! ```text
//! --fanout stream (default):
//!   XREAD BLOCK from the last id relayed ◀── capped stream metrics:processed ◀── workers (same MULTI
//!   (own connection; after any gap,            n: 1, 2, 3, …  event: <json>               as their XACK)
//!    reads on from where it was)
//!       │ n jumped: the events between were trimmed ──▶ {"type":"gap","events":k,…}
//!       ▼
//!   each metric.processed event (text, verbatim) ──▶ every dashboard whose filter matches its serverId,
//!                                                    through the same bounded outbox as System 2
//! SUBSCRIBE metrics:pubsub ──▶ metric.ingested events (and metric.processed ones with --fanout pubsub)
//!   (resubscribes by itself; the lost time ──▶ {"type":"gap","events":null,…})
//! dashboard ─ {"type":"subscribe","serverId":…} ─▶ {"type":"subscription.ack",…}
//! dashboard ─ {"type":"snapshot.request",…} ─▶ HGETALL metrics:latest:<id> ─▶ {"type":"snapshot",…}
//! ```
//!
//! **Why a stream, and why it is the default.** Redis pub/sub is at most once: a message published while
//! the broadcaster is not subscribed (Redis restarting, the connection re-established, 3 s of backoff)
//! goes to nobody. In the seed's design (`--fanout pubsub`), a Redis restart that lost not one acked
//! metric still cost the dashboards a tenth of a 30 s run: the workers processed the backlog while the
//! broadcaster was resubscribing. So the workers also append each `metric.processed` event to a capped
//! stream, in the same transaction as their `XACK` (an event exists if and only if its metric was
//! processed), numbered by a counter; the broadcaster reads it with a blocking `XREAD` from the last id
//! it relayed, and after any gap simply reads on. What it can still miss is what the cap
//! (`--processed-maxlen`) trimmed before it read it: the numbers say exactly how many. The cost is an
//! `XADD` per metric in the workers' transaction and the stream's memory (the cap); pub/sub stays
//! selectable so that the difference can be shown. `metric.ingested` notices (published by the API,
//! which has no stream of events) still come by pub/sub in both modes.
//!
//! **Gaps are said, not left to guess.** After a gap the broadcaster cannot fill, every dashboard gets
//! `{"type":"gap","eventType":…,"events":N|null,"fromMs":…,"toMs":…,"reason":…}`
//! ([`lab_core::wire::system1::Gap`]), in order with the events: `trimmed` with the exact count
//! (stream), `unsubscribed` with `null` (pub/sub cannot know), `reset` when the stream's numbers went
//! backwards (Redis lost its data). Counted: `gaps`, `gapEvents` in `/api/monitoring`.
//!
//! **(ext)** A dashboard that subscribes with `"batchUpdates":true` gets what a System 2 dashboard that
//! asks the same gets: the aggregated updates only (`metric.processed` payloads, no `metric.ingested`),
//! as many per `{"type":"metric.updates","items":[…]}` frame as are ready — never waiting to fill one.
//! A browser's cost is per frame, not per byte: one event per frame is what kept the lab's page from
//! keeping up with System 1 at load (docs/dashboard.md).
//!
//! A new dashboard receives every server's events until it subscribes with a filter. Events are not
//! re-serialized: the text Redis delivers is the text dashboards receive. A slow dashboard is handled as
//! in System 2 (queue, then coalesce to the latest per server, then drop and count, then close 1008):
//! it never slows the relay or other dashboards. Each dashboard's connection runs the very delivery
//! loop System 2's do ([`lab_core::delivery::run`]); its `Dashboard` handler says only what its requests mean.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::extract::State;
use axum::extract::ws::{Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{Json, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use futures_util::StreamExt;
use lab_core::delivery::{self, Flow, Handler, Timing};
use lab_core::outbox::{Preferences, Pushed, Update};
use lab_core::parse::parse_dashboard_request;
use lab_core::wire::close::CloseReason;
use lab_core::wire::system1::{DashboardReply, DashboardRequest, EventRoute, Gap, GapReason};
use lab_core::wire::system2::{SnapshotPayload, UpdatePayload};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::config::{BroadcasterArgs, Fanout, RedisArgs};
use crate::store::{latest, latest_key, processed};
use lab_ops::http::WebSocketHealth;
use lab_ops::ws::{Outbox, Socket, count_push};

/// Most servers a snapshot of all servers lists.
pub const SNAPSHOT_MAX_SERVERS: usize = 10_000;

/// How long one `XREAD` of the `processed` stream waits for new events (`BLOCK`), in ms; the reading
/// connection's response timeout is above it (a blocking read is not a dead connection).
pub const STREAM_BLOCK_MS: u64 = 1_000;

/// Most events one `XREAD` returns: at 2 000 events/s a caught-up broadcaster gets a few per read; after
/// a gap it catches up 512 at a time.
pub const STREAM_READ_COUNT: usize = 512;

struct Hub {
    config: BroadcasterArgs,
    channel: String,
    /// Every dashboard's outbox (its filter is in its preferences). Read on every event without a lock.
    dashboards: ArcSwap<Vec<Arc<Outbox>>>,
    dashboards_write: std::sync::Mutex<()>,
    redis: ConnectionManager,
    /// Where `metric.processed` events come from (`--fanout`).
    fanout: Fanout,
    /// The capped stream of `metric.processed` events (stream fan-out).
    processed_stream: String,
    subscribed: AtomicBool,
    /// Stream fan-out: the last `XREAD` succeeded.
    reading: AtomicBool,
    /// Stream fan-out: the id of the last event relayed, for `/api/monitoring`.
    last_relayed: std::sync::Mutex<String>,
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
    /// Messages (pub/sub or stream) that were not events: counted and logged in one call.
    unreadable: lab_ops::Noted,
    /// Subscriptions to the channel: 1, plus one per resubscription after losing Redis.
    resubscriptions: Counter,
    /// Gap frames sent to dashboards (each to every dashboard).
    gaps: Counter,
    /// Events the gap frames reported missing, where the count is known (stream fan-out).
    gap_events: Counter,
    /// Stream fan-out: `metric.processed` events on pub/sub, ignored (the stream delivers them).
    pubsub_processed_ignored: Counter,
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
            self.unreadable.counter().clone(),
        );
        registry.register(
            "subscriptions",
            "Subscriptions to the channel (1, plus one per resubscription)",
            self.resubscriptions.clone(),
        );
        registry.register(
            "gaps",
            "Gap frames sent to dashboards: events that could not be delivered",
            self.gaps.clone(),
        );
        registry.register(
            "gap_events",
            "Events reported missing by gap frames, where the count is known",
            self.gap_events.clone(),
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

    /// Hands one pub/sub message to [`Hub::relay`]; with stream fan-out, `metric.processed` events are
    /// ignored here (the stream delivers each exactly once).
    fn relay_published(&self, text: String) {
        if self.fanout == Fanout::Stream && text.contains(r#""type":"metric.processed""#) {
            self.stats.pubsub_processed_ignored.inc();
            return;
        }
        self.relay(text);
    }

    /// Tells every dashboard (whatever its filter: the missing events may be any server's) about a gap.
    /// It goes through each outbox like the events, so it arrives in its place among them.
    fn gap(&self, gap: Gap) {
        self.stats.gaps.inc();
        self.stats.gap_events.inc_by(gap.events.unwrap_or(0));
        tracing::warn!(events = ?gap.events, from_ms = gap.from_ms, to_ms = gap.to_ms, reason = ?gap.reason,
            "a gap in the events: dashboards are told");
        let text = serde_json::to_string(&DashboardReply::Gap(gap)).expect("replies serialize");
        // A key no server id can have (ids are `A-Z a-z 0-9 . _ : -`), one per gap: a gap frame is
        // never coalesced with an event, nor with another gap.
        let key = format!("#gap-{}", self.stats.gaps.get());
        let update = Arc::new(Update::verbatim(&key, Utf8Bytes::from(text)));
        for outbox in self.dashboards.load().iter() {
            if outbox.push(&update) == Pushed::Dropped {
                self.stats.dropped.inc();
            }
        }
    }

    /// Hands one event to every dashboard that wants its server.
    fn relay(&self, text: String) {
        // Only what routing needs is read; the text itself is relayed verbatim.
        let event = match EventRoute::read(&text) {
            Ok(event) => event,
            Err(e) => {
                self.stats.unreadable.note("unreadable event skipped", &e);
                return;
            }
        };
        let server = event.server_id;
        let dashboards = self.dashboards.load();
        // A slow dashboard's events coalesce per server *and* kind: a `metric.processed` must not
        // stand for a `metric.ingested`, or the seq range it reports would mix two stages.
        let key = format!("{}\u{0}{server}", event.kind);
        let update = Arc::new(Update::verbatim(&key, Utf8Bytes::from(text)).with_seq(event.seq));
        self.stats.relayed.inc();
        let processed = event.kind == "metric.processed";
        for outbox in dashboards.iter() {
            if outbox.preferences.filter.as_deref().is_some_and(|f| f != server) {
                continue;
            }
            // A batching dashboard asked for updates: the aggregated state, not the pipeline's stages.
            if outbox.preferences.batch && !processed {
                continue;
            }
            count_push(outbox.push(&update), &self.stats.coalesced, &self.stats.dropped);
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
        let listener = lab_ops::listen(address, "--ws-port or SYSTEM1_WS_PORT").await?;
        let stats = Stats::default();
        let hub = Arc::new(Hub {
            config: args.clone(),
            channel: redis.channel.clone(),
            dashboards: ArcSwap::default(),
            dashboards_write: std::sync::Mutex::new(()),
            redis: connection,
            fanout: args.fanout,
            processed_stream: redis.processed_stream.clone(),
            subscribed: AtomicBool::new(false),
            reading: AtomicBool::new(false),
            last_relayed: std::sync::Mutex::new(String::new()),
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
        let read = (self.hub.fanout == Fanout::Stream)
            .then(|| tokio::spawn(stream_loop(self.hub.clone(), self.client.clone(), stop.clone())));
        let tasks = tokio_util::task::TaskTracker::new();
        let app = lab_ops::http::ops_routes(
            get(health),
            get(monitoring),
            get(prometheus),
            Some(get(websocket_health)),
        )
        .route("/", get(websocket))
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
        if let Some(read) = read {
            read.abort();
        }
        Ok(())
    }
}

/// Subscribes, relays, and on any loss resubscribes with a backoff.
async fn subscribe_loop(hub: Arc<Hub>, client: redis::Client, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    // The last message before the subscription was lost: what was published after it went to nobody.
    let mut lost_at: Option<u64> = None;
    while !stop.is_cancelled() {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&hub.channel).await {
                Ok(()) => {
                    // `inc` returns the count before: anything but 0 means this is a resubscription.
                    if hub.stats.resubscriptions.inc() > 0 {
                        tracing::info!(channel = %hub.channel, "resubscribed");
                    }
                    hub.subscribed.store(true, Ordering::Relaxed);
                    if let Some(from_ms) = lost_at.take() {
                        hub.gap(Gap {
                            event_type: match hub.fanout {
                                Fanout::Stream => "metric.ingested".into(),
                                Fanout::Pubsub => "*".into(),
                            },
                            events: None,
                            from_ms,
                            to_ms: lab_core::now_ms() as u64,
                            reason: GapReason::Unsubscribed,
                        });
                    }
                    backoff = Duration::from_millis(100);
                    let mut messages = pubsub.on_message();
                    // When the last message came: a lost message was published after it (the gap's
                    // start), whereas noticing the loss may come a moment after the first lost one.
                    let mut last_heard = lab_core::now_ms() as u64;
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(m) => match m.get_payload::<String>() {
                                    Ok(text) => {
                                        last_heard = lab_core::now_ms() as u64;
                                        hub.relay_published(text)
                                    }
                                    Err(e) => hub.stats.unreadable.note("unreadable pub/sub message skipped", &e),
                                },
                                None => break,
                            },
                            _ = stop.cancelled() => return,
                        }
                    }
                    hub.subscribed.store(false, Ordering::Relaxed);
                    lost_at = Some(last_heard);
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

/// Where the stream fan-out stands: the last event relayed.
#[derive(Debug, Clone)]
struct Position {
    /// Its stream id (`<ms>-<seq>`): the next `XREAD` starts after it.
    id: String,
    /// Its number (`n`), or `None` before the first event: the next must be `n + 1`.
    n: Option<u64>,
}

/// Reads the `processed` stream from where it was, relays each event, and on any loss of Redis
/// reconnects with a backoff and reads on from the same place.
async fn stream_loop(hub: Arc<Hub>, client: redis::Client, stop: CancellationToken) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(STREAM_BLOCK_MS + 2_000)));
    let mut position: Option<Position> = None;
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match client.get_multiplexed_async_connection_with_config(&config).await {
            Ok(mut connection) => {
                if position.is_none() {
                    match tail(&hub, &mut connection).await {
                        Ok(tail) => position = Some(tail),
                        Err(e) => tracing::warn!(error = %e, "cannot find the processed stream's end yet"),
                    }
                }
                // Connected and placed: reading from now on (health says so before the first, blocking,
                // read returns).
                if let Some(at) = position.as_mut() {
                    hub.reading.store(true, Ordering::Relaxed);
                    loop {
                        let entries = tokio::select! {
                            entries = read_processed(&hub, &mut connection, &at.id) => entries,
                            _ = stop.cancelled() => return,
                        };
                        match entries {
                            Ok(entries) => {
                                backoff = Duration::from_millis(100);
                                for (id, n, event) in entries {
                                    relay_entry(&hub, at, id, n, event);
                                }
                            }
                            Err(e) => {
                                hub.reading.store(false, Ordering::Relaxed);
                                tracing::warn!(error = %e, "reading the processed stream failed; reading on from the last event relayed");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "Redis unreachable; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Where a broadcaster that just started reads from: after the newest event (dashboards connecting now
/// want what happens next, not history), or from the start of an empty stream.
async fn tail(hub: &Hub, connection: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<Position> {
    let newest: redis::streams::StreamRangeReply = connection
        .xrevrange_count(&hub.processed_stream, "+", "-", 1)
        .await?;
    Ok(match newest.ids.first() {
        Some(entry) => Position {
            id: entry.id.clone(),
            n: entry.get::<String>(processed::N).and_then(|n| n.parse().ok()),
        },
        None => Position {
            id: "0-0".into(),
            n: None,
        },
    })
}

/// One blocking `XREAD` after `from`: each entry's id, number and event text.
async fn read_processed(
    hub: &Hub,
    connection: &mut redis::aio::MultiplexedConnection,
    from: &str,
) -> redis::RedisResult<Vec<(String, Option<u64>, Option<String>)>> {
    let options = redis::streams::StreamReadOptions::default()
        .block(STREAM_BLOCK_MS as usize)
        .count(STREAM_READ_COUNT);
    let reply: Option<redis::streams::StreamReadReply> = connection
        .xread_options(&[&hub.processed_stream], &[from], &options)
        .await?;
    Ok(reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .map(|entry| {
            let n = entry.get::<String>(processed::N).and_then(|n| n.parse().ok());
            let event = entry.get::<String>(processed::EVENT);
            (entry.id, n, event)
        })
        .collect())
}

/// The `<ms>` of a stream id `<ms>-<seq>`.
fn id_ms(id: &str) -> u64 {
    id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
}

/// Relays one entry of the `processed` stream, first telling dashboards of any gap before it: its
/// number should be the last one's plus one; more means the cap trimmed the events between before
/// they were read (exactly that many), fewer means the count started again (Redis lost its data).
fn relay_entry(hub: &Hub, at: &mut Position, id: String, n: Option<u64>, event: Option<String>) {
    if let (Some(last), Some(n)) = (at.n, n) {
        let gap = if n > last + 1 {
            Some((Some(n - last - 1), GapReason::Trimmed))
        } else if n <= last {
            Some((None, GapReason::Reset))
        } else {
            None
        };
        if let Some((events, reason)) = gap {
            hub.gap(Gap {
                event_type: "metric.processed".into(),
                events,
                from_ms: id_ms(&at.id),
                to_ms: id_ms(&id),
                reason,
            });
        }
    }
    *hub.last_relayed.lock().unwrap_or_else(|e| e.into_inner()) = id.clone();
    *at = Position { id, n: n.or(at.n) };
    match event {
        Some(text) => hub.relay(text),
        None => hub
            .stats
            .unreadable
            .note("processed stream entry without an event skipped", &at.id),
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

async fn dashboard(socket: WebSocket, hub: Arc<Hub>, stop: CancellationToken) {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let mut socket = Socket(socket);
    // `inc` returns the count before this one: one atomic step, so two dashboards arriving together
    // cannot both see room for one.
    let open = hub.stats.connections.inc() + 1;
    let reason = if open as u64 > hub.config.max_connections {
        Some(CloseReason::ConnectionLimit)
    } else {
        let mut connection = Dashboard {
            outbox: new_outbox(&hub, id, None, false),
            hub: &hub,
        };
        hub.replace(id, Some(connection.outbox.clone()));
        let timing = Timing {
            ping_every: Duration::from_millis(hub.config.ping_interval_ms),
            slow: Duration::from_millis(hub.config.slow_dashboard_ms),
        };
        delivery::run(&mut socket, &mut connection, timing, stop.cancelled()).await
    };
    if let Some(reason) = reason {
        delivery::close(&mut socket, reason).await;
    }
    hub.replace(id, None);
    hub.stats.connections.dec();
}

/// A dashboard's outbox for this filter, batched or not.
fn new_outbox(hub: &Hub, id: u64, filter: Option<String>, batch: bool) -> Arc<Outbox> {
    let preferences = Preferences {
        filter,
        max_hz: None,
        batch,
    };
    Arc::new(Outbox::new(id, preferences, hub.config.dashboard_queue as usize))
}

/// One dashboard connection: what its requests mean. The loop around it (heartbeat, slow check,
/// feed/flush, write stalls) is the one System 2 runs too, [`lab_core::delivery::run`].
struct Dashboard<'a> {
    /// The broadcaster's shared state: the dashboard registry, Redis for snapshots, the counters.
    hub: &'a Hub,
    /// This dashboard's outbox, replaced by a fresh one when it subscribes with a new filter.
    outbox: Arc<Outbox>,
}

impl Handler<Utf8Bytes> for Dashboard<'_> {
    async fn on_message(&mut self, bytes: &[u8], replies: &mut Vec<Utf8Bytes>) -> Flow {
        let hub = self.hub;
        let reply = match parse_dashboard_request(bytes) {
            Ok(DashboardRequest::Subscribe {
                server_id,
                batch_updates,
            }) => {
                // A new filter: a new outbox. What the old one still held is dropped with it, and
                // counted as dropped, not silently lost.
                let current = &self.outbox;
                let fresh = new_outbox(hub, current.connection_id, server_id.clone(), batch_updates);
                hub.replace(current.connection_id, Some(fresh.clone()));
                let (queued, coalesced) = current.depth();
                hub.stats.dropped.inc_by((queued + coalesced) as u64);
                self.outbox = fresh;
                DashboardReply::SubscriptionAck { server_id }
            }
            Ok(DashboardRequest::SnapshotRequest { server_id }) => {
                match snapshot(hub.redis.clone(), server_id.as_deref()).await {
                    Ok(payload) => DashboardReply::Snapshot { payload },
                    Err(e) => DashboardReply::Error {
                        message: format!("Snapshot unavailable: {e}"),
                        details: vec![],
                    },
                }
            }
            Err(e) => DashboardReply::Error {
                message: "Malformed client message".into(),
                details: e.problems(),
            },
        };
        replies.push(serde_json::to_string(&reply).expect("replies serialize").into());
        Ok(())
    }

    fn outbox(&self) -> Option<&Arc<Outbox>> {
        Some(&self.outbox)
    }

    /// A broadcaster's outbox holds every kind of event the dashboard asked for.
    fn gap_event_type(&self) -> &'static str {
        "*"
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
        server_id: get(latest::SERVER_ID)?.to_owned(),
        timestamp: get(latest::TIMESTAMP)?.parse().ok()?,
        windows: get(latest::WINDOWS)
            .and_then(|w| serde_json::from_str(w).ok())
            .unwrap_or_default(),
        seq: get(latest::SEQ).and_then(|s| s.parse().ok()),
        coalesced: None,
        first_seq: None,
        last_seq: None,
    })
}

/// The broadcaster's health (`GET /healthz`, `/api/health`): `200` while it receives events, `503`
/// while it is resubscribing or cannot read the `processed` stream.
#[derive(Debug, Serialize)]
pub struct BroadcasterHealth {
    /// `"ok"` or `"degraded"`.
    pub status: &'static str,
    /// `"subscribed"` or `"resubscribing"`.
    pub redis: &'static str,
}

async fn health(State((hub, _, _)): State<AppState>) -> Response {
    let subscribed = hub.subscribed.load(Ordering::Relaxed)
        && (hub.fanout == Fanout::Pubsub || hub.reading.load(Ordering::Relaxed));
    let body = BroadcasterHealth {
        status: if subscribed { "ok" } else { "degraded" },
        redis: if subscribed { "subscribed" } else { "resubscribing" },
    };
    lab_ops::http::health(subscribed, body)
}

/// The WebSocket's health (`GET /api/health/websocket`, the original's path): dashboards only.
async fn websocket_health(State((hub, stop, _)): State<AppState>) -> Json<WebSocketHealth> {
    Json(WebSocketHealth {
        status: WebSocketHealth::status(stop.is_cancelled()),
        connections: None,
        producers: None,
        dashboards: hub.stats.connections.get(),
        unregistered: None,
        max_connections: hub.config.max_connections,
    })
}

/// The broadcaster's `GET /api/monitoring` document: its counters (as `GET /metrics` shows them) and
/// where its fan-out stands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BroadcasterMonitoring {
    /// Always `"broadcaster"`: which of System 1's roles answers.
    pub role: &'static str,
    /// Whether the pub/sub subscription is up.
    pub subscribed: bool,
    /// The pub/sub channel (`--channel`).
    pub channel: String,
    /// Events handed to dashboards.
    pub events_relayed: u64,
    /// Messages that were not events (counted and logged, then skipped).
    pub events_unreadable: u64,
    /// Events superseded before a slow dashboard got them.
    pub updates_coalesced: u64,
    /// Events dropped because a dashboard's queue was full.
    pub updates_dropped: u64,
    /// Subscriptions to the channel: 1, plus one per resubscription.
    pub subscriptions: u64,
    /// `"stream"` or `"pubsub"` (`--fanout`).
    pub fanout: &'static str,
    /// The capped stream of `metric.processed` events.
    pub processed_stream: String,
    /// Stream fan-out: whether the last `XREAD` succeeded.
    pub reading: bool,
    /// Stream fan-out: the id of the last event relayed.
    pub last_relayed_id: String,
    /// Stream fan-out: `metric.processed` events that came by pub/sub too, ignored.
    pub pubsub_processed_ignored: u64,
    /// Gap frames sent (each to every dashboard).
    pub gaps: u64,
    /// Events the gap frames reported missing, where the count is known.
    pub gap_events: u64,
    /// Every open dashboard.
    pub dashboards: Vec<DashboardMonitoring>,
}

/// One dashboard in [`BroadcasterMonitoring`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardMonitoring {
    /// Its connection's id.
    pub connection_id: u64,
    /// The server it subscribed to (`null`: all).
    pub filter: Option<String>,
    /// Events queued for it.
    pub queued: usize,
    /// Servers whose latest event waits in its coalescing table.
    pub coalesced_pending: usize,
}

async fn monitoring(State((hub, _, _)): State<AppState>) -> Json<BroadcasterMonitoring> {
    let dashboards = hub
        .dashboards
        .load()
        .iter()
        .map(|o| {
            let (queued, coalesced_pending) = o.depth();
            DashboardMonitoring {
                connection_id: o.connection_id,
                filter: o.preferences.filter.clone(),
                queued,
                coalesced_pending,
            }
        })
        .collect();
    Json(BroadcasterMonitoring {
        role: "broadcaster",
        subscribed: hub.subscribed.load(Ordering::Relaxed),
        channel: hub.channel.clone(),
        events_relayed: hub.stats.relayed.get(),
        events_unreadable: hub.stats.unreadable.get(),
        updates_coalesced: hub.stats.coalesced.get(),
        updates_dropped: hub.stats.dropped.get(),
        subscriptions: hub.stats.resubscriptions.get(),
        fanout: match hub.fanout {
            Fanout::Stream => "stream",
            Fanout::Pubsub => "pubsub",
        },
        processed_stream: hub.processed_stream.clone(),
        reading: hub.reading.load(Ordering::Relaxed),
        last_relayed_id: hub.last_relayed.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        pubsub_processed_ignored: hub.stats.pubsub_processed_ignored.get(),
        gaps: hub.stats.gaps.get(),
        gap_events: hub.stats.gap_events.get(),
        dashboards,
    })
}

async fn prometheus(State((hub, _, _)): State<AppState>) -> Response {
    lab_ops::http::prometheus(&hub.registry)
}
