//! The ingest API: `POST /metrics` over HTTP/1.1 or cleartext HTTP/2, into a Redis Stream.
//!
//! ```text
//! POST /metrics ─▶ 415? 413? ─▶ parse (lab-core: 400 with every problem) ─▶ clock check ─▶ 503 if
//!   --max-in-flight requests already wait ─▶ the group commit's queue ─▶ one Lua call per group:
//!                                        for each metric of each request: XADD metrics:stream * fields…
//!                                                         PUBLISH metrics:pubsub metric.ingested
//!                                        100 over the cap: count the unread entries it drops, XTRIM
//!               ◀── 202 {"status":"accepted","accepted":N,"ids":[…]}   (only once Redis has them)
//!               ◀── 503 + Retry-After                                  (Redis unreachable, or too busy)
//! ```
//!
//! **One script call for many requests.** The XADDs and the PUBLISHes run in one Lua script (the
//! store's [`crate::store::INGEST_SCRIPT`]): Redis executes it atomically, so a metric is never in the
//! stream without its `metric.ingested` event, or the other way round. The requests that arrive while
//! one call is in flight go together in the next ([`commit`]: group commit, with no timer), so at load
//! the script's fixed cost and the socket round trip are shared by a whole group.
//!
//! **Honest acks.** A `202` is sent only after Redis answered the call that carried the request. If Redis
//! is unreachable, the answer is `503` with `Retry-After`, never a `202`, for every request of the
//! group; the connection manager reconnects by itself and the next group succeeds once Redis is back. Both ports serve both protocols (axum detects HTTP/2
//! prior knowledge), unlike the original, whose HTTP/2 port crashed on its first request.
//!
//! **TLS (optional).** With `--tls-cert`/`--tls-key` or `--tls-self-signed`, both ports speak TLS only,
//! and clients choose HTTP/2 or HTTP/1.1 by ALPN, as browsers need: see [`tls`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use lab_core::ParseError;
use lab_core::limits::MAX_MESSAGE_BYTES;
use lab_core::parse::{check_not_future, parse_metrics_body};
use lab_core::wire::system1::{ErrorBody, Healthz, InvalidPayload};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::{ApiArgs, RedisArgs};
use crate::store::INGEST_SCRIPT;

pub mod commit;
pub mod tls;

/// Seconds a client is told to wait (`Retry-After`) when Redis is unavailable or the API is busy.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Most bytes of an oversize body the API reads and throws away so that the client hears its `413`.
///
/// **Why read a body we refuse.** An HTTP/1.1 client that sends a body without waiting (`httpx`,
/// `requests`, most libraries; curl waits, with `Expect: 100-continue`) is still writing when the `413`
/// is ready. If the server then closes the connection, the kernel answers the bytes still arriving with
/// a TCP reset, and a reset destroys the `413` in the client's receive buffer before the client reads
/// it: the client sees "connection reset", not the refusal. Reading the rest of the body to its end
/// (and discarding it) lets the client finish sending and read the answer, and leaves the connection
/// usable for its next request. Over HTTP/2 the same reading lets the stream end normally, with no
/// `RST_STREAM` at all (h2 would otherwise reset it with `NO_ERROR` after the response, as RFC 9113
/// §8.1 allows; curl 7.88 reports that as a failure, exit 92, and never shows the 413).
///
/// **Why a bound.** Reading costs bandwidth and a task: 16 MiB (64 times the body limit) covers every
/// plausible mistake (a whole run's metrics in one request) and stops there. A body declared larger
/// than this, or not finished within [`DRAIN_TIMEOUT`], is answered at once, and over HTTP/1.1 the
/// connection is closed (`Connection: close`); such a client may then see the reset. Both cases are
/// counted (`requestsOversize` in `/api/monitoring`).
pub const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;

/// Longest the API spends reading and discarding an oversize body (see [`MAX_DRAIN_BYTES`]).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to an oversize body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oversize {
    /// Read to its end and discarded: the connection stays open.
    Drained,
    /// Not read to its end (declared or found larger than [`MAX_DRAIN_BYTES`], too slow, or the client
    /// waits for `100 Continue` before sending it): answered at once, the HTTP/1.1 connection closed.
    Refused,
    /// The body broke off (the client went away, or sent a malformed body): answered, connection closed.
    Broken,
}

/// How oversize bodies were handled, for `GET /metrics` and `GET /api/monitoring`.
#[derive(Debug, Default)]
struct OversizeStats {
    drained: Counter,
    refused: Counter,
    broken: Counter,
}

