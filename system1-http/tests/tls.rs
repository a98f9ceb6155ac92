//! System 1's API over TLS (`--tls-self-signed`, `--tls-cert`/`--tls-key`) against a real redis-server:
//! HTTP/1.1 and HTTP/2 negotiated by ALPN, plain text refused without harming the server, bad
//! certificate files named in the error, in-flight requests drained on shutdown.
//!
//! The client is hyper over tokio-rustls, not reqwest, so that each test chooses exactly what ALPN
//! offers and can read back what the server picked.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::api_cli;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lab_testkit::RedisServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use system1_http::api::IngestApi;
use system1_http::config::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// A running TLS API, stopped when dropped (or earlier with `stop`).
struct Api {
    addrs: Vec<SocketAddr>,
    /// The certificate clients must trust.
    cert_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn bind(redis: &RedisServer, extra: &[&str]) -> anyhow::Result<IngestApi> {
    let cli = api_cli(redis, extra);
    let Role::Api(api) = &cli.role else { unreachable!() };
    IngestApi::bind(api, &cli.redis).await
}

async fn start_self_signed(redis: &RedisServer) -> Api {
    let server = bind(redis, &["--tls-self-signed"]).await.unwrap();
    assert!(server.is_tls());
    let generated = server.self_signed_certificate().unwrap().clone();
    let path = generated.path.clone().expect("the certificate was written");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), generated.pem);
    let _ = std::fs::remove_file(path);
    start(server, generated.pem)
}

fn start(server: IngestApi, cert_pem: String) -> Api {
    let addrs = server.local_addrs();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Api {
        addrs,
        cert_pem,
        stop: Some(stop),
        task,
    }
}

fn metric(server: &str, seq: u64) -> Value {
    json!({"serverId": server, "timestamp": lab_core::now_ms(), "metrics": {"cpu": 1, "memory": 2, "disk": 3}, "seq": seq})
}

