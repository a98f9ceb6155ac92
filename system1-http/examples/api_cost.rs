//! Serves the real ingest API (against a private redis-server) and sends it N single-metric POSTs over
//! HTTP/1.1 keep-alive, for counting the API's instructions per request with callgrind:
//!
//! ```sh
//! cargo build --release -p system1-http --example api_cost
//! valgrind --tool=callgrind --separate-threads=yes target/release/examples/api_cost 2000
//! valgrind --tool=callgrind --separate-threads=yes target/release/examples/api_cost 12000
//! ```
//!
//! The API runs on the main thread (a current-thread tokio runtime: hyper, axum, the handler, redis-rs);
//! the client runs on a second thread, so `--separate-threads=yes` writes its instructions to another
//! file (`callgrind.out.<pid>-02`) and the main thread's file (`-01`) holds the server side only. The
//! difference of the two main-thread totals / 10 000 = the API's instructions per request: start-up and
//! connecting cancel out. Redis's work is another process: its CPU per request is printed, from
//! `INFO cpu`, so that a change that only moves work into Redis shows, and Redis's own time per call of
//! the script and of each command inside it (`INFO commandstats`).
//!
//! The client is deliberately minimal (blocking socket, one request at a time, a byte search for the
//! end of each response): what the agents send, `{"serverId":…,"timestamp":…,"metrics":{…},"seq":…}`,
//! cycling over 20 servers. Every answer must be `202`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use clap::Parser;
use lab_testkit::RedisServer;
use system1_http::api::IngestApi;
use system1_http::config::{Cli, Role};

fn main() -> anyhow::Result<()> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number of requests"))
        .unwrap_or(10_000);
    let redis = RedisServer::start()?;
    let url = redis.url();
    let cli = Cli::try_parse_from([
        "system1",
        "--redis-url",
        &url,
        // One partition: the stream is the one key counted below (the cost per request is the same).
        "--partitions",
        "1",
        "api",
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--http2-port",
        "0",
    ])?;
    let Role::Api(args) = &cli.role else {
        unreachable!("parsed as the API")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let api = runtime.block_on(IngestApi::bind(args, &cli.redis))?;
    let address = api.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let redis_cpu_before = redis_cpu_seconds(&redis)?;
    let started = std::time::Instant::now();
    let client = std::thread::spawn(move || {
        let result = send(address, requests);
        let _ = stop.send(());
        result
    });
    runtime.block_on(api.run(async {
        let _ = stopped.await;
    }))?;
    client.join().expect("the client thread")?;
    let elapsed = started.elapsed().as_secs_f64();
    let redis_cpu = redis_cpu_seconds(&redis)? - redis_cpu_before;
    let length: usize = redis::cmd("XLEN")
        .arg(&cli.redis.stream_key)
        .query(&mut redis.connection())?;
    assert_eq!(length, requests, "every metric is in the stream");
    println!(
        "{requests} requests in {elapsed:.2} s ({:.0}/s, one connection, one at a time); redis-server CPU {:.1} µs per request",
        requests as f64 / elapsed,
        redis_cpu * 1e6 / requests as f64
    );
    // Redis's time per call of the script and of the commands inside it (`INFO commandstats`): what each
    // costs Redis, which shares the machine's cores with the API.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())?;
    for line in stats.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if let Some(command) = ["evalsha", "eval", "xadd", "publish", "xlen"]
            .iter()
            .find(|c| name == format!("cmdstat_{c}"))
        {
            let usec = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("usec_per_call="))
                .unwrap_or("?");
            println!("  redis {command}: {usec} µs per call");
        }
    }
    Ok(())
}

/// Sends `requests` POSTs on one keep-alive connection, one at a time, and checks each answer is 202.
fn send(address: SocketAddr, requests: usize) -> anyhow::Result<()> {
    let mut socket = TcpStream::connect(address)?;
    socket.set_nodelay(true)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let t0 = now.as_secs_f64() * 1000.0;
    let mut request = Vec::with_capacity(512);
    let mut answer = vec![0_u8; 4096];
    for i in 0..requests {
        let body = format!(
            r#"{{"serverId":"server-{}","timestamp":{:.3},"metrics":{{"cpu":{},"memory":40.5,"disk":30.25,"network":{{"in":{},"out":200}}}},"seq":{}}}"#,
            i % 20,
            t0 + i as f64 * 0.01,
            i % 100,
            i % 1000,
            i / 20
        );
        request.clear();
        write!(
            request,
            "POST /metrics HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        socket.write_all(&request)?;
        // The API's 202 body is small: read until the headers' end and the whole body are in.
        let mut filled = 0;
        loop {
            let n = socket.read(&mut answer[filled..])?;
            anyhow::ensure!(n > 0, "the API closed the connection");
            filled += n;
            if let Some(end) = complete(&answer[..filled]) {
                anyhow::ensure!(
                    answer.starts_with(b"HTTP/1.1 202"),
                    "not a 202: {}",
                    String::from_utf8_lossy(&answer[..end])
                );
                break;
            }
        }
    }
    Ok(())
}

/// The length of the response in `bytes` once it is complete (headers and `content-length` bytes).
fn complete(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

/// `used_cpu_sys` + `used_cpu_user` from `INFO cpu`.
fn redis_cpu_seconds(redis: &RedisServer) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(&mut redis.connection())?;
    Ok(info
        .lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_sys:")
                .or(l.strip_prefix("used_cpu_user:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum())
}