impl OversizeStats {
    fn record(&self, outcome: Oversize) {
        match outcome {
            Oversize::Drained => self.drained.inc(),
            Oversize::Refused => self.refused.inc(),
            Oversize::Broken => self.broken.inc(),
        };
    }
}

/// Reads a body of at most [`MAX_MESSAGE_BYTES`]; a larger one is read on to its end, within
/// [`MAX_DRAIN_BYTES`] and [`DRAIN_TIMEOUT`], and thrown away (see [`MAX_DRAIN_BYTES`] for why).
async fn read_body(
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
    declared: Option<usize>,
) -> Result<axum::body::Bytes, Oversize> {
    use futures_util::StreamExt;
    if let Some(declared) = declared.filter(|&n| n > MAX_MESSAGE_BYTES) {
        // A client waiting for `100 Continue` has not sent the body, and will not once it has the
        // final answer: nothing to drain (reading would ask it to send all of it).
        let waits = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if waits || declared > MAX_DRAIN_BYTES {
            return Err(Oversize::Refused);
        }
    }
    let mut stream = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(MAX_MESSAGE_BYTES));
    let mut seen = 0usize;
    let read = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return Err(Oversize::Broken);
            };
            seen += chunk.len();
            if seen > MAX_DRAIN_BYTES {
                return Err(Oversize::Refused);
            }
            if seen <= MAX_MESSAGE_BYTES {
                kept.extend_from_slice(&chunk);
            }
        }
        Ok(())
    })
    .await;
    match read {
        Err(_) => Err(Oversize::Refused),
        Ok(Err(outcome)) => Err(outcome),
        Ok(Ok(())) if seen > MAX_MESSAGE_BYTES => Err(Oversize::Drained),
        Ok(Ok(())) => Ok(kept.into()),
    }
}

/// The `413`; over HTTP/1.1 with `Connection: close` unless the body was read to its end. (HTTP/2 has
/// no such header: the stream ends, or is reset with `NO_ERROR` after the response.)
fn too_large(parts: &axum::http::request::Parts, outcome: Oversize) -> Response {
    let mut response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {MAX_MESSAGE_BYTES} bytes"),
    );
    if outcome != Oversize::Drained && parts.version < axum::http::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The API's counters, for `GET /metrics` and `GET /api/monitoring`.
#[derive(Debug)]
struct ApiStats {
    registry: Registry,
    accepted: Counter,
    /// Requests refused as invalid (400, 413, 415): counted and logged in one call, since a client
    /// that sends nothing but bad requests is otherwise invisible in the log.
    invalid: lab_ops::Noted,
    /// Requests answered 503 because Redis failed: counted and logged in one call, rate-limited, since
    /// while Redis is away every request fails the same way.
    redis_errors: lab_ops::Noted,
    /// Requests answered 503 because `--max-in-flight` were already waiting (load shed): counted and
    /// logged in one call.
    shed: lab_ops::Noted,
    /// Oversize bodies, by how they were handled.
    oversize: OversizeStats,
    /// The group commits.
    commits: commit::CommitStats,
    /// Connections to a TLS port that never completed their handshake (plain HTTP sent to a TLS port,
    /// a client that does not trust the certificate, a handshake that timed out).
    tls_handshakes_failed: Counter,
}

impl ApiStats {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("system1_api");
        let accepted = Counter::default();
        let invalid = Counter::default();
        let redis_errors = Counter::default();
        let shed = Counter::default();
        let tls_handshakes_failed = Counter::default();
        let oversize = OversizeStats::default();
        let commits = commit::CommitStats::default();
        registry.register(
            "metrics_accepted",
            "Metrics appended to the stream and acked 202",
            accepted.clone(),
        );
        registry.register(
            "requests_invalid",
            "Requests refused as invalid (400, 413, 415)",
            invalid.clone(),
        );
        registry.register(
            "redis_errors",
            "Requests answered 503 because Redis failed",
            redis_errors.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests answered 503 because too many were waiting",
            shed.clone(),
        );
        registry.register(
            "oversize_drained",
            "Oversize bodies (413) read to their end and discarded: the connection stayed open",
            oversize.drained.clone(),
        );
        registry.register(
            "oversize_refused",
            "Oversize bodies (413) answered unread: over the drain bound, too slow, or Expect: 100-continue",
            oversize.refused.clone(),
        );
        registry.register(
            "oversize_broken",
            "Oversize bodies (413) that broke off while being drained",
            oversize.broken.clone(),
        );
        registry.register(
            "group_commits",
            "Script calls to Redis, each carrying the requests that waited while the previous one was in flight",
            commits.commits.clone(),
        );
        registry.register(
            "group_commit_requests",
            "Requests carried by the group commits (divided by group_commits: the mean group size)",
            commits.requests.clone(),
        );
        registry.register(
            "group_commit_metrics",
            "Metrics carried by the group commits",
            commits.metrics.clone(),
        );
        registry.register(
            "group_commits_failed",
            "Group commits Redis failed: every request they carried was answered 503",
            commits.failed.clone(),
        );
        registry.register(
            "tls_handshakes_failed",
            "Connections to a TLS port that never completed their handshake",
            tls_handshakes_failed.clone(),
        );
        ApiStats {
            registry,
            accepted,
            invalid: lab_ops::Noted::new(invalid),
            redis_errors: lab_ops::Noted::new(redis_errors),
            shed: lab_ops::Noted::new(shed),
            oversize,
            commits,
            tls_handshakes_failed,
        }
    }
}

