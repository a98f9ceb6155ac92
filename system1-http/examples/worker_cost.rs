//! Runs one System 1 worker over a stream filled in advance, for counting the worker's instructions per
//! entry with callgrind (read, parse, aggregate, write, announce, ack):
//!
//! ```sh
//! cargo build --release -p system1-http --example worker_cost
//! valgrind --tool=callgrind target/release/examples/worker_cost 2000
//! valgrind --tool=callgrind target/release/examples/worker_cost 12000
//! ```
//!
//! The difference of the two totals / 10 000 = the worker's instructions per entry: the fixed costs
//! (start-up, connecting) cancel out. The stream is filled by a Lua script inside a private
//! `redis-server` (a separate process, not counted by callgrind), so only the worker's own work is
//! counted. 20 servers, metrics 0.1 ms apart (10 000/s), default worker settings (batches of 200).

use clap::Parser;
use lab_testkit::RedisServer;
use system1_http::config::{Cli, Role};
use system1_http::worker::{Outcome, Worker};

/// Appends ARGV[1] metrics of ARGV[2] servers, as the API's script writes them.
const FILL: &str = r#"
local n, servers, t0 = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, n - 1 do
  local server = i % servers
  local metrics = string.format('{"cpu":%d,"memory":40.5,"disk":30.25,"network":{"in":%d,"out":200}}',
    i % 100, i % 1000)
  redis.call('XADD', KEYS[1], '*', 'serverId', 'server-' .. server,
    'timestamp', string.format('%.1f', t0 + i * 0.1), 'metrics', metrics,
    'seq', tostring(math.floor(i / servers)))
end
return n
"#;

fn main() -> anyhow::Result<()> {
    let entries: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number of entries"))
        .unwrap_or(10_000);
    let redis = RedisServer::start()?;
    let url = redis.url();
    // One partition, which the one worker owns: the filled stream is that partition (the work per
    // entry is the same with any number).
    let cli = Cli::try_parse_from([
        "system1",
        "--redis-url",
        &url,
        "--partitions",
        "1",
        "worker",
        "--block-ms",
        "100",
    ])?;
    let Role::Worker(args) = cli.role else {
        unreachable!("parsed as a worker")
    };
    let t0 = 1_763_800_000_000.0_f64;
    let _: usize = redis::cmd("EVAL")
        .arg(FILL)
        .arg(1)
        .arg(&cli.redis.stream_key)
        .arg(entries)
        .arg(20)
        .arg(format!("{t0:.1}"))
        .query(&mut redis.connection())?;
    let redis_cpu_before = redis_cpu_seconds(&redis)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = std::time::Instant::now();
    let processed = runtime.block_on(async {
        let mut worker = Worker::connect(&args, &cli.redis, "cost-1".into()).await?;
        // The group reads from the start ("0"): it sees every entry filled above.
        worker.ensure_group().await?;
        let mut processed = 0;
        while let Outcome::Processed { entries, .. } = worker.process_batch().await? {
            processed += entries;
        }
        anyhow::Ok(processed)
    })?;
    assert_eq!(processed, entries, "every entry processed once");
    // Redis's own work is not counted by callgrind: its CPU time says whether a change only moved it.
    let redis_cpu = redis_cpu_seconds(&redis)? - redis_cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "processed {processed} entries in {elapsed:.2} s ({:.0}/s, one worker); redis-server CPU {:.1} µs per entry",
        processed as f64 / elapsed,
        redis_cpu * 1e6 / processed as f64
    );
    Ok(())
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
