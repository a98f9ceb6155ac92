//! The shared state of System 2: every server's windows, every dashboard's outbox, the counters.
//!
//! One metric's path through the hub ([`Hub::ingest`]):
//!
//! ```text
//! metric ─▶ shard = hash(serverId) % 64 ─▶ lock that shard ─▶ ServerWindows::add
//!                                            │
//!                                            ├─ no dashboard wants this server? done (nothing serialized)
//!                                            └─ serialize the update once ─▶ push to each matching Outbox
//! ```
//!
//! Servers live in 64 shards, each a `Mutex<HashMap>`, so producers of different servers rarely wait
//! for each other. The update is pushed while the shard is still locked, which keeps each server's
//! updates in order at every dashboard. Pushing never blocks (see [`lab_core::outbox`]).
//!
//! Dashboards are looked up through an immutable [`Registry`] behind an `ArcSwap`: every metric reads
//! it without a lock; the rare register/unregister builds a new one and swaps it in.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use lab_core::aggregate::{Added, ServerWindows, WindowSpec, WindowSummaries};
use lab_core::wire::system2::{SnapshotPayload, UpdatePayload, UpdatePayloadRef};
use lab_core::{Metric, now_ms};
use serde::Serialize;
use thiserror::Error;

use lab_core::outbox::Update;
use lab_ops::ws::{Outbox, count_push};

use crate::config::Config;
use crate::stats::Stats;

/// How many shards the server table is split into.
const SHARDS: usize = 64;

/// Why a valid metric could not be aggregated.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IngestError {
    /// The server table is full and this metric's server is new.
    #[error(
        "this System 2 instance tracks at most {limit} servers; idle ones are forgotten after {idle_secs} s"
    )]
    ServerLimit {
        /// `--max-servers`.
        limit: usize,
        /// `--server-idle-secs`.
        idle_secs: u64,
    },
}

/// One tracked server.
#[derive(Debug)]
struct Tracked {
    windows: ServerWindows,
    /// When its last metric arrived (monotonic, for idle eviction).
    last_seen: Instant,
    /// The same, as wall-clock epoch ms (for monitoring).
    last_seen_ms: f64,
    /// Metrics aggregated for it.
    metrics: u64,
}

/// Which dashboards want which servers. Immutable once built; replaced whole on every change.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// Dashboards that want every server.
    all: Vec<Arc<Outbox>>,
    /// Dashboards that want one server, by that server.
    by_server: HashMap<String, Vec<Arc<Outbox>>>,
}

impl Registry {
    fn matching<'a>(&'a self, server_id: &str) -> impl Iterator<Item = &'a Arc<Outbox>> + 'a {
        self.all
            .iter()
            .chain(self.by_server.get(server_id).into_iter().flatten())
    }

    fn outboxes(&self) -> impl Iterator<Item = &Arc<Outbox>> {
        self.all.iter().chain(self.by_server.values().flatten())
    }
}

/// System 2's shared state.
#[derive(Debug)]
pub struct Hub {
    /// The configuration the server runs with.
    pub config: Config,
    /// The aggregation windows.
    spec: WindowSpec,
    /// Servers by shard.
    shards: Vec<Mutex<HashMap<String, Tracked>>>,
    /// Picks a server's shard; random per process, so a client cannot aim at one shard.
    hasher: RandomState,
    /// How many servers are tracked, over all shards (checked against `--max-servers`).
    servers: AtomicUsize,
    /// The dashboards.
    dashboards: ArcSwap<Registry>,
    /// Serializes registry changes (reads never take it).
    dashboards_write: Mutex<()>,
    /// Every counter.
    pub stats: Stats,
    /// Open WebSocket connections (checked against `--max-connections`).
    pub connections: AtomicUsize,
    /// Source of connection ids.
    next_connection: AtomicU64,
    /// When the hub started, for uptime.
    pub started: Instant,
    /// Metrics ingested during the last whole second (sampled by [`Hub::sample_rate`]).
    ingest_rate: AtomicU64,
    /// The ingest counter at the last sample.
    last_sample: AtomicU64,
}