struct Inner {
    /// For `/healthz`'s `PING` (the same connection as the committer's).
    redis: ConnectionManager,
    /// The group commit.
    commit: commit::GroupCommit,
    stream_key: String,
    /// How many partitions the stream has.
    partitions: u16,
    maxlen: u64,
    skew_ms: f64,
    /// Bounds the requests waiting on Redis: the API's queue, with 503 as its policy when full.
    in_flight: Semaphore,
    /// Whether the last Redis call succeeded, for `/healthz`.
    redis_ok: AtomicBool,
    stats: ApiStats,
    /// Whether the ports speak TLS, for `/api/monitoring`.
    tls: bool,
}

/// The ingest API, bound to its two ports.
pub struct IngestApi {
    listeners: Vec<TcpListener>,
    state: Arc<Inner>,
    shutdown_timeout: Duration,
    /// Set when the ports speak TLS.
    tls: Option<tls::Tls>,
}

impl IngestApi {
    /// Binds both ports (0 picks a free one) and prepares the Redis connection, which connects lazily:
    /// the API starts, and answers 503, while Redis is down. With TLS flags, loads (or generates) the
    /// certificate first: a bad certificate file stops the start-up, naming the file.
    pub async fn bind(api: &ApiArgs, redis: &RedisArgs) -> anyhow::Result<IngestApi> {
        let mut tls = tls::Tls::from_args(api)?;
        let client = redis::Client::open(redis.url()).context("invalid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = client
            .get_connection_manager_lazy(config)
            .context("cannot set up the Redis connection")?;
        let mut listeners = Vec::new();
        for (port, flag) in [
            (api.http_port, "--http-port / SYSTEM1_HTTP_PORT"),
            (api.http2_port, "--http2-port / SYSTEM1_HTTP2_PORT"),
        ] {
            let address = std::net::SocketAddr::new(api.host, port);
            listeners.push(lab_ops::listen(address, flag).await?);
        }
        if let Some(tls) = &mut tls {
            let port = listeners[0].local_addr()?.port();
            match &mut tls.self_signed {
                Some(generated) => {
                    let path = generated.write_to_temp_dir(port)?;
                    tracing::info!(
                        certificate = %path.display(),
                        names = ?tls::SELF_SIGNED_NAMES,
                        "TLS with a self-signed certificate generated now: trust this file in clients \
                         (e.g. curl --cacert), or accept the browser's warning"
                    );
                }
                None => tracing::info!(
                    certificate = ?api.tls_cert,
                    "TLS on both API ports (ALPN: h2, http/1.1)"
                ),
            }
        }
        let script = redis::Script::new(INGEST_SCRIPT);
        let stats = ApiStats::new();
        let target = commit::Target {
            redis: connection.clone(),
            script: script.clone(),
            partitions: redis.partitions(),
            channel: redis.channel.clone(),
            maxlen: redis.partitions().maxlen_each(api.stream_maxlen),
        };
        let group_commit = commit::GroupCommit::new(target, stats.commits.clone());
        let state = Arc::new(Inner {
            redis: connection,
            commit: group_commit,
            stream_key: redis.stream_key.clone(),
            partitions: redis.partitions,
            maxlen: api.stream_maxlen,
            skew_ms: api.max_clock_skew_ms as f64,
            in_flight: Semaphore::new(api.max_in_flight as usize),
            redis_ok: AtomicBool::new(true),
            stats,
            tls: tls.is_some(),
        });
        // Connect and load the script now, in the background, so that the first requests do not pay for
        // it; if Redis is down, those requests answer 503 as they should.
        let mut connection = state.redis.clone();
        tokio::spawn(async move {
            if let Err(e) = script.prepare_invoke().load_async(&mut connection).await {
                tracing::warn!(error = %e, "Redis is not reachable yet: answering 503 until it is");
            }
        });
        Ok(IngestApi {
            listeners,
            state,
            shutdown_timeout: Duration::from_millis(api.shutdown_timeout_ms),
            tls,
        })
    }

    /// Whether the ports speak TLS (and only TLS).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The certificate generated with `--tls-self-signed`, for clients to trust.
    pub fn self_signed_certificate(&self) -> Option<&tls::SelfSigned> {
        self.tls.as_ref().and_then(|t| t.self_signed.as_ref())
    }

    /// The addresses of the two ports.
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves both ports until `shutdown`, then lets in-flight requests finish (within the bound).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = tokio_util::sync::CancellationToken::new();
        let mut servers = tokio::task::JoinSet::new();
        for listener in self.listeners {
            let app = router(self.state.clone());
            let stop = stop.clone();
            if let Some(tls) = &self.tls {
                let (tls, failures) = (tls.clone(), self.state.stats.tls_handshakes_failed.clone());
                servers.spawn(async move {
                    tls::serve(listener, tls, app, failures, stop).await;
                    Ok(())
                });
                continue;
            }
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            servers.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            });
        }
        shutdown.await;
        stop.cancel();
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while let Some(done) = servers.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
        .await;
        match drained {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(limit = ?self.shutdown_timeout, "requests still in flight at the shutdown limit");
                Ok(())
            }
        }
    }
}

