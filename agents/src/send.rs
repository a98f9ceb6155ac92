//! The senders: one task per connection, sending its agents' metrics on schedule, and reading the
//! acknowledgements that come back.
//!
//! A connection carries some of the agents; its schedule has one slot per metric, and slot `k` goes to
//! its agent `k mod n`. With `--batch K`, a message carries K consecutive slots and is sent when the
//! last of them is due (each metric keeps its own due time, so the time it waited for its batch to
//! fill counts as latency: that is the price of batching, and the lab shows it).
//!
//! Failures are retried and counted: 429 and 503 after `Retry-After` (or a backoff), lost connections
//! after an exponential backoff (100 ms doubling to 5 s). Metrics in flight on a lost connection are
//! counted under `disconnected`; the dashboard's `seq` accounting tells whether they arrived anyway.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lab_core::Metric;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::{Protocol, RunArgs, Wire};
use crate::pacing::{Pacer, Schedule};
use crate::recorder::Recorder;
use crate::source::Source;

/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How many times one request is tried on 429/503 before it counts as refused.
const MAX_ATTEMPTS: u32 = 5;

/// Most HTTP/2 requests in flight on one connection.
const H2_IN_FLIGHT: usize = 512;

/// What every sender shares.
pub struct Ctx {
    /// The run's settings.
    pub args: RunArgs,
    /// Where measurements go.
    pub recorder: Arc<Recorder>,
    /// Wakes senders on time.
    pub pacer: Arc<Pacer>,
    /// No metric due at or after this (epoch ms) is sent.
    pub end_ms: f64,
    /// Ctrl-C: stop sending now.
    pub stop: CancellationToken,
}

/// One message's metrics, for matching its acknowledgement.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    first_due: f64,
    interval: f64,
    count: u64,
}

/// A connection's share of the work.
pub struct Lane {
    /// Its index (for the pacer).
    pub index: usize,
    /// Its agents.
    pub sources: Vec<Source>,
    /// Its slots.
    pub schedule: Schedule,
}

impl Lane {
    /// The metrics of slots `k .. k + count`.
    fn metrics(&mut self, k: u64, count: u64, wire: Wire) -> Vec<Metric> {
        let n = self.sources.len() as u64;
        (k..k + count)
            .map(|slot| {
                let mut m = self.sources[(slot % n) as usize].next(self.schedule.due(slot));
                if wire == Wire::Original {
                    m.seq = None;
                }
                m
            })
            .collect()
    }
}

/// The text of one message carrying `metrics`.
fn encode(metrics: &[Metric], protocol: Protocol) -> String {
    let json = |m: &Metric| serde_json::to_string(m).expect("metrics serialize");
    match (protocol, metrics) {
        (Protocol::Ws, [one]) => format!(r#"{{"type":"metric",{}"#, &json(one)[1..]),
        (Protocol::Ws, many) => {
            let items: Vec<String> = many.iter().map(json).collect();
            format!(r#"{{"type":"metrics","items":[{}]}}"#, items.join(","))
        }
        (_, [one]) => json(one),
        (_, many) => format!("[{}]", many.iter().map(json).collect::<Vec<_>>().join(",")),
    }
}

/// Waits for `d`, or less if the run is stopped.
async fn pause(ctx: &Ctx, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = ctx.stop.cancelled() => {}
    }
}

/// Sends one lane's metrics until the run ends.
pub async fn run_lane(mut lane: Lane, ctx: Arc<Ctx>) {
    match ctx.args.protocol() {
        Protocol::Ws => ws_lane(&mut lane, &ctx).await,
        Protocol::Http1 | Protocol::Http2 => http_lane(&mut lane, &ctx).await,
    }
}

/// Waits until the next message (slots `k .. k + batch`) is due; `false` when the run is over.
async fn next_due(lane: &Lane, ctx: &Ctx, k: u64) -> bool {
    let due = lane.schedule.due(k + ctx.args.batch - 1);
    if due >= ctx.end_ms || ctx.stop.is_cancelled() {
        return false;
    }
    tokio::select! {
        _ = ctx.pacer.wait_until(lane.index, ctx.recorder.clock, due) => {}
        _ = ctx.stop.cancelled() => return false,
    }
    ctx.recorder.lag(due);
    true
}

// ---- WebSocket (System 2) ----

#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    accepted: Option<u64>,
    #[serde(default)]
    details: Option<Vec<serde_json::Value>>,
}

