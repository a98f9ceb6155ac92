//! Logging set-up shared by every binary of the lab.
//!
//! By default each log line is one JSON object in the bunyan format, which is also pino's (the
//! original lab's logger): `{"v":0,"name":"system2","msg":"...","level":30,"time":"...",...}`, so the
//! same `pino-pretty`, `bunyan` or `jq` pipelines read both. On a terminal the default is a human
//! format instead. The level comes from `--log-level`, else `LOG_LEVEL` (the original's variable;
//! clap reads it for the flag), else `RUST_LOG`, else `info`.
//!
//! Logs go to **stderr** for command-line tools whose stdout carries results (agents, the lab
//! supervisor) and to **stdout** for services (pino's habit); the caller says which.

use std::io::{self, IsTerminal};

use clap::{Args, ValueEnum};
use thiserror::Error;
use tracing::Subscriber;
use tracing_bunyan_formatter::{BunyanFormattingLayer, JsonStorageLayer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    /// One bunyan/pino JSON object per line.
    Json,
    /// Human-readable lines.
    Human,
}

/// The logging flags every binary flattens into its own (`#[command(flatten)]`).
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace (pino's fatal and silent work too), or a tracing
    /// filter such as `info,system2_ws=debug`. Without it, RUST_LOG is used, else `info`.
    #[arg(long, env = "LOG_LEVEL", value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,

    /// Log format. `auto` is human-readable on a terminal and JSON (pino/bunyan lines) otherwise.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
}

impl Default for LogArgs {
    fn default() -> Self {
        LogArgs {
            log_level: None,
            log_format: LogFormat::Auto,
        }
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard output: services.
    Stdout,
    /// Standard error: command-line tools whose stdout is their result.
    Stderr,
}

/// Logging could not be set up.
#[derive(Debug, Error)]
pub enum LoggingError {
    /// The level or filter does not parse.
    #[error(
        "invalid log level {level:?}: {reason} (use error, warn, info, debug, trace or a filter like `info,agents=debug`)"
    )]
    BadLevel {
        /// What was given.
        level: String,
        /// The filter parser's complaint.
        reason: String,
    },
    /// A global logger was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Translates pino's level names to tracing's and builds the filter.
pub fn filter_for(level: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let directive = match level.map(str::trim) {
        Some("fatal") => "error".to_owned(),
        Some("silent") => "off".to_owned(),
        Some(level) => level.to_owned(),
        None => match std::env::var("RUST_LOG") {
            Ok(filter) if !filter.trim().is_empty() => filter,
            _ => "info".to_owned(),
        },
    };
    // A bare word must be a level: tracing would read `--log-level loud` as "everything from a module
    // named loud", which is never what a person meant.
    let is_bare_word = !directive.contains(['=', ',', ':', '[']);
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    if is_bare_word && !levels.contains(&directive.trim().to_ascii_lowercase().as_str()) {
        return Err(LoggingError::BadLevel {
            level: directive,
            reason: "not a level name".into(),
        });
    }
    EnvFilter::builder()
        .parse(&directive)
        .map_err(|e| LoggingError::BadLevel {
            level: directive.clone(),
            reason: e.to_string(),
        })
}

/// Builds the subscriber for `service` writing to `writer`, without installing it. Tests use this
/// with a buffer; binaries use [`init`].
pub fn subscriber<W>(
    service: &str,
    args: &LogArgs,
    writer: W,
    is_terminal: bool,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = filter_for(args.log_level.as_deref())?;
    let human = match args.log_format {
        LogFormat::Auto => is_terminal,
        LogFormat::Json => false,
        LogFormat::Human => true,
    };
    Ok(if human {
        Box::new(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(is_terminal)
                .with_target(false)
                .finish(),
        )
    } else {
        Box::new(
            Registry::default()
                .with(filter)
                .with(JsonStorageLayer)
                .with(BunyanFormattingLayer::new(service.to_owned(), writer)),
        )
    })
}

/// Installs the lab's logging for `service` as the process-wide default.
pub fn init(service: &str, args: &LogArgs, target: LogTarget) -> Result<(), LoggingError> {
    let subscriber = match target {
        LogTarget::Stdout => subscriber(service, args, io::stdout, io::stdout().is_terminal())?,
        LogTarget::Stderr => subscriber(service, args, io::stderr, io::stderr().is_terminal())?,
    };
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadySet)
}