impl Hub {
    /// A hub for `config`; fails if the window configuration is invalid.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let spec = config.window_spec()?;
        // Fail at start-up, not at the first metric, if the buffer size is unusable.
        ServerWindows::new(&spec, config.buffer_size as usize)?;
        Ok(Hub {
            spec,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            servers: AtomicUsize::new(0),
            dashboards: ArcSwap::default(),
            dashboards_write: Mutex::new(()),
            stats: Stats::default(),
            connections: AtomicUsize::new(0),
            next_connection: AtomicU64::new(1),
            started: Instant::now(),
            ingest_rate: AtomicU64::new(0),
            last_sample: AtomicU64::new(0),
            config,
        })
    }

    /// A fresh connection id.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, server_id: &str) -> MutexGuard<'_, HashMap<String, Tracked>> {
        let i = (self.hasher.hash_one(server_id) % SHARDS as u64) as usize;
        // Every mutation under this lock leaves the map consistent, so a poisoned lock is usable.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Aggregates one valid metric and pushes the resulting update to every dashboard that wants it.
    pub fn ingest(&self, metric: &Metric) -> Result<Added, IngestError> {
        let mut shard = self.shard(&metric.server_id);
        let tracked = match shard.get_mut(&metric.server_id) {
            Some(tracked) => tracked,
            None => {
                let limit = self.config.max_servers as usize;
                // Reserve a place first, so that two shards cannot both take the last one.
                if self.servers.fetch_add(1, Ordering::AcqRel) >= limit {
                    self.servers.fetch_sub(1, Ordering::AcqRel);
                    let error = IngestError::ServerLimit {
                        limit,
                        idle_secs: self.config.server_idle_secs,
                    };
                    self.stats
                        .metrics_refused_server_limit
                        .note("metric refused: the server table is full", &error);
                    return Err(error);
                }
                self.stats.servers_tracked.inc();
                let windows = ServerWindows::new(&self.spec, self.config.buffer_size as usize)
                    .expect("validated in Hub::new");
                let tracked = Tracked {
                    windows,
                    last_seen: Instant::now(),
                    last_seen_ms: 0.0,
                    metrics: 0,
                };
                shard.entry(metric.server_id.clone()).or_insert(tracked)
            }
        };
        let added = tracked.windows.add(metric.timestamp, &metric.metrics);
        tracked.last_seen = Instant::now();
        tracked.last_seen_ms = now_ms();
        tracked.metrics += 1;
        self.stats.metrics_ingested.inc();
        match added {
            Added::InOrder => {}
            Added::Late => {
                self.stats.metrics_late.inc();
            }
            Added::Stale => {
                self.stats.metrics_stale.inc();
            }
        }

        // Every metric yields an update, even a stale one (the windows did not change, but the
        // dashboards count updates by `seq` to measure loss end to end).
        let registry = self.dashboards.load();
        let mut targets = registry.matching(&metric.server_id).peekable();
        if targets.peek().is_some() {
            // Serialized once, straight from the windows (lab-core's borrowed form of the payload).
            let json = UpdatePayloadRef {
                server_id: &metric.server_id,
                timestamp: metric.timestamp,
                windows: &tracked.windows.summaries(),
                seq: metric.seq,
            }
            .to_json();
            let update = Arc::new(Update::new(&metric.server_id, &json).with_seq(metric.seq));
            for outbox in targets {
                let pushed = outbox.push(&update);
                count_push(pushed, &self.stats.updates_coalesced, &self.stats.updates_dropped);
            }
        }
        Ok(added)
    }

    /// Adds a dashboard to the registry.
    pub fn add_dashboard(&self, outbox: Arc<Outbox>) {
        let _guard = self.dashboards_write.lock().unwrap_or_else(|e| e.into_inner());
        let mut registry = Registry::clone(&self.dashboards.load());
        match &outbox.preferences.filter {
            None => registry.all.push(outbox),
            Some(server) => registry.by_server.entry(server.clone()).or_default().push(outbox),
        }
        self.dashboards.store(Arc::new(registry));
    }

    /// Removes a connection's dashboard from the registry, if it has one.
    pub fn remove_dashboard(&self, connection_id: u64) {
        let _guard = self.dashboards_write.lock().unwrap_or_else(|e| e.into_inner());
        let mut registry = Registry::clone(&self.dashboards.load());
        registry.all.retain(|o| o.connection_id != connection_id);
        for list in registry.by_server.values_mut() {
            list.retain(|o| o.connection_id != connection_id);
        }
        registry.by_server.retain(|_, list| !list.is_empty());
        self.dashboards.store(Arc::new(registry));
    }

    /// The current aggregates of one server (or `None` if unknown), in the update payload's form.
    pub fn server_payload(&self, server_id: &str) -> Option<UpdatePayload> {
        let shard = self.shard(server_id);
        shard.get(server_id).map(|t| payload_of(server_id, t))
    }

    /// The answer to `snapshot.request`: one server, or every server.
    pub fn snapshot(&self, server_id: Option<&str>) -> SnapshotPayload {
        match server_id {
            Some(id) => SnapshotPayload::One(self.server_payload(id)),
            None => {
                let mut all = Vec::new();
                for shard in &self.shards {
                    let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                    all.extend(shard.iter().map(|(id, t)| payload_of(id, t)));
                }
                all.sort_by(|a, b| a.server_id.cmp(&b.server_id));
                SnapshotPayload::All(all)
            }
        }
    }

    /// Forgets servers idle for longer than `--server-idle-secs`. Returns how many.
    pub fn evict_idle(&self) -> usize {
        let idle = self.config.server_idle();
        let mut evicted = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.len();
            shard.retain(|_, t| t.last_seen.elapsed() < idle);
            evicted += before - shard.len();
        }
        if evicted > 0 {
            self.servers.fetch_sub(evicted, Ordering::AcqRel);
            self.stats.servers_tracked.dec_by(evicted as i64);
            self.stats.servers_evicted.inc_by(evicted as u64);
        }
        evicted
    }

    /// Records the ingest rate of the second that just ended; called once a second.
    pub fn sample_rate(&self) {
        let total = self.stats.metrics_ingested.get();
        let last = self.last_sample.swap(total, Ordering::Relaxed);
        self.ingest_rate
            .store(total.saturating_sub(last), Ordering::Relaxed);
    }

    /// Servers tracked now.
    pub fn servers_tracked(&self) -> usize {
        self.servers.load(Ordering::Acquire)
    }

    /// The monitoring document of `GET /api/monitoring`.
    pub fn monitoring(&self) -> Monitoring {
        let s = &self.stats;
        let registry = self.dashboards.load();
        let dashboards = registry
            .outboxes()
            .map(|o| {
                let (queued, coalesced_pending) = o.depth();
                let (coalesced, dropped) = o.losses();
                DashboardMonitoring {
                    connection_id: o.connection_id,
                    filter: o.preferences.filter.clone(),
                    max_hz: o.preferences.max_hz,
                    batch_updates: o.preferences.batch,
                    queued,
                    coalesced_pending,
                    coalesced,
                    dropped,
                    backed_up_ms: o.backed_up_for().map(|d| d.as_millis() as u64),
                }
            })
            .collect();
        let mut servers: Vec<ServerSeen> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            servers.extend(shard.iter().map(|(id, t)| ServerSeen {
                server_id: id.clone(),
                last_seen_ms: t.last_seen_ms,
                metrics: t.metrics,
            }));
        }
        servers.sort_by(|a, b| b.last_seen_ms.total_cmp(&a.last_seen_ms));
        let tracked = servers.len();
        servers.truncate(MONITORING_SERVERS_SHOWN);
        let role = |r: &'static str| s.connections_of(r).get();
        Monitoring {
            uptime_secs: self.started.elapsed().as_secs(),
            connections: ConnectionsMonitoring {
                total: self.connections.load(Ordering::Relaxed),
                producers: role("producer"),
                dashboards: role("dashboard"),
                unregistered: role("unregistered"),
                max: self.config.max_connections,
            },
            ingest: IngestMonitoring {
                metrics_total: s.metrics_ingested.get(),
                metrics_per_sec: self.ingest_rate.load(Ordering::Relaxed),
                late: s.metrics_late.get(),
                stale: s.metrics_stale.get(),
                invalid_messages: s.invalid_messages.get(),
                refused_server_limit: s.metrics_refused_server_limit.get(),
            },
            updates: UpdatesMonitoring {
                sent: s.updates_sent.get(),
                coalesced: s.updates_coalesced.get(),
                dropped: s.updates_dropped.get(),
                gaps_sent: s.gaps_sent.get(),
            },
            dashboards,
            servers: ServersMonitoring {
                tracked,
                max: self.config.max_servers,
                evicted: s.servers_evicted.get(),
                windows_ms: self.spec.lengths_ms().to_vec(),
                buffer_size: self.config.buffer_size,
                most_recent: servers,
            },
        }
    }

    /// The document of `GET /api/monitoring/server/{id}`.
    pub fn server_monitoring(&self, server_id: &str) -> Option<ServerMonitoring> {
        let shard = self.shard(server_id);
        shard.get(server_id).map(|t| ServerMonitoring {
            server_id: server_id.to_owned(),
            last_seen_ms: t.last_seen_ms,
            idle_ms: t.last_seen.elapsed().as_millis() as u64,
            metrics: t.metrics,
            buffered: t.windows.len(),
            newest_timestamp: t.windows.newest(),
            windows: t.windows.summaries(),
        })
    }

    /// How long an idle server is kept, for the sweeper's period.
    pub fn sweep_period(&self) -> Duration {
        (self.config.server_idle() / 4).max(Duration::from_millis(250))
    }
}