async fn ws_lane(lane: &mut Lane, ctx: &Ctx) {
    let rec = &ctx.recorder;
    let batch = ctx.args.batch;
    let url = match &ctx.args.token {
        Some(token) => format!("{}?token={}", ctx.args.target, token.expose()),
        None => ctx.args.target.clone(),
    };
    let mut k = 0u64;
    let mut backoff = Duration::from_millis(100);
    'sessions: loop {
        let config =
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(16 * 1024);
        let ws = tokio::select! {
            r = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true) => r,
            _ = ctx.stop.cancelled() => return,
        };
        let ws = match ws {
            Ok((ws, _)) => ws,
            Err(e) => {
                rec.error(format!("connect: {}", short(&e.to_string())), 1);
                rec.retries.fetch_add(1, Ordering::Relaxed);
                pause(ctx, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                // Metrics fall due while we cannot connect (and will be sent late, counted from their
                // due time); but once the run's time is up, unsent ones stay unsent.
                if ctx.stop.is_cancelled() || rec.clock.now_ms() >= ctx.end_ms {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let (mut sink, mut stream) = ws.split();
        let in_flight = Arc::new(std::sync::Mutex::new(VecDeque::<InFlight>::new()));
        let reader = {
            let in_flight = in_flight.clone();
            let rec = rec.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    match message {
                        Message::Text(text) => on_reply(&text, &in_flight, &rec),
                        Message::Close(frame) => {
                            let code = frame.map_or(1005, |f| u16::from(f.code));
                            rec.error(format!("close {code}"), 1);
                            break;
                        }
                        _ => {}
                    }
                }
            })
        };
        let mut broken = false;
        while next_due(lane, ctx, k).await {
            // Everything already due goes out with one flush.
            loop {
                let metrics = lane.metrics(k, batch, ctx.args.wire);
                let entry = InFlight {
                    first_due: lane.schedule.due(k),
                    interval: lane.schedule.interval_ms,
                    count: batch,
                };
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(entry);
                if sink
                    .feed(Message::Text(encode(&metrics, Protocol::Ws).into()))
                    .await
                    .is_err()
                {
                    broken = true;
                    break;
                }
                rec.sent.fetch_add(batch, Ordering::Relaxed);
                k += batch;
                let next = lane.schedule.due(k + batch - 1);
                if next > rec.clock.now_ms() || next >= ctx.end_ms {
                    break;
                }
            }
            if broken || sink.flush().await.is_err() || reader.is_finished() {
                broken = true;
                break;
            }
        }
        if broken {
            let unacked: u64 = in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain(..)
                .map(|f| f.count)
                .sum();
            if unacked > 0 {
                rec.error("disconnected with metrics unacknowledged", unacked);
            }
            rec.retries.fetch_add(1, Ordering::Relaxed);
            reader.abort();
            pause(ctx, backoff).await;
            if ctx.stop.is_cancelled() || rec.clock.now_ms() >= ctx.end_ms {
                return;
            }
            continue 'sessions;
        }
        // The schedule is done: wait for the last acks, then leave politely.
        let deadline = tokio::time::Instant::now() + ctx.args.cooldown;
        while !in_flight.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
            && tokio::time::Instant::now() < deadline
            && !reader.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let unacked: u64 = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|f| f.count)
            .sum();
        if unacked > 0 {
            rec.error("no ack before the end of the cooldown", unacked);
        }
        let _ = sink.send(Message::Close(None)).await;
        reader.abort();
        break;
    }
}