/// Connects over TLS offering `alpn`, trusting only `cert_pem`; returns the stream and the protocol
/// the server picked.
async fn connect(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// What one request over TLS gave: the ALPN protocol, the HTTP version, the status and the JSON body.
#[derive(Debug)]
struct Answer {
    alpn: Option<Vec<u8>>,
    version: hyper::Version,
    status: u16,
    body: Value,
}

/// Sends one request over a new TLS connection, in HTTP/2 if the server agreed to `h2`, else HTTP/1.1.
async fn request(
    addr: SocketAddr,
    cert_pem: &str,
    alpn: &[&[u8]],
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    let stream = connect(addr, cert_pem, alpn).await.unwrap();
    let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost:{}{path}", addr.port()));
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let io = TokioIo::new(stream);
    let response = if negotiated.as_deref() == Some(b"h2") {
        let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = builder
            .version(hyper::Version::HTTP_2)
            .body(Full::new(Bytes::from(bytes)))
            .unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let request = builder
            .header("host", format!("localhost:{}", addr.port()))
            .body(Full::new(Bytes::from(bytes)))
            .unwrap();
        sender.send_request(request).await.unwrap()
    };
    let version = response.version();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        alpn: negotiated,
        version,
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

/// The entry's `serverId`, read back from the stream by its id.
fn stored_server_id(redis: &RedisServer, id: &str) -> String {
    let entries = common::entries(redis);
    let found: Vec<_> = entries.ids.iter().filter(|e| e.id == id).collect();
    assert_eq!(found.len(), 1, "entry {id} is in the stream");
    found[0].get("serverId").unwrap()
}

#[tokio::test]
async fn http1_and_http2_are_negotiated_by_alpn_on_both_ports() {
    let redis = RedisServer::start().unwrap();
    let api = start_self_signed(&redis).await;
    for (i, addr) in api.addrs.iter().enumerate() {
        // A client offering both gets the server's preference, HTTP/2 (as a browser does).
        let server = format!("h2-{i}");
        let answer = request(
            *addr,
            &api.cert_pem,
            &[b"h2", b"http/1.1"],
            "POST",
            "/metrics",
            Some(&metric(&server, 1)),
        )
        .await;
        assert_eq!(answer.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(answer.version, hyper::Version::HTTP_2);
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        let id = answer.body["ids"][0].as_str().unwrap();
        assert_eq!(stored_server_id(&redis, id), server);

        // A client offering only HTTP/1.1 gets it.
        let server = format!("h1-{i}");
        let answer = request(
            *addr,
            &api.cert_pem,
            &[b"http/1.1"],
            "POST",
            "/metrics",
            Some(&metric(&server, 2)),
        )
        .await;
        assert_eq!(answer.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(answer.version, hyper::Version::HTTP_11);
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        let id = answer.body["ids"][0].as_str().unwrap();
        assert_eq!(stored_server_id(&redis, id), server);
    }
    let len: usize = common::stream_len(&redis);
    assert_eq!(len, 4);
}

#[tokio::test]
async fn a_plain_text_client_fails_cleanly_and_the_server_keeps_serving() {
    let redis = RedisServer::start().unwrap();
    let api = start_self_signed(&redis).await;
    let addr = api.addrs[0];

    // Plain HTTP to the TLS port: no HTTP answer, and the connection is closed promptly.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = metric("plain", 1).to_string();
    let plain = format!(
        "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(plain.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(!reply.starts_with(b"HTTP/"), "no HTTP answer over plain text");
    // reqwest too: an error, not a hang and not a response.
    let refused = reqwest::Client::new()
        .post(format!("http://{addr}/metrics"))
        .json(&metric("plain", 2))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // The server goes on serving TLS clients, and counted both failures.
    let answer = request(
        addr,
        &api.cert_pem,
        &[b"h2"],
        "POST",
        "/metrics",
        Some(&metric("after", 1)),
    )
    .await;
    assert_eq!(answer.status, 202);
    let monitoring = request(addr, &api.cert_pem, &[b"h2"], "GET", "/api/monitoring", None).await;
    assert_eq!(monitoring.body["tls"], true);
    assert_eq!(monitoring.body["tlsHandshakesFailed"], 2);
    let len: usize = common::stream_len(&redis);
    assert_eq!(len, 1, "nothing sent in plain text was stored");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let redis = RedisServer::start().unwrap();
    let api = start_self_signed(&redis).await;
    // Another self-signed certificate: the client trusts that one, not the server's.
    let (_, other_pem) = system1_http::api::tls::self_signed_config().unwrap();
    let refused = connect(api.addrs[0], &other_pem, &[b"h2"]).await;
    assert!(refused.is_err(), "the handshake must fail");
    let answer = request(api.addrs[0], &api.cert_pem, &[b"h2"], "GET", "/healthz", None).await;
    assert_eq!(answer.status, 200);
}

/// Writes a certificate and key generated with rcgen, as an operator's files would be.
fn write_pem_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key, generated.cert.pem())
}

#[tokio::test]
async fn certificate_and_key_files_are_served() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = write_pem_files(dir.path());
    let server = bind(
        &redis,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(server.is_tls() && server.self_signed_certificate().is_none());
    let api = start(server, pem);
    let answer = request(
        api.addrs[1],
        &api.cert_pem,
        &[b"h2", b"http/1.1"],
        "POST",
        "/metrics",
        Some(&metric("files", 1)),
    )
    .await;
    assert_eq!((answer.version, answer.status), (hyper::Version::HTTP_2, 202));
}

/// Every way a certificate file can be wrong stops the start-up with a message naming the file.
#[tokio::test]
async fn bad_certificate_files_are_refused_naming_the_file() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = write_pem_files(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key, _) = write_pem_files(other.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    for (cert_file, key_file, named, fragment) in [
        (path(&missing), path(&key), path(&missing), "cannot read"),
        (path(&garbage), path(&key), path(&garbage), "BEGIN CERTIFICATE"),
        // A certificate where the key should be: no key in it.
        (path(&cert), path(&cert), path(&cert), "PRIVATE KEY"),
        (
            path(&cert),
            path(&other_key),
            path(&other_key),
            "cannot be used together",
        ),
    ] {
        let error = bind(&redis, &["--tls-cert", &cert_file, "--tls-key", &key_file])
            .await
            .err()
            .expect("refused");
        let message = format!("{error:#}");
        assert!(
            message.contains(&named) && message.contains(fragment),
            "{cert_file} / {key_file}: {message}"
        );
    }
}

/// A request waiting for Redis when shutdown begins is still answered, over TLS as in plain text.
#[tokio::test]
async fn shutdown_drains_in_flight_tls_requests() {
    let redis = RedisServer::start().unwrap();
    let mut api = start_self_signed(&redis).await;
    // Warm the connection to Redis, then stall Redis for a moment.
    let warm = request(api.addrs[0], &api.cert_pem, &[b"h2"], "GET", "/healthz", None).await;
    assert_eq!(warm.status, 200);
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "700", "ALL"])
        .query(&mut redis.connection())
        .unwrap();
    let (addr, pem) = (api.addrs[0], api.cert_pem.clone());
    let in_flight = tokio::spawn(async move {
        request(
            addr,
            &pem,
            &[b"h2"],
            "POST",
            "/metrics",
            Some(&metric("draining", 1)),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.stop.take().unwrap().send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !api.task.is_finished(),
        "run() waits for the request still waiting on Redis"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    tokio::time::timeout(Duration::from_secs(5), &mut api.task)
        .await
        .expect("run() returned after draining")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn an_oversize_body_over_tls_gets_its_413_in_both_protocols() {
    let redis = RedisServer::start().unwrap();
    let api = start_self_signed(&redis).await;
    // About 5 MB of metrics, sent whole without waiting (hyper sends no `Expect: 100-continue`).
    let big = Value::Array((0..50_000).map(|seq| metric("big", seq)).collect());
    assert!(big.to_string().len() > 4_000_000);
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let answer = request(
            api.addrs[0],
            &api.cert_pem,
            &[alpn],
            "POST",
            "/metrics",
            Some(&big),
        )
        .await;
        assert_eq!(answer.status, 413, "{alpn:?}: {:?}", answer.body);
        assert!(
            answer.body["error"].as_str().unwrap().contains("larger than"),
            "{:?}",
            answer.body
        );
        let next = request(
            api.addrs[0],
            &api.cert_pem,
            &[alpn],
            "POST",
            "/metrics",
            Some(&metric("after", 1)),
        )
        .await;
        assert_eq!(next.status, 202, "the server keeps serving: {:?}", next.body);
    }
}