/// How many servers `GET /api/monitoring` lists (the most recently seen); all are counted.
pub const MONITORING_SERVERS_SHOWN: usize = 100;

/// The document of `GET /api/monitoring`: every counter of [`Stats`] (the same atomics `GET /metrics`
/// shows), each dashboard's outbox, and the servers seen last. The dashboard page shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Open connections, by role.
    pub connections: ConnectionsMonitoring,
    /// What producers sent.
    pub ingest: IngestMonitoring,
    /// What dashboards were sent, and what they missed.
    pub updates: UpdatesMonitoring,
    /// Every open dashboard.
    pub dashboards: Vec<DashboardMonitoring>,
    /// The server table.
    pub servers: ServersMonitoring,
}

/// `connections` of [`Monitoring`].
#[derive(Debug, Serialize)]
pub struct ConnectionsMonitoring {
    /// Open connections, whatever their role.
    pub total: usize,
    /// Registered producers.
    pub producers: i64,
    /// Registered dashboards.
    pub dashboards: i64,
    /// Connections not registered yet.
    pub unregistered: i64,
    /// `--max-connections`.
    pub max: u64,
}

/// `ingest` of [`Monitoring`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestMonitoring {
    /// Metrics aggregated since the start.
    pub metrics_total: u64,
    /// Metrics aggregated during the last whole second.
    pub metrics_per_sec: u64,
    /// Metrics older than their server's newest, inserted in time order.
    pub late: u64,
    /// Metrics older than every window: acked, changed nothing.
    pub stale: u64,
    /// Client messages answered with an `error` frame.
    pub invalid_messages: u64,
    /// Metrics refused because the server table was full.
    pub refused_server_limit: u64,
}