fn on_reply(text: &str, in_flight: &std::sync::Mutex<VecDeque<InFlight>>, rec: &Recorder) {
    let Ok(reply) = serde_json::from_str::<Reply>(text) else {
        rec.error("unreadable reply", 1);
        return;
    };
    let pop = || in_flight.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
    match reply.kind.as_str() {
        "metric.ack" => {
            if let Some(f) = pop() {
                rec.acked(f.first_due, f.interval, f.count);
            }
        }
        "metrics.ack" => {
            if let Some(f) = pop() {
                // Part of a batch may have been refused (System 2's server limit): its error came first.
                let accepted = reply.accepted.unwrap_or(f.count).min(f.count);
                rec.acked(f.first_due, f.interval, accepted);
            }
        }
        "error" => {
            let message = reply.message.unwrap_or_default();
            if message == "Server limit reached"
                && reply
                    .details
                    .as_ref()
                    .is_some_and(|d| d.iter().any(|p| p.get("index").is_some()))
            {
                // A batch partly refused: a `metrics.ack` follows for the rest.
                let n = reply.details.map_or(1, |d| d.len() as u64);
                rec.refused.fetch_add(n, Ordering::Relaxed);
                rec.error(format!("error: {message}"), n);
            } else if let Some(f) = pop() {
                rec.refused.fetch_add(f.count, Ordering::Relaxed);
                rec.error(format!("error: {message}"), f.count);
            }
        }
        _ => {} // connection.ack, register.ack, updates if we are also a dashboard
    }
}

// ---- HTTP/1.1 and HTTP/2 (System 1) ----

/// A connection to an HTTP target.
enum HttpSender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Where an HTTP lane sends: parsed once per lane from `--target`.
struct HttpTarget {
    authority: String,
    uri: String,
    path: String,
    /// Set for an https:// target: the TLS client and the name the certificate must carry.
    tls: Option<TlsTarget>,
}

/// TLS for an https:// target. ALPN offers exactly the protocol asked for (`h2` or `http/1.1`), so
/// that a server or proxy which cannot speak it fails the handshake loudly instead of silently
/// serving the other one: the lab must know which protocol it measured.
struct TlsTarget {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

fn http_target(target: &str) -> Result<HttpTarget, String> {
    let (scheme, rest, default_port) = if let Some(rest) = target.strip_prefix("http://") {
        ("http", rest, 80)
    } else if let Some(rest) = target.strip_prefix("https://") {
        ("https", rest, 443)
    } else {
        return Err(format!("{target:?} is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        "/metrics".to_owned()
    } else {
        path.to_owned()
    };
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    Ok(HttpTarget {
        uri: format!("{scheme}://{authority}{path}"),
        authority,
        path,
        tls: None,
    })
}

impl HttpTarget {
    /// Adds TLS to an https:// target, trusting only the certificates in `ca` (PEM).
    fn with_tls(mut self, ca: Option<&Path>, protocol: Protocol) -> Result<Self, String> {
        if !self.uri.starts_with("https://") {
            return Ok(self);
        }
        let ca = ca.ok_or("an https:// target needs --tls-ca FILE")?;
        let pem = std::fs::read(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "--tls-ca {}: no -----BEGIN CERTIFICATE----- block",
                ca.display()
            ));
        }
        // The `ring` provider, as System 1's server side (aws-lc-rs needs cmake and nasm to build).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![match protocol {
            Protocol::Http2 => b"h2".to_vec(),
            _ => b"http/1.1".to_vec(),
        }];
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
        self.tls = Some(TlsTarget {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        });
        Ok(self)
    }
}

async fn http_connect(target: &HttpTarget, protocol: Protocol) -> Result<HttpSender, String> {
    let stream = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    match &target.tls {
        None => http_handshake(TokioIo::new(stream), protocol).await,
        Some(tls) => {
            let stream = tls
                .connector
                .connect(tls.name.clone(), stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            if protocol == Protocol::Http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err("TLS: the server did not agree to HTTP/2 (no h2 by ALPN)".into());
            }
            http_handshake(TokioIo::new(stream), protocol).await
        }
    }
}