fn router(state: Arc<Inner>) -> Router {
    lab_ops::http::ops_routes(get(healthz), get(monitoring), get(prometheus), None)
        .route("/metrics", post(ingest))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

fn unavailable(message: impl Into<String>) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

async fn ingest(State(state): State<Arc<Inner>>, request: Request) -> Response {
    // The request taken whole, not as `HeaderMap` + `Body` extractors: axum's `HeaderMap` extractor
    // clones every header, a copy per request for nothing.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    if !is_json(headers) {
        const MESSAGE: &str = "Content-Type must be application/json";
        state.stats.invalid.note("request refused (415)", &MESSAGE);
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, MESSAGE);
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let bytes = match read_body(&parts, body, declared).await {
        Ok(bytes) => bytes,
        Err(refusal) => {
            state.stats.invalid.note(
                "request refused (413)",
                &format_args!("body over {MAX_MESSAGE_BYTES} bytes ({refusal:?})"),
            );
            state.stats.oversize.record(refusal);
            return too_large(&parts, refusal);
        }
    };
    let metrics = match parse_metrics_body(&bytes) {
        Ok(metrics) => metrics,
        Err(e) => {
            state.stats.invalid.note("request refused (400)", &e);
            return invalid(e);
        }
    };
    let batch_base =
        (metrics.len() > 1 || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')).then_some("");
    if let Err(e) = check_not_future(&metrics, lab_core::now_ms(), state.skew_ms, batch_base) {
        state.stats.invalid.note("request refused (400, clock)", &e);
        return invalid(e);
    }
    let Ok(_permit) = state.in_flight.try_acquire() else {
        const MESSAGE: &str = "too many requests are waiting for Redis; retry later";
        state.stats.shed.note("request shed (503)", &MESSAGE);
        return unavailable(MESSAGE);
    };
    match state.commit.commit(&metrics).await {
        Ok(ids) => {
            state.redis_ok.store(true, Ordering::Relaxed);
            state.stats.accepted.inc_by(ids.len() as u64);
            accepted(&ids)
        }
        Err(e) => {
            if matches!(e, commit::CommitError::Redis(_)) {
                state.redis_ok.store(false, Ordering::Relaxed);
            }
            state
                .stats
                .redis_errors
                .note("the metrics are not durable: answering 503", &e);
            unavailable(format!("{e}; nothing was acked, retry later"))
        }
    }
}

/// The `202` body ([`lab_core::wire::system1::Accepted`], written by lab-core's fast writer).
fn accepted(ids: &[String]) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        lab_core::wire::system1::accepted_json(ids),
    )
        .into_response()
}

fn invalid(e: ParseError) -> Response {
    (StatusCode::BAD_REQUEST, Json(InvalidPayload::new(e.problems()))).into_response()
}

async fn healthz(State(state): State<Arc<Inner>>) -> Response {
    let mut connection = state.redis.clone();
    let ping = tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("PING").query_async::<String>(&mut connection),
    )
    .await;
    let ok = matches!(ping, Ok(Ok(_)));
    state.redis_ok.store(ok, Ordering::Relaxed);
    let body = Healthz {
        status: if ok { "ok" } else { "degraded" }.into(),
        redis: if ok { "ready" } else { "unavailable" }.into(),
    };
    lab_ops::http::health(ok, body)
}

