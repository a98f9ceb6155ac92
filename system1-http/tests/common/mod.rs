//! Set-up shared by System 1's in-process tests: a role's command line against a private Redis, and
//! the consumer group as a test sees it. (Each test file uses a part of it, hence `dead_code`.)
#![allow(dead_code)]

use clap::Parser;
use lab_testkit::RedisServer;
use redis::Commands;
use system1_http::api::IngestApi;
use system1_http::config::{Cli, Role};
use tokio::sync::oneshot;

/// The default stream (cut into [`PARTITIONS`] partitions) and group.
pub const STREAM: &str = "metrics:stream";
/// The default number of partitions.
pub const PARTITIONS: u16 = system1_http::store::DEFAULT_PARTITIONS;

/// The default partitions of the default stream.
pub fn partitions() -> system1_http::store::Partitions {
    system1_http::store::Partitions::new(STREAM, PARTITIONS)
}

/// The stream (partition) a server's metrics go to, by default.
pub fn stream_of(server: &str) -> String {
    let p = partitions();
    p.stream(p.of(server))
}

/// Every entry of every partition, in the order of their ids (the order they were appended in).
pub fn entries(redis: &RedisServer) -> redis::streams::StreamRangeReply {
    let mut all = redis::streams::StreamRangeReply::default();
    for stream in partitions().streams() {
        let reply: redis::streams::StreamRangeReply = redis.connection().xrange_all(&stream).unwrap();
        all.ids.extend(reply.ids);
    }
    all.ids.sort_by_key(|e| {
        let (ms, seq) = e.id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    });
    all
}

/// Entries in all the partitions together.
pub fn stream_len(redis: &RedisServer) -> usize {
    partitions()
        .streams()
        .iter()
        .map(|s| redis.connection().xlen::<_, usize>(s).unwrap_or(0))
        .sum()
}
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

/// A consumer reads `count` new entries of `stream` and never acks them: they stay pending with it, as
/// with a consumer that died mid-batch.
pub fn read_without_ack_from(redis: &RedisServer, stream: &str, consumer: &str, count: usize) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", GROUP, consumer, "COUNT"])
        .arg(count)
        .arg(&["STREAMS", stream, ">"])
        .query(&mut redis.connection())
        .unwrap();
}

/// [`read_without_ack_from`] the single stream of `--partitions 1`.
pub fn read_without_ack(redis: &RedisServer, consumer: &str, count: usize) {
    read_without_ack_from(redis, STREAM, consumer, count)
}

/// Entries pending in the group, in every partition (and in the single stream of `--partitions 1`).
pub fn pending(redis: &RedisServer) -> usize {
    let mut streams = partitions().streams();
    streams.push(STREAM.to_owned());
    streams
        .iter()
        .map(|s| {
            let reply: redis::RedisResult<redis::streams::StreamPendingReply> =
                redis.connection().xpending(s, GROUP);
            reply.map(|r| r.count()).unwrap_or(0)
        })
        .sum()
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
