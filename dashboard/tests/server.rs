//! The dashboard's server on a free port: its routes, the embedded assets (ETag, 304, compression),
//! the relays (against a real System 2, a closed port, a server that never answers, one that answers
//! something that is not JSON), the agents' figures, and its flags.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dashboard::config::Config;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A running dashboard with these extra flags; stopped when the token is dropped... or cancelled.
struct Running {
    address: SocketAddr,
    figures: std::sync::Arc<dashboard::agents::AgentFigures>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

async fn start(extra: &[String]) -> Running {
    let mut args = vec![
        "dashboard".to_string(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
    ];
    args.extend_from_slice(extra);
    let server = dashboard::Server::bind(Config::try_parse_from(args).expect("valid flags"))
        .await
        .unwrap();
    let address = server.local_addr();
    let figures = server.agent_figures();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(server.run(async move { s.cancelled().await }));
    Running {
        address,
        figures,
        stop,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn it_serves_the_page_and_every_asset_from_the_binary() {
    let d = start(&[]).await;
    for (path, file, kind) in [
        ("/", "index.html", "text/html"),
        ("/index.html", "index.html", "text/html"),
        ("/app.js", "app.js", "javascript"),
        ("/hist.js", "hist.js", "javascript"),
        ("/style.css", "style.css", "text/css"),
        (
            "/vendor/uPlot.iife.min.js",
            "vendor/uPlot.iife.min.js",
            "javascript",
        ),
        ("/vendor/uPlot.min.css", "vendor/uPlot.min.css", "text/css"),
        ("/vendor/uPlot.LICENSE", "vendor/uPlot.LICENSE", ""),
    ] {
        let r = client().get(d.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.contains(kind), "{path}: {content_type}");
        assert!(r.headers().contains_key("etag"), "{path} has an ETag");
        let body = r.bytes().await.unwrap();
        let on_disk = std::fs::read(format!("{}/assets/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(body[..] == on_disk[..], "{path} is served as {file} is");
    }
    // Isolated, for the precise clock (see `cross_origin_isolated`).
    let r = client().get(d.url("/")).send().await.unwrap();
    assert_eq!(r.headers()["cross-origin-opener-policy"], "same-origin");
    assert_eq!(r.headers()["cross-origin-embedder-policy"], "require-corp");
    // The page loads its scripts and styles from this origin only: no CDN.
    let page = client()
        .get(d.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("http://") && !page.contains("https://"), "{page}");
    let r = client().get(d.url("/no-such-file.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn an_unchanged_asset_is_answered_304_without_a_body() {
    let d = start(&[]).await;
    let first = client().get(d.url("/app.js")).send().await.unwrap();
    let etag = first.headers()["etag"].clone();
    let again = client()
        .get(d.url("/app.js"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = client()
        .get(d.url("/app.js"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    // The page itself is revalidated on every load, so a new build is seen at once.
    let page = client().get(d.url("/")).send().await.unwrap();
    assert_eq!(page.headers()["cache-control"], "no-cache");
}

#[tokio::test]
async fn text_assets_are_compressed_as_the_client_asks() {
    let d = start(&[]).await;
    let plain = client()
        .get(d.url("/vendor/uPlot.iife.min.js"))
        .send()
        .await
        .unwrap();
    let plain_len = plain.bytes().await.unwrap().len();
    for encoding in ["gzip", "br"] {
        let r = client()
            .get(d.url("/vendor/uPlot.iife.min.js"))
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], encoding);
        let len = r.bytes().await.unwrap().len();
        assert!(len * 2 < plain_len, "{encoding}: {len} bytes of {plain_len}");
    }
}

#[tokio::test]
async fn config_json_tells_the_page_where_to_connect() {
    let d = start(&[
        "--system1-ws=/system1/ws".into(),
        "--system2-ws=wss://lab.example/s2".into(),
    ])
    .await;
    let (status, doc) = get_json(&d.url("/config.json")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["system1"]["ws"], "/system1/ws");
    assert_eq!(doc["system2"]["ws"], "wss://lab.example/s2");
    assert_eq!(doc["system1"]["status"], "/api/status/system1");
    assert_eq!(doc["agents"], "/api/agents");
    let (status, health) = get_json(&d.url("/api/health")).await;
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")));
}

#[tokio::test]
async fn the_relay_passes_on_system2s_health_and_monitoring() {
    let system2 = system2_ws::Server::bind(system2_ws::config::Config::for_tests())
        .await
        .unwrap();
    let at = system2.local_addr();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(system2.run(async move { s.cancelled().await }));
    let d = start(&[format!("--system2-http=http://{at}")]).await;
    let (status, doc) = get_json(&d.url("/api/status/system2")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["documents"]["health"]["status"], 200, "{doc:#}");
    assert_eq!(doc["documents"]["health"]["body"]["status"], "ok", "{doc:#}");
    assert!(
        doc["documents"]["monitoring"]["body"]["connections"].is_object(),
        "{doc:#}"
    );
    assert!(doc["documents"]["monitoring"]["ms"].is_number(), "{doc:#}");
    stop.cancel();
}

#[tokio::test]
async fn a_system_that_is_down_is_reported_not_failed() {
    let port = closed_port();
    let d = start(&[format!("--system2-http=http://127.0.0.1:{port}")]).await;
    let (status, doc) = get_json(&d.url("/api/status/system2")).await;
    assert_eq!(status, 200, "the relay worked; the system is what is down");
    let error = doc["documents"]["health"]["error"].as_str().unwrap();
    assert!(error.contains("cannot connect"), "{error}");
    assert_eq!(
        doc["documents"]["health"]["url"],
        format!("http://127.0.0.1:{port}/api/health")
    );
}

#[tokio::test]
async fn a_system_that_never_answers_times_out_at_the_bound() {
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let d = start(&[
        format!("--system1-ops=http://{at}"),
        "--relay-timeout-ms=300".into(),
    ])
    .await;
    let (status, doc) = get_json(&d.url("/api/status/system1")).await;
    assert_eq!(status, 200);
    for part in ["workers.health", "workers.monitoring"] {
        let error = doc["documents"][part]["error"].as_str().unwrap();
        assert!(error.contains("timed out after 300 ms"), "{part}: {error}");
    }
    // The other parts were fetched (and failed: nothing runs on the default ports) on their own.
    assert!(doc["documents"]["api.health"].is_object(), "{doc:#}");
}

#[tokio::test]
async fn an_answer_that_is_not_json_is_named_as_such() {
    let app = axum::Router::new().route(
        "/api/health",
        axum::routing::get(|| async { "<html>proxy error</html>" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let d = start(&[format!("--system2-http=http://{at}")]).await;
    let (_, doc) = get_json(&d.url("/api/status/system2")).await;
    let error = doc["documents"]["health"]["error"].as_str().unwrap();
    assert!(
        error.contains("not JSON") && error.contains("proxy error"),
        "{error}"
    );
    // A path the fake server does not have: its 404 is relayed as such (axum's empty body is not JSON).
    let monitoring = doc["documents"]["monitoring"]["error"].as_str().unwrap();
    assert!(monitoring.contains("404"), "{monitoring}");
}

#[tokio::test]
async fn an_unknown_system_is_a_404_that_says_which_exist() {
    let d = start(&[]).await;
    let (status, doc) = get_json(&d.url("/api/status/system3")).await;
    assert_eq!(status, 404);
    assert!(
        doc["error"].as_str().unwrap().contains("system1 or system2"),
        "{doc}"
    );
}

#[tokio::test]
async fn the_agents_figures_are_served_as_fed() {
    let d = start(&[]).await;
    let (_, doc) = get_json(&d.url("/api/agents")).await;
    assert_eq!(doc["fed"], false);
    assert_eq!(doc["systems"], serde_json::json!({}));
    let line = r#"{"system":"system1","second":{"t":3,"delivered":200,"e2e_latency_ms":{"p50":1.5}}}"#;
    d.figures.read_from(format!("{line}\n").as_bytes()).await;
    let (_, doc) = get_json(&d.url("/api/agents")).await;
    assert_eq!(doc["fed"], true);
    assert_eq!(doc["systems"]["system1"]["second"]["delivered"], 200);
    assert!(doc["systems"]["system1"]["ageMs"].is_number());
}

#[tokio::test]
async fn a_port_in_use_is_named_with_the_flag_that_moves_it() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let config =
        Config::try_parse_from(["dashboard", "--host=127.0.0.1", &format!("--port={port}")]).unwrap();
    let error = format!("{:#}", dashboard::Server::bind(config).await.err().unwrap());
    assert!(
        error.contains(&port.to_string()) && error.contains("--port or DASHBOARD_PORT"),
        "{error}"
    );
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    let refused = |args: &[&str]| {
        let mut all = vec!["dashboard"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap_err().to_string()
    };
    assert!(refused(&["--port", "eighty"]).contains("invalid value 'eighty'"));
    assert!(refused(&["--port", "70000"]).contains("70000"));
    let e = refused(&["--system1-ws", "http://127.0.0.1:4002/"]);
    assert!(e.contains("the scheme must be ws or wss (got http)"), "{e}");
    let e = refused(&["--system2-ws", "not a url"]);
    assert!(e.contains("is not a URL"), "{e}");
    let e = refused(&["--system1-api", "https://127.0.0.1:4000"]);
    assert!(e.contains("the scheme must be http (got https)"), "{e}");
    let e = refused(&["--relay-timeout-ms", "0"]);
    assert!(e.contains("--relay-timeout-ms"), "{e}");
    let e = refused(&["--host", "localhost:80"]);
    assert!(e.contains("--host"), "{e}");
    // The defaults are lab up's single-machine ports.
    let c = Config::try_parse_from(["dashboard"]).unwrap();
    assert_eq!(
        (c.port, c.system1_ws.as_str(), c.system2_ws.as_str()),
        (8080, "ws://127.0.0.1:4002/", "ws://127.0.0.1:4100/")
    );
    assert_eq!(c.system1_ops.as_str(), "http://127.0.0.1:4003/");
}