/// `updates` of [`Monitoring`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatesMonitoring {
    /// Updates handed to dashboards' sockets.
    pub sent: u64,
    /// Updates superseded before they were sent.
    pub coalesced: u64,
    /// Updates dropped: a dashboard's queue and coalescing table were full.
    pub dropped: u64,
    /// `gap` frames that told dashboards of their dropped updates.
    pub gaps_sent: u64,
}

/// One dashboard in [`Monitoring`]: its preferences and its outbox.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardMonitoring {
    /// Its connection's id.
    pub connection_id: u64,
    /// The server it registered for (`null`: all).
    pub filter: Option<String>,
    /// Its `maxHz`, if it asked for one.
    pub max_hz: Option<u32>,
    /// Whether it gets `metric.updates` batches.
    pub batch_updates: bool,
    /// Updates queued for it.
    pub queued: usize,
    /// Servers whose latest update waits in its coalescing table.
    pub coalesced_pending: usize,
    /// Updates it got only inside a later one, since it registered.
    pub coalesced: u64,
    /// Updates it never got, since it registered (each told by a `gap` frame).
    pub dropped: u64,
    /// How long it has been backed up, if it is (closed with 1008 past `--slow-dashboard-ms`).
    pub backed_up_ms: Option<u64>,
}

/// `servers` of [`Monitoring`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServersMonitoring {
    /// Servers with windows in memory.
    pub tracked: usize,
    /// `--max-servers`.
    pub max: u64,
    /// Servers forgotten after being idle.
    pub evicted: u64,
    /// The windows' lengths, in ms.
    pub windows_ms: Vec<u64>,
    /// Samples each server's windows keep at most (`--buffer-size`).
    pub buffer_size: u64,
    /// The [`MONITORING_SERVERS_SHOWN`] servers seen last, newest first.
    pub most_recent: Vec<ServerSeen>,
}

/// One server in [`ServersMonitoring::most_recent`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerSeen {
    /// Its id.
    pub server_id: String,
    /// When its last metric arrived, epoch ms.
    pub last_seen_ms: f64,
    /// Metrics aggregated for it.
    pub metrics: u64,
}

/// The document of `GET /api/monitoring/server/{id}`: one server's windows and their state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerMonitoring {
    /// Its id.
    pub server_id: String,
    /// When its last metric arrived, epoch ms.
    pub last_seen_ms: f64,
    /// How long ago that was, in ms (forgotten past `--server-idle-secs`).
    pub idle_ms: u64,
    /// Metrics aggregated for it.
    pub metrics: u64,
    /// Samples its windows hold now.
    pub buffered: usize,
    /// The newest sample's timestamp, if any.
    pub newest_timestamp: Option<f64>,
    /// Its windows' summaries.
    pub windows: WindowSummaries,
}

fn payload_of(server_id: &str, t: &Tracked) -> UpdatePayload {
    UpdatePayload {
        server_id: server_id.to_owned(),
        timestamp: t.windows.newest().unwrap_or_default(),
        windows: t.windows.summaries(),
        seq: None,
        coalesced: None,
        first_seq: None,
        last_seq: None,
    }
}
