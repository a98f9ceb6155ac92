//! Logging: pino/bunyan-compatible JSON lines by default, levels from flags and env vars.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lab_core::logging::{LogArgs, LogFormat, LoggingError, filter_for, subscriber};

/// A log sink the test can read back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture(args: &LogArgs, is_terminal: bool, log: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let sub = subscriber("system2", args, move || sink.clone(), is_terminal).unwrap();
    tracing::subscriber::with_default(sub, log);
    String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
}

fn args(level: Option<&str>, format: LogFormat) -> LogArgs {
    LogArgs {
        log_level: level.map(str::to_owned),
        log_format: format,
    }
}

#[test]
fn json_lines_have_pinos_fields_and_levels() {
    let out = capture(&args(Some("info"), LogFormat::Json), false, || {
        tracing::info!(server_id = "server-1", "metric accepted");
        tracing::warn!("slow dashboard");
        tracing::debug!("filtered out at info");
    });
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["name"], "system2");
    assert_eq!(lines[0]["msg"], "metric accepted");
    assert_eq!(lines[0]["level"], 30, "pino/bunyan: info is 30");
    assert_eq!(lines[0]["server_id"], "server-1");
    assert!(lines[0]["time"].is_string() && lines[0]["pid"].is_number() && lines[0]["hostname"].is_string());
    assert_eq!(lines[1]["level"], 40, "pino/bunyan: warn is 40");
}

#[test]
fn auto_format_is_human_on_a_terminal_and_json_elsewhere() {
    let human = capture(&args(Some("info"), LogFormat::Auto), true, || {
        tracing::info!("hello")
    });
    assert!(
        human.contains("hello") && serde_json::from_str::<serde_json::Value>(human.trim()).is_err(),
        "{human}"
    );
    let json = capture(&args(Some("info"), LogFormat::Auto), false, || {
        tracing::info!("hello")
    });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json.trim()).unwrap()["msg"],
        "hello"
    );
}

#[test]
fn pino_level_names_are_understood() {
    let fatal = capture(&args(Some("fatal"), LogFormat::Json), false, || {
        tracing::warn!("hidden");
        tracing::error!("shown");
    });
    assert_eq!(fatal.lines().count(), 1, "{fatal}");
    let silent = capture(&args(Some("silent"), LogFormat::Json), false, || {
        tracing::error!("hidden")
    });
    assert_eq!(silent, "");
    let debug = capture(&args(Some("debug"), LogFormat::Json), false, || {
        tracing::debug!("shown")
    });
    assert_eq!(debug.lines().count(), 1);
}

#[test]
fn a_bad_level_is_a_clear_error() {
    let err = filter_for(Some("loud,,=")).unwrap_err();
    assert!(matches!(err, LoggingError::BadLevel { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("loud") && msg.contains("use error, warn, info, debug, trace"),
        "{msg}"
    );
    let bare = filter_for(Some("loud")).unwrap_err().to_string();
    assert!(bare.contains("not a level name"), "{bare}");
    assert!(filter_for(Some("INFO")).is_ok());
    assert!(filter_for(Some("info,lab_core=debug")).is_ok());
}
