//! The two answers every ops port gives, health and the Prometheus page, and the paths they are at.
//!
//! **Health** is `200` with a JSON body when the process can do its job and `503` with the same kind of
//! body when it cannot (Redis unreachable, subscription lost), so that a load balancer reads the status
//! and a person reads the body. Each server's body is its own serde type: what "ok" means differs.
//!
//! **Prometheus** (`GET /metrics`) is the OpenMetrics text of a `prometheus_client` registry. Each
//! server registers its counters once and reads the very same atomics for its monitoring JSON, so the
//! two views never disagree. System 1's API serves `POST /metrics` (ingest, the original's path) and
//! `GET /metrics` (this page) on one path: legal HTTP, and one port fewer to explain.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The ops surface of every lab server, at the same paths everywhere: health at `/healthz` (what
/// orchestrators probe) and `/api/health` (the original's path), the monitoring document at
/// `/api/monitoring`, the Prometheus page at `GET /metrics`, and, on a WebSocket port, its own health
/// at `/api/health/websocket` (the original's). A server adds its own routes to the router this
/// returns (System 1's API adds `POST /metrics`, its ingest, on the same path as the page).
pub fn ops_routes<S: Clone + Send + Sync + 'static>(
    health: MethodRouter<S>,
    monitoring: MethodRouter<S>,
    prometheus: MethodRouter<S>,
    websocket_health: Option<MethodRouter<S>>,
) -> Router<S> {
    let router = Router::new()
        .route("/healthz", health.clone())
        .route("/api/health", health)
        .route("/api/monitoring", monitoring)
        .route("/metrics", prometheus);
    match websocket_health {
        Some(handler) => router.route("/api/health/websocket", handler),
        None => router,
    }
}

/// The content type of the Prometheus page: OpenMetrics 1.0, which `prometheus_client` writes.
pub const PROMETHEUS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /api/health/websocket` (the original's path), for both systems' WebSocket ports: whether it
/// accepts connections, how many are open, and the limit. System 2 also says the roles; System 1's
/// broadcaster has only dashboards, so its document has no role fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketHealth {
    /// `"ok"`, or `"shutting-down"` once the server is closing its connections.
    pub status: &'static str,
    /// System 2: open connections, whatever their role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// System 2: of which registered producers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producers: Option<i64>,
    /// Open dashboard connections.
    pub dashboards: i64,
    /// System 2: connections not registered yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unregistered: Option<i64>,
    /// `--max-connections`.
    pub max_connections: u64,
}

impl WebSocketHealth {
    /// `"ok"`, or `"shutting-down"` when `shutting_down`.
    pub fn status(shutting_down: bool) -> &'static str {
        if shutting_down { "shutting-down" } else { "ok" }
    }
}

/// `200` with `body` if `ok`, else `503` with it.
pub fn health(ok: bool, body: impl Serialize) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The OpenMetrics text of `registry`.
pub fn prometheus_text(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// The Prometheus page of `registry`, for a `GET /metrics` handler.
pub fn prometheus(registry: &Registry) -> Response {
    prometheus_page(prometheus_text(registry))
}

/// The Prometheus page for an already encoded `text`.
pub fn prometheus_page(text: String) -> Response {
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response()
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    /// The status line of `GET path` on a server at `address`.
    async fn status_of(address: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        response.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn every_server_has_its_ops_at_the_same_paths() {
        use axum::routing::get;
        for websocket in [false, true] {
            let routes = ops_routes::<()>(
                get(|| async { "health" }),
                get(|| async { "monitoring" }),
                get(|| async { "prometheus" }),
                websocket.then(|| get(|| async { "websocket" })),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, routes).await });
            for path in ["/healthz", "/api/health", "/api/monitoring", "/metrics"] {
                assert_eq!(status_of(address, path).await, "HTTP/1.1 200 OK", "{path}");
            }
            let expected = if websocket {
                "HTTP/1.1 200 OK"
            } else {
                "HTTP/1.1 404 Not Found"
            };
            assert_eq!(status_of(address, "/api/health/websocket").await, expected);
        }
    }

    #[test]
    fn the_page_is_openmetrics_text() {
        let mut registry = Registry::with_prefix("lab");
        let counter: Counter = Counter::default();
        counter.inc_by(3);
        registry.register("things", "Things counted", counter);
        let response = prometheus(&registry);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROMETHEUS_CONTENT_TYPE);
        let text = prometheus_text(&registry);
        assert!(text.contains("lab_things_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_websocket_health_of_each_system_has_its_own_keys() {
        let broadcaster = WebSocketHealth {
            status: WebSocketHealth::status(false),
            connections: None,
            producers: None,
            dashboards: 2,
            unregistered: None,
            max_connections: 10,
        };
        assert_eq!(
            serde_json::to_string(&broadcaster).unwrap(),
            r#"{"status":"ok","dashboards":2,"maxConnections":10}"#
        );
        let system2 = WebSocketHealth {
            status: WebSocketHealth::status(true),
            connections: Some(3),
            producers: Some(1),
            unregistered: Some(0),
            ..broadcaster
        };
        assert_eq!(
            serde_json::to_string(&system2).unwrap(),
            r#"{"status":"shutting-down","connections":3,"producers":1,"dashboards":2,"unregistered":0,"maxConnections":10}"#
        );
    }

    #[test]
    fn health_says_503_when_not_ok() {
        #[derive(Serialize)]
        struct Body {
            status: &'static str,
        }
        assert_eq!(health(true, Body { status: "ok" }).status(), StatusCode::OK);
        assert_eq!(
            health(false, Body { status: "degraded" }).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