/// The API's `GET /api/monitoring` document: its counters, as `GET /metrics` shows them too.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMonitoring<'a> {
    /// Always `"api"`: which of System 1's roles answers (the dashboard shows all three).
    pub role: &'static str,
    /// `"ready"` if the last Redis call succeeded, `"unavailable"` if not.
    pub redis: &'static str,
    /// Metrics appended to the stream and acked `202`.
    pub metrics_accepted: u64,
    /// Requests refused as invalid (`400`, `413`, `415`).
    pub requests_invalid: u64,
    /// Requests answered `503` because Redis failed.
    pub redis_errors: u64,
    /// Requests answered `503` because `--max-in-flight` were already waiting.
    pub requests_shed: u64,
    /// Oversize bodies, by how they were handled (see [`MAX_DRAIN_BYTES`]).
    pub requests_oversize: OversizeMonitoring,
    /// Requests that may still start waiting for Redis before the API sheds load.
    pub in_flight_available: usize,
    /// The group commit's counters ([`commit`]).
    pub group_commits: GroupCommitMonitoring,
    /// Whether the ports speak TLS.
    pub tls: bool,
    /// Connections to a TLS port that never completed their handshake.
    pub tls_handshakes_failed: u64,
    /// The stream metrics are appended to (`--stream-key`; its partitions are `<stream>:{p0}` …).
    pub stream: &'a str,
    /// How many partitions the stream has.
    pub partitions: u16,
    /// Its cap (`--stream-maxlen`), over all partitions.
    pub stream_max_len: u64,
}

/// `requestsOversize` of [`ApiMonitoring`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OversizeMonitoring {
    /// Read to their end and discarded: the connection stayed open.
    pub drained: u64,
    /// Answered unread (over the drain bound, too slow, or `Expect: 100-continue`).
    pub refused: u64,
    /// Broke off while being drained.
    pub broken: u64,
    /// [`MAX_DRAIN_BYTES`].
    pub max_drain_bytes: usize,
}

/// `groupCommits` of [`ApiMonitoring`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupCommitMonitoring {
    /// Script calls to Redis.
    pub commits: u64,
    /// Requests they carried (divided by `commits`: the mean group size).
    pub requests: u64,
    /// Metrics they carried.
    pub metrics: u64,
    /// Calls Redis failed: every request they carried was answered `503`.
    pub failed: u64,
    /// Requests waiting for the next call now.
    pub waiting: usize,
    /// Most metrics one call carries ([`commit::MAX_GROUP_METRICS`]).
    pub max_metrics: usize,
}

async fn monitoring(State(state): State<Arc<Inner>>) -> Response {
    let s = &state.stats;
    Json(ApiMonitoring {
        role: "api",
        redis: if state.redis_ok.load(Ordering::Relaxed) {
            "ready"
        } else {
            "unavailable"
        },
        metrics_accepted: s.accepted.get(),
        requests_invalid: s.invalid.get(),
        redis_errors: s.redis_errors.get(),
        requests_shed: s.shed.get(),
        requests_oversize: OversizeMonitoring {
            drained: s.oversize.drained.get(),
            refused: s.oversize.refused.get(),
            broken: s.oversize.broken.get(),
            max_drain_bytes: MAX_DRAIN_BYTES,
        },
        in_flight_available: state.in_flight.available_permits(),
        group_commits: GroupCommitMonitoring {
            commits: s.commits.commits.get(),
            requests: s.commits.requests.get(),
            metrics: s.commits.metrics.get(),
            failed: s.commits.failed.get(),
            waiting: state.commit.waiting(),
            max_metrics: commit::MAX_GROUP_METRICS,
        },
        tls: state.tls,
        tls_handshakes_failed: s.tls_handshakes_failed.get(),
        stream: &state.stream_key,
        partitions: state.partitions,
        stream_max_len: state.maxlen,
    })
    .into_response()
}

async fn prometheus(State(state): State<Arc<Inner>>) -> Response {
    lab_ops::http::prometheus(&state.stats.registry)
}

#[cfg(test)]
mod tests {
    use lab_core::wire::system1::Accepted;

    use super::*;

    #[tokio::test]
    async fn the_accepted_body_is_accepted_in_json() {
        for ids in [
            vec![],
            vec!["1763800000000-0".to_owned()],
            vec!["1-0".into(), "1-1".into()],
        ] {
            let response = accepted(&ids);
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let parsed: Accepted = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed, Accepted::new(ids));
        }
    }
}
