//! The agents' own figures, when `lab up` started this dashboard: the instrument's view, shown beside
//! the page's own.
//!
//! `lab up` already reads each agents process's `--live-json` line every second (its terminal view
//! shows them). It writes each one to this process's stdin as `{"system":"system1","second":{…}}`;
//! [`AgentFigures`] keeps the latest line per system and `GET /api/agents` hands them to the page,
//! which polls it once a second. Stdin is also how a `lab child` learns that the supervisor is gone:
//! when it closes, the dashboard stops.
//!
//! Bounds: two systems, one line each (the latest wins: a page shows the present, not a backlog);
//! a line over [`MAX_LINE_BYTES`] or naming another system is refused with a warning and counted.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// The systems whose agents' figures are kept.
pub const SYSTEMS: [&str; 2] = ["system1", "system2"];

/// The longest line read from stdin, in bytes. A `--live-json` line is about 500 bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The latest figures per system, and how many lines were refused.
#[derive(Debug, Default)]
pub struct AgentFigures {
    /// Whether a supervisor feeds us at all (otherwise the page says "no agents' figures").
    pub fed: std::sync::atomic::AtomicBool,
    latest: Mutex<[Option<(Value, Instant)>; 2]>,
    refused: std::sync::atomic::AtomicU64,
}

impl AgentFigures {
    /// Takes one line; an error says why it was refused.
    pub fn take_line(&self, line: &str) -> Result<(), String> {
        let mut value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let system = value.get("system").and_then(Value::as_str).unwrap_or_default();
        let Some(index) = SYSTEMS.iter().position(|s| *s == system) else {
            return Err(format!("unknown system {system:?} (expected system1 or system2)"));
        };
        let second = value
            .get_mut("second")
            .filter(|s| s.is_object())
            .map(Value::take)
            .ok_or("no \"second\" object")?;
        self.latest
            .lock()
            .expect("never poisoned: no panics under the lock")[index] = Some((second, Instant::now()));
        Ok(())
    }

    /// The document of `GET /api/agents`.
    pub fn document(&self) -> Value {
        let latest = self.latest.lock().expect("never poisoned");
        let mut systems = serde_json::Map::new();
        for (name, entry) in SYSTEMS.iter().zip(latest.iter()) {
            if let Some((second, at)) = entry {
                systems.insert(
                    name.to_string(),
                    json!({"ageMs": at.elapsed().as_secs_f64() * 1e3, "second": second}),
                );
            }
        }
        json!({
            "fed": self.fed.load(std::sync::atomic::Ordering::Relaxed),
            "refusedLines": self.refused.load(std::sync::atomic::Ordering::Relaxed),
            "systems": systems,
        })
    }

    /// Reads lines from `input` until it closes (then returns).
    pub async fn read_from(&self, input: impl AsyncRead + Unpin) {
        self.fed.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            // `take` bounds what one line may hold; the rest of an over-long line is skipped.
            let read = (&mut reader)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .await;
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let result = if line.len() > MAX_LINE_BYTES && !line.ends_with(b"\n") {
                skip_rest_of_line(&mut reader).await;
                Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
            } else {
                self.take_line(String::from_utf8_lossy(&line).trim())
            };
            if let Err(why) = result {
                self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%why, "refused a line of agents' figures on stdin");
            }
        }
    }
}

async fn skip_rest_of_line(reader: &mut (impl AsyncBufReadExt + Unpin)) {
    let mut sink = Vec::new();
    loop {
        sink.clear();
        match (&mut *reader)
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut sink)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) if sink.ends_with(b"\n") => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_line_per_system() {
        let figures = AgentFigures::default();
        figures
            .take_line(r#"{"system":"system2","second":{"t":1}}"#)
            .unwrap();
        figures
            .take_line(r#"{"system":"system2","second":{"t":2}}"#)
            .unwrap();
        let doc = figures.document();
        assert_eq!(doc["systems"]["system2"]["second"]["t"], 2);
        assert!(doc["systems"].get("system1").is_none());
    }

    #[test]
    fn refuses_lines_it_cannot_place() {
        let figures = AgentFigures::default();
        assert!(figures.take_line("nope").unwrap_err().contains("not JSON"));
        assert!(
            figures
                .take_line(r#"{"system":"system3","second":{}}"#)
                .unwrap_err()
                .contains("system3")
        );
        assert!(
            figures
                .take_line(r#"{"system":"system1"}"#)
                .unwrap_err()
                .contains("second")
        );
    }

    #[tokio::test]
    async fn reads_lines_until_the_input_closes_and_counts_refusals() {
        let figures = AgentFigures::default();
        let long = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 10));
        let input = format!("{{\"system\":\"system1\",\"second\":{{\"t\":7}}}}\n{long}garbage\n");
        figures.read_from(input.as_bytes()).await;
        let doc = figures.document();
        assert_eq!(doc["fed"], true);
        assert_eq!(doc["systems"]["system1"]["second"]["t"], 7);
        assert_eq!(doc["refusedLines"], 2);
    }
}
