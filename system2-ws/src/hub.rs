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
use lab_core::wire::system2::{SnapshotPayload, UpdatePayload};
use lab_core::{Metric, now_ms};
use serde::Serialize;
use thiserror::Error;

use crate::config::Config;
use lab_core::outbox::{Pushed, Update};

/// System 2's outbox: frames are WebSocket `Utf8Bytes`, shared by reference count.
pub type Outbox = lab_core::outbox::Outbox<axum::extract::ws::Utf8Bytes>;
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

/// The update payload, borrowed: serialized straight from the windows without copying them into an
/// owned [`UpdatePayload`] first. Same wire form (the integration tests read it back as one).
#[derive(Serialize)]
struct PayloadRef<'a> {
    #[serde(rename = "serverId")]
    server_id: &'a str,
    timestamp: f64,
    windows: &'a WindowSummaries,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
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
                    self.stats.metrics_refused_server_limit.inc();
                    return Err(IngestError::ServerLimit {
                        limit,
                        idle_secs: self.config.server_idle_secs,
                    });
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
            let payload = PayloadRef {
                server_id: &metric.server_id,
                timestamp: metric.timestamp,
                windows: &tracked.windows.summaries(),
                seq: metric.seq,
            };
            let json = serde_json::to_string(&payload).expect("payloads always serialize");
            let update = Arc::new(Update::new(&metric.server_id, &json).with_seq(metric.seq));
            for outbox in targets {
                match outbox.push(&update) {
                    Pushed::Queued | Pushed::Kept => {}
                    Pushed::Coalesced => {
                        self.stats.updates_coalesced.inc();
                    }
                    Pushed::Dropped => {
                        self.stats.updates_dropped.inc();
                    }
                }
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
    pub fn monitoring(&self) -> serde_json::Value {
        let s = &self.stats;
        let registry = self.dashboards.load();
        let dashboards: Vec<serde_json::Value> = registry
            .outboxes()
            .map(|o| {
                let (queued, coalesced) = o.depth();
                let (superseded, dropped) = o.losses();
                serde_json::json!({
                    "connectionId": o.connection_id,
                    "filter": o.preferences.filter,
                    "maxHz": o.preferences.max_hz,
                    "batchUpdates": o.preferences.batch,
                    "queued": queued,
                    "coalescedPending": coalesced,
                    "coalesced": superseded,
                    "dropped": dropped,
                    "backedUpMs": o.backed_up_for().map(|d| d.as_millis() as u64),
                })
            })
            .collect();
        let mut servers: Vec<(String, f64, u64)> = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            servers.extend(
                shard
                    .iter()
                    .map(|(id, t)| (id.clone(), t.last_seen_ms, t.metrics)),
            );
        }
        servers.sort_by(|a, b| b.1.total_cmp(&a.1));
        let servers_shown: Vec<serde_json::Value> = servers
            .iter()
            .take(MONITORING_SERVERS_SHOWN)
            .map(|(id, seen, n)| serde_json::json!({"serverId": id, "lastSeenMs": seen, "metrics": n}))
            .collect();
        let role = |r: &'static str| s.connections_of(r).get();
        serde_json::json!({
            "uptimeSecs": self.started.elapsed().as_secs(),
            "connections": {
                "total": self.connections.load(Ordering::Relaxed),
                "producers": role("producer"),
                "dashboards": role("dashboard"),
                "unregistered": role("unregistered"),
                "max": self.config.max_connections,
            },
            "ingest": {
                "metricsTotal": s.metrics_ingested.get(),
                "metricsPerSec": self.ingest_rate.load(Ordering::Relaxed),
                "late": s.metrics_late.get(),
                "stale": s.metrics_stale.get(),
                "invalidMessages": s.invalid_messages.get(),
                "refusedServerLimit": s.metrics_refused_server_limit.get(),
            },
            "updates": {
                "sent": s.updates_sent.get(),
                "coalesced": s.updates_coalesced.get(),
                "dropped": s.updates_dropped.get(),
                "gapsSent": s.gaps_sent.get(),
            },
            "dashboards": dashboards,
            "servers": {
                "tracked": servers.len(),
                "max": self.config.max_servers,
                "evicted": s.servers_evicted.get(),
                "windowsMs": self.spec.lengths_ms(),
                "bufferSize": self.config.buffer_size,
                "mostRecent": servers_shown,
            },
        })
    }

    /// The document of `GET /api/monitoring/server/{id}`.
    pub fn server_monitoring(&self, server_id: &str) -> Option<serde_json::Value> {
        let shard = self.shard(server_id);
        shard.get(server_id).map(|t| {
            serde_json::json!({
                "serverId": server_id,
                "lastSeenMs": t.last_seen_ms,
                "idleMs": t.last_seen.elapsed().as_millis() as u64,
                "metrics": t.metrics,
                "buffered": t.windows.len(),
                "newestTimestamp": t.windows.newest(),
                "windows": t.windows.summaries(),
            })
        })
    }

    /// How long an idle server is kept, for the sweeper's period.
    pub fn sweep_period(&self) -> Duration {
        (self.config.server_idle() / 4).max(Duration::from_millis(250))
    }
}

/// How many servers `GET /api/monitoring` lists (the most recently seen); all are counted.
pub const MONITORING_SERVERS_SHOWN: usize = 100;

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
