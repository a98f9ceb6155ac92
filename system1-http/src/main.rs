//! `system1`: see the crate docs. Run with `cargo run -p system1-http --bin system1 -- --help`.

use clap::Parser;
use system1_http::api::IngestApi;
use system1_http::config::{Cli, Role};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.print_config {
        println!("{cli:#?}");
        return Ok(());
    }
    lab_core::logging::init("system1", &cli.log, lab_core::logging::LogTarget::Stdout)?;
    match &cli.role {
        Role::Api(api) => {
            let server = IngestApi::bind(api, &cli.redis).await?;
            tracing::info!(addresses = ?server.local_addrs(), redis = %cli.redis.redis_host, "System 1 API listening (HTTP/1.1 and HTTP/2 on both ports)");
            server.run(system1_http::shutdown_signal()).await
        }
        Role::Worker(args) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let mut workers = tokio::task::JoinSet::new();
            for name in system1_http::worker::consumer_names(args) {
                let worker = system1_http::worker::Worker::connect(args, &cli.redis, name.clone()).await?;
                tracing::info!(worker = %name, group = %args.group, "worker started");
                workers.spawn(worker.run(stop.clone()));
            }
            system1_http::shutdown_signal().await;
            // Each worker finishes and acks the batch it is in, then stops.
            stop.cancel();
            while workers.join_next().await.is_some() {}
            Ok(())
        }
        Role::Broadcaster(_) | Role::All { .. } => anyhow::bail!(
            "the System 1 broadcaster is not built yet (issue #4); `system1 api` and `system1 worker` are"
        ),
    }
}
