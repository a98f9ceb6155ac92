//! What System 2 counts, once: the Prometheus exposition (`GET /metrics`) and the monitoring JSON
//! (`GET /api/monitoring`) read the same counters, so they can never disagree.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The close reasons are the protocol's, shared with System 1 (see `lab_core::wire::close`).
pub use lab_core::wire::close::CloseReason;

type Labels = Vec<(&'static str, &'static str)>;

/// Every counter and gauge of System 2.
#[derive(Debug)]
pub struct Stats {
    registry: Registry,
    /// Metrics aggregated (each metric of a batch counts).
    pub metrics_ingested: Counter,
    /// Metrics older than the newest of their server but inside the largest window.
    pub metrics_late: Counter,
    /// Metrics older than every window: acked, counted, changed nothing.
    pub metrics_stale: Counter,
    /// Metrics refused because the server table was full: counted and logged in one call.
    pub metrics_refused_server_limit: lab_ops::Noted,
    /// Client messages answered with an `error` frame: counted and logged in one call.
    pub invalid_messages: lab_ops::Noted,
    /// Updates handed to dashboards' sockets.
    pub updates_sent: Counter,
    /// Updates replaced by a newer one of the same server before they were sent.
    pub updates_coalesced: Counter,
    /// Updates dropped because a dashboard's queue and coalescing table were full.
    pub updates_dropped: Counter,
    /// `gap` frames sent to dashboards, each telling one of them how many of its updates were dropped.
    pub gaps_sent: Counter,
    /// Servers forgotten after being idle.
    pub servers_evicted: Counter,
    /// Connections the server closed, by reason.
    pub connections_closed: Family<Labels, Counter>,
    /// Open connections, by role (`producer`, `dashboard`, `unregistered`).
    pub connections: Family<Labels, Gauge<i64, AtomicI64>>,
    /// Servers tracked now.
    pub servers_tracked: Gauge<i64, AtomicI64>,
}

impl Default for Stats {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("system2");
        let stats_registry = &mut registry;
        macro_rules! register {
            ($name:literal, $help:literal, $metric:expr) => {{
                let metric = $metric;
                stats_registry.register($name, $help, metric.clone());
                metric
            }};
        }
        let metrics_ingested = register!("metrics_ingested", "Metrics aggregated", Counter::default());
        let metrics_late = register!(
            "metrics_late",
            "Metrics inserted late, in time order",
            Counter::default()
        );
        let metrics_stale = register!(
            "metrics_stale",
            "Metrics older than every window",
            Counter::default()
        );
        let metrics_refused_server_limit = lab_ops::Noted::new(register!(
            "metrics_refused_server_limit",
            "Metrics refused: server table full",
            Counter::default()
        ));
        let invalid_messages = lab_ops::Noted::new(register!(
            "invalid_messages",
            "Client messages answered with an error frame",
            Counter::default()
        ));
        let updates_sent = register!(
            "updates_sent",
            "Updates written to dashboards",
            Counter::default()
        );
        let updates_coalesced = register!(
            "updates_coalesced",
            "Updates superseded before they were sent",
            Counter::default()
        );
        let updates_dropped = register!(
            "updates_dropped",
            "Updates dropped: dashboard queue full",
            Counter::default()
        );
        let gaps_sent = register!(
            "gaps_sent",
            "Gap frames sent: dashboards told of their dropped updates",
            Counter::default()
        );
        let servers_evicted = register!("servers_evicted", "Idle servers forgotten", Counter::default());
        let connections_closed = register!(
            "connections_closed",
            "Connections closed by the server, by reason",
            Family::default()
        );
        let connections = register!("connections", "Open connections, by role", Family::default());
        let servers_tracked = register!(
            "servers_tracked",
            "Servers with windows in memory",
            Gauge::default()
        );
        Stats {
            registry,
            metrics_ingested,
            metrics_late,
            metrics_stale,
            metrics_refused_server_limit,
            invalid_messages,
            updates_sent,
            updates_coalesced,
            updates_dropped,
            gaps_sent,
            servers_evicted,
            connections_closed,
            connections,
            servers_tracked,
        }
    }
}

impl Stats {
    /// The open connections gauge of `role`.
    pub fn connections_of(&self, role: &'static str) -> Gauge<i64, AtomicI64> {
        self.connections.get_or_create(&vec![("role", role)]).clone()
    }

    /// Counts a connection closed for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        self.connections_closed
            .get_or_create(&vec![("reason", reason.label())])
            .inc();
    }

    /// How many connections were closed for `reason`.
    pub fn closed_count(&self, reason: CloseReason) -> u64 {
        self.connections_closed
            .get_or_create(&vec![("reason", reason.label())])
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn prometheus_text(&self) -> String {
        lab_ops::http::prometheus_text(&self.registry)
    }
}
