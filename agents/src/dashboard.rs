//! The built-in dashboard: subscribes like a real one and measures end-to-end latency and delivery.
//!
//! It works with both systems' dashboard endpoints: it sends System 2's `register` and System 1's
//! `subscribe` (each system answers the other's message with a harmless error), and reads System 2's
//! `metric.update` / `metric.updates` and System 1's `metric.processed` (the metric's way through the
//! stream, the workers and pub/sub: System 1's end to end). Only this run's agents count: other
//! updates on the same endpoint are ignored.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::recorder::Recorder;

/// How long the server may take to confirm a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<Payload>,
    #[serde(default)]
    items: Option<Vec<Payload>>,
    /// A `gap` frame's count of missing events (`null`: unknown).
    #[serde(default)]
    events: Option<u64>,
    /// A `gap` frame's kind of missing events: `metric.ingested` gaps do not concern what is counted.
    #[serde(default, rename = "eventType")]
    event_type: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "serverId")]
    server_id: String,
    timestamp: f64,
    #[serde(default)]
    seq: Option<u64>,
    /// The seq range a coalesced update stands for (protocol.md: "Coalescing is never silent").
    #[serde(rename = "firstSeq", default)]
    first_seq: Option<u64>,
    #[serde(rename = "lastSeq", default)]
    last_seq: Option<u64>,
}

/// Which of this run's agents a server id belongs to (1-based), if any.
pub fn agent_index(server_id: &str, prefix: &str, agents: u64) -> Option<usize> {
    let n: u64 = server_id.strip_prefix(prefix)?.parse().ok()?;
    (1..=agents).contains(&n).then_some(n as usize)
}

/// Subscribes to `url` and records every delivered metric until `stop`; `ready` fires once the first
/// subscription is in place (so that no early update is missed).
pub async fn subscribe(
    url: String,
    prefix: String,
    agents: u64,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = tokio::select! {
            r = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true) => r,
            _ = stop.cancelled() => return,
        };
        let mut ws = match connected {
            Ok((ws, _)) => ws,
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(format!(
                        "cannot connect to the dashboard endpoint {url}: {e}"
                    )));
                    return;
                }
                recorder.error("dashboard: reconnect", 1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Both systems are asked for batched updates: as many payloads per frame as are ready, each
        // with its own timestamp, so every latency stays exact while the instrument parses fewer
        // frames (the servers never wait to fill a batch), and both are measured the same way.
        let register = r#"{"type":"register","role":"dashboard","serverId":null,"batchUpdates":true}"#;
        // System 1's broadcaster is asked the same: the processed updates only, batched (System 2
        // answers this message with an error it goes on after; the agents ignore it).
        let subscribe = r#"{"type":"subscribe","serverId":null,"batchUpdates":true}"#;
        if ws.send(Message::Text(register.into())).await.is_err()
            || ws.send(Message::Text(subscribe.into())).await.is_err()
        {
            continue;
        }
        // The run starts sending once the server has confirmed the subscription (`register.ack` or
        // `subscription.ack`), so no early update is missed; a fixed pause would be a guess.
        let subscribed_by = tokio::time::Instant::now() + SUBSCRIBE_TIMEOUT;
        let mut subscribed = false;
        loop {
            let message = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep_until(subscribed_by), if !subscribed => {
                    let reason = format!("the dashboard endpoint {url} did not confirm the subscription within {SUBSCRIBE_TIMEOUT:?}");
                    match ready.take() {
                        Some(ready) => {
                            let _ = ready.send(Err(reason));
                            return;
                        }
                        None => {
                            recorder.error("dashboard: no subscription ack", 1);
                            break;
                        }
                    }
                }
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return;
                }
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                        // Counted, not skipped in silence: an update the instrument cannot read
                        // would otherwise show up as a lost metric with no explanation.
                        recorder.error("dashboard: unreadable frame", 1);
                        continue;
                    };
                    let payloads: Vec<Payload> = match frame.kind.as_str() {
                        "metric.update" | "metric.processed" => frame.payload.into_iter().collect(),
                        "metric.updates" => frame.items.unwrap_or_default(),
                        "register.ack" | "subscription.ack" => {
                            subscribed = true;
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(Ok(()));
                            }
                            continue;
                        }
                        // System 1's broadcaster could not deliver some events, and says so.
                        "gap" => {
                            if is_counted_gap(frame.event_type.as_deref()) {
                                recorder.gap(frame.events);
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    for p in payloads {
                        if let Some(index) = agent_index(&p.server_id, &prefix, agents) {
                            let covers = p.first_seq.zip(p.last_seq);
                            recorder.delivered(index, p.seq, p.timestamp, covers);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    recorder.error("dashboard: disconnected", 1);
                    break;
                }
            }
        }
    }
}

/// Whether a gap frame's missing events are ones this dashboard counts (`metric.processed`, or every
/// kind: `"*"`); a gap of `metric.ingested` notices only is not.
fn is_counted_gap(event_type: Option<&str>) -> bool {
    event_type != Some("metric.ingested")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_frames_are_read_and_only_those_of_counted_events_count() {
        let frame: Frame = serde_json::from_str(
            r#"{"type":"gap","eventType":"metric.processed","events":12,"fromMs":1,"toMs":2,"reason":"trimmed"}"#,
        )
        .unwrap();
        assert_eq!((frame.kind.as_str(), frame.events), ("gap", Some(12)));
        assert!(is_counted_gap(frame.event_type.as_deref()));
        let unknown: Frame =
            serde_json::from_str(r#"{"type":"gap","eventType":"*","events":null,"fromMs":1,"toMs":2}"#)
                .unwrap();
        assert_eq!(unknown.events, None);
        assert!(is_counted_gap(unknown.event_type.as_deref()));
        assert!(!is_counted_gap(Some("metric.ingested")));
        let recorder = Recorder::new(crate::pacing::Clock::new(), 0.0);
        recorder.gap(Some(12));
        recorder.gap(None);
        let gaps = recorder.gaps();
        assert_eq!((gaps.frames, gaps.events, gaps.uncounted), (2, 12, 1));
    }

    #[test]
    fn only_this_runs_agents_count() {
        assert_eq!(agent_index("server-3", "server-", 5), Some(3));
        assert_eq!(agent_index("server-6", "server-", 5), None);
        assert_eq!(agent_index("server-0", "server-", 5), None);
        assert_eq!(agent_index("other-3", "server-", 5), None);
        assert_eq!(agent_index("server-3x", "server-", 5), None);
    }
}