/// The HTTP handshake over a connected (cleartext or TLS) stream.
async fn http_handshake<I>(io: I, protocol: Protocol) -> Result<HttpSender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(HttpSender::H2(sender))
        }
        _ => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(HttpSender::H1(sender))
        }
    }
}

/// What one POST came to.
enum Posted {
    Status(StatusCode, Option<Duration>),
    Broken(String),
}

async fn post(sender: &mut HttpSender, target: &HttpTarget, body: Bytes) -> Posted {
    // HTTP/1.1 names the host in a `Host` header; HTTP/2 in the `:authority` pseudo-header, which
    // hyper takes from the full URI. Both at once is legal but refused by some proxies (nginx 1.22
    // answers 400, "duplicate host header"), so each protocol gets only its own.
    let request = |uri: &str, host: Option<&str>| {
        let mut request = Request::post(uri);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("a valid request")
    };
    let response = match sender {
        HttpSender::H1(s) => match s.ready().await {
            Ok(()) => {
                s.send_request(request(&target.path, Some(&target.authority)))
                    .await
            }
            Err(e) => return Posted::Broken(e.to_string()),
        },
        HttpSender::H2(s) => match s.ready().await {
            Ok(()) => s.send_request(request(&target.uri, None)).await,
            Err(e) => return Posted::Broken(e.to_string()),
        },
    };
    match response {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|s| Duration::from_secs_f64(s.clamp(0.0, 5.0)));
            let status = response.status();
            // Read the body so the connection can carry the next request.
            let _ = response.into_body().collect().await;
            Posted::Status(status, retry_after)
        }
        Err(e) => Posted::Broken(e.to_string()),
    }
}

