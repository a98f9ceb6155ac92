//! The `system1` command line: what its `main` does, callable from `lab up` too.

use crate::api::IngestApi;
use crate::broadcaster::Broadcaster;
use crate::config::{ApiArgs, BroadcasterArgs, Cli, RedisArgs, Role, WorkerArgs};
use crate::worker::{Worker, consumer_names};
use clap::Parser;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Runs `system1` with these command-line arguments (the first is the program name), as its
/// binary does; `lab up` runs it this way in a child process of its own.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<()> {
    let cli = Cli::parse_from(args);
    let runtime = match cli.runtime {
        crate::config::Runtime::MultiThread => tokio::runtime::Runtime::new()?,
        crate::config::Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
        _ = crate::shutdown_signal() => {}
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
    if args.tls() {
        tracing::info!(addresses = ?api.local_addrs(), "System 1 API listening over TLS (h2 and http/1.1 by ALPN on both ports)");
    } else {
        tracing::info!(addresses = ?api.local_addrs(), "System 1 API listening (HTTP/1.1 and cleartext HTTP/2 on both ports)");
    }
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
    let stats = std::sync::Arc::new(crate::worker::WorkerStats::default());
    let ops_stop = stop.clone();
    let shutdown = async move { ops_stop.cancelled().await };
    let (address, ops) = crate::worker_ops::serve(args, redis, stats.clone(), shutdown).await?;
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
