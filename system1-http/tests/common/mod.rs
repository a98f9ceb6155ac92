//! Set-up shared by System 1's in-process tests: a role's command line against a private Redis, and
//! the consumer group as a test sees it. (Each test file uses a part of it, hence `dead_code`.)
#![allow(dead_code)]

use clap::Parser;
use lab_testkit::RedisServer;
use redis::Commands;
use system1_http::api::IngestApi;
use system1_http::config::{Cli, Role};
use tokio::sync::oneshot;

/// The default stream and group.
pub const STREAM: &str = "metrics:stream";
/// The default consumer group.
pub const GROUP: &str = "metrics-workers";

/// `system1 --redis-url <redis> <args…>`, parsed.
pub fn cli(redis: &RedisServer, args: &[&str]) -> Cli {
    let url = redis.url();
    let mut all = vec!["system1", "--redis-url", &url];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap()
}

/// `system1 … api` on 127.0.0.1, both ports free, plus `extra`.
pub fn api_cli(redis: &RedisServer, extra: &[&str]) -> Cli {
    let mut args = vec![
        "api",
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--http2-port",
        "0",
    ];
    args.extend_from_slice(extra);
    cli(redis, &args)
}

/// A consumer reads `count` new entries and never acks them: they stay pending with it, as with a
/// consumer that died mid-batch.
pub fn read_without_ack(redis: &RedisServer, consumer: &str, count: usize) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, consumer, "COUNT"])
        .arg(count)
        .arg(&["STREAMS", STREAM, ">"])
        .query(&mut redis.connection())
        .unwrap();
}

/// Entries pending in the group.
pub fn pending(redis: &RedisServer) -> usize {
    let reply: redis::streams::StreamPendingReply = redis.connection().xpending(STREAM, GROUP).unwrap();
    reply.count()
}

/// An API running in this process on free ports; stops when dropped.
pub struct Api {
    /// `http://…` of its HTTP/1.1 port, then its HTTP/2 port.
    pub urls: Vec<String>,
    _stop: oneshot::Sender<()>,
}

/// Starts `system1 api` (plus `extra`) against `redis`, in this process.
pub async fn start_api(redis: &RedisServer, extra: &[&str]) -> Api {
    let cli = api_cli(redis, extra);
    let Role::Api(api) = &cli.role else { unreachable!() };
    let server = IngestApi::bind(api, &cli.redis).await.unwrap();
    let urls = server
        .local_addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Api { urls, _stop: stop }
}