/// Delivers one message: retries on 429/503 and on broken connections (reconnecting), records the
/// outcome. Returns the sender to use next (a new one after a reconnect).
async fn deliver(
    mut sender: Option<HttpSender>,
    target: &HttpTarget,
    ctx: &Ctx,
    body: Bytes,
    entry: InFlight,
) -> Option<HttpSender> {
    let rec = &ctx.recorder;
    let mut backoff = Duration::from_millis(50);
    for attempt in 1..=MAX_ATTEMPTS {
        if attempt > 1 {
            rec.retries.fetch_add(1, Ordering::Relaxed);
        }
        let mut s = match sender.take() {
            Some(s) => s,
            None => match http_connect(target, ctx.args.protocol()).await {
                Ok(s) => s,
                Err(e) => {
                    rec.error(format!("connect: {}", short(&e)), 1);
                    pause(ctx, backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        match post(&mut s, target, body.clone()).await {
            Posted::Status(status, _) if status.is_success() => {
                rec.acked(entry.first_due, entry.interval, entry.count);
                return Some(s);
            }
            Posted::Status(status, retry_after)
                if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                rec.error(format!("http {}", status.as_u16()), 1);
                pause(ctx, retry_after.unwrap_or(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                sender = Some(s);
            }
            Posted::Status(status, _) => {
                rec.error(format!("http {}", status.as_u16()), 1);
                rec.refused.fetch_add(entry.count, Ordering::Relaxed);
                return Some(s);
            }
            Posted::Broken(e) => {
                rec.error(format!("connection: {}", short(&e)), 1);
                pause(ctx, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if ctx.stop.is_cancelled() {
            break;
        }
    }
    rec.refused.fetch_add(entry.count, Ordering::Relaxed);
    rec.error("gave up after retries", entry.count);
    sender
}

async fn http_lane(lane: &mut Lane, ctx: &Arc<Ctx>) {
    let target = match http_target(&ctx.args.target)
        .and_then(|t| t.with_tls(ctx.args.tls_ca.as_deref(), ctx.args.protocol()))
    {
        Ok(t) => Arc::new(t),
        Err(e) => {
            ctx.recorder.error(e, 1);
            return;
        }
    };
    let batch = ctx.args.batch;
    let h2 = ctx.args.protocol() == Protocol::Http2;
    let mut sender = None;
    let limit = Arc::new(Semaphore::new(H2_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut k = 0u64;
    while next_due(lane, ctx, k).await {
        let metrics = lane.metrics(k, batch, ctx.args.wire);
        let entry = InFlight {
            first_due: lane.schedule.due(k),
            interval: lane.schedule.interval_ms,
            count: batch,
        };
        let body = Bytes::from(encode(&metrics, ctx.args.protocol()));
        ctx.recorder.sent.fetch_add(batch, Ordering::Relaxed);
        k += batch;
        if h2 {
            // Many streams on one connection: each request is its own task, bounded in number.
            if sender.is_none() {
                sender = match http_connect(&target, Protocol::Http2).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        ctx.recorder.error(format!("connect: {}", short(&e)), 1);
                        None
                    }
                };
            }
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let this = match &sender {
                Some(HttpSender::H2(s)) if !s.is_closed() => Some(HttpSender::H2(s.clone())),
                _ => {
                    sender = None;
                    None
                }
            };
            let (ctx, target) = (ctx.clone(), target.clone());
            tasks.spawn(async move {
                deliver(this, &target, &ctx, body, entry).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        } else {
            // HTTP/1.1: one request at a time on this connection; a slow answer delays what follows,
            // and their latency (from their due time) says so.
            sender = deliver(sender.take(), &target, ctx, body, entry).await;
        }
    }
    let cooldown = tokio::time::sleep(ctx.args.cooldown);
    tokio::pin!(cooldown);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            _ = &mut cooldown => {
                let left = tasks.len() as u64;
                ctx.recorder.error("no answer before the end of the cooldown", left * batch);
                tasks.abort_all();
                break;
            }
        }
    }
}

/// The first line of an error, at most 80 characters, for error kinds.
fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    line.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_targets_default_to_the_metrics_path() {
        let t = http_target("http://localhost:4000").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str(), t.uri.as_str()),
            ("localhost:4000", "/metrics", "http://localhost:4000/metrics")
        );
        assert_eq!(http_target("http://h:1/ingest").unwrap().path, "/ingest");
        assert_eq!(http_target("http://h").unwrap().authority, "h:80");
        assert!(http_target("ws://h").is_err());
        let t = http_target("https://localhost/system1/metrics").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.uri.as_str()),
            ("localhost:443", "https://localhost:443/system1/metrics")
        );
        let no_ca = http_target("https://localhost")
            .unwrap()
            .with_tls(None, Protocol::Http2);
        assert!(no_ca.is_err_and(|e| e.contains("--tls-ca")));
        let not_pem = tempfile::NamedTempFile::new().unwrap();
        let err = http_target("https://localhost")
            .unwrap()
            .with_tls(Some(not_pem.path()), Protocol::Http2)
            .err()
            .unwrap();
        assert!(err.contains("no -----BEGIN CERTIFICATE----- block"), "{err}");
    }

    #[test]
    fn messages_follow_the_protocol() {
        let mut s = Source::new("server-", 1, 1, 0.0, 1.0);
        let one = vec![s.next(5.0)];
        let two = vec![s.next(6.0), s.next(7.0)];
        let frame = encode(&one, Protocol::Ws);
        assert!(
            matches!(
                lab_core::parse::parse_client_frame(frame.as_bytes()),
                Ok(lab_core::wire::system2::ClientFrame::Metric(_))
            ),
            "{frame}"
        );
        let frame = encode(&two, Protocol::Ws);
        assert!(
            matches!(lab_core::parse::parse_client_frame(frame.as_bytes()), Ok(lab_core::wire::system2::ClientFrame::Metrics(m)) if m.len() == 2),
            "{frame}"
        );
        assert_eq!(
            lab_core::parse::parse_metrics_body(encode(&one, Protocol::Http1).as_bytes())
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            lab_core::parse::parse_metrics_body(encode(&two, Protocol::Http2).as_bytes())
                .unwrap()
                .len(),
            2
        );
    }
}
