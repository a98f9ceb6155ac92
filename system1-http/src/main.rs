//! `system1`: see the crate docs. Run with `cargo run -p system1-http --bin system1 -- --help`.

use clap::Parser;
use system1_http::api::IngestApi;
use system1_http::broadcaster::Broadcaster;
use system1_http::config::{ApiArgs, BroadcasterArgs, Cli, RedisArgs, Role, WorkerArgs};
use system1_http::worker::{Worker, consumer_names};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_config {
        println!("{cli:#?}");
        return Ok(());
    }
    lab_core::logging::init("system1", &cli.log, lab_core::logging::LogTarget::Stdout)?;
    let stop = CancellationToken::new();
    let mut roles = JoinSet::new();
    match &cli.role {
        Role::Api(api) => start_api(&mut roles, api, &cli.redis, &stop).await?,
        Role::Worker(workers) => start_workers(&mut roles, workers, &cli.redis, &stop).await?,
        Role::Broadcaster(b) => start_broadcaster(&mut roles, b, &cli.redis, &stop).await?,
        Role::All {
            api,
            worker,
            broadcaster,
        } => {
            start_broadcaster(&mut roles, broadcaster, &cli.redis, &stop).await?;
            start_workers(&mut roles, worker, &cli.redis, &stop).await?;
            start_api(&mut roles, api, &cli.redis, &stop).await?;
        }
    }
    tokio::select! {
        _ = system1_http::shutdown_signal() => {}
        Some(ended) = roles.join_next() => {
            // A role ended by itself: stop the others and report why.
            stop.cancel();
            ended??;
        }
    }
    stop.cancel();
    while let Some(ended) = roles.join_next().await {
        ended??;
    }
    tracing::info!("System 1 stopped");
    Ok(())
}

async fn start_api(
    roles: &mut JoinSet<anyhow::Result<()>>,
    args: &ApiArgs,
    redis: &RedisArgs,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let api = IngestApi::bind(args, redis).await?;
    tracing::info!(addresses = ?api.local_addrs(), "System 1 API listening (HTTP/1.1 and HTTP/2 on both ports)");
    let stop = stop.clone();
    roles.spawn(api.run(async move { stop.cancelled().await }));
    Ok(())
}

async fn start_workers(
    roles: &mut JoinSet<anyhow::Result<()>>,
    args: &WorkerArgs,
    redis: &RedisArgs,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // Counters shared by this process's workers, shown on their ops port.
    let stats = std::sync::Arc::new(system1_http::worker::WorkerStats::default());
    let ops_stop = stop.clone();
    let shutdown = async move { ops_stop.cancelled().await };
    let (address, ops) = system1_http::worker_ops::serve(args, redis, stats.clone(), shutdown).await?;
    tracing::info!(%address, "workers' ops endpoints listening");
    roles.spawn(async move { ops.await? });
    for name in consumer_names(args) {
        let worker = Worker::connect(args, redis, name.clone())
            .await?
            .with_stats(stats.clone());
        tracing::info!(worker = %name, group = %args.group, "worker started");
        let stop = stop.clone();
        // Each worker finishes and acks the batch it is in, then stops.
        roles.spawn(async move {
            worker.run(stop).await;
            Ok(())
        });
    }
    Ok(())
}

async fn start_broadcaster(
    roles: &mut JoinSet<anyhow::Result<()>>,
    args: &BroadcasterArgs,
    redis: &RedisArgs,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let broadcaster = Broadcaster::bind(args, redis).await?;
    tracing::info!(address = %broadcaster.local_addr(), "System 1 broadcaster listening for dashboards");
    let stop = stop.clone();
    roles.spawn(broadcaster.run(async move { stop.cancelled().await }));
    Ok(())
}
