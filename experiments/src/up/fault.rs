//! Faults that `lab up --fault` injects in the middle of a run, so that the lab shows what each
//! system loses, and how long it takes to recover, when a part of it fails.
//!
//! A fault is written `KIND@AT` or `KIND@AT:DOWN`: `AT` counts from the moment the agents start
//! sending (the same clock as their per-second timeline, warm-up included), `DOWN` is how long the
//! part stays down before the supervisor starts it again.
//!
//! | kind | what the supervisor does | default `DOWN` |
//! | --- | --- | --- |
//! | `kill-worker` | `kill -9` one System 1 worker process (System 1 then runs as separate processes) | not restarted |
//! | `restart-redis` | `kill -9` the private Redis, start it again on the same files | 2 s |
//! | `restart-system2` | `kill -9` System 2, start it again | 2 s |
//! | `stall-dashboard` | open one dashboard connection to each system that subscribes and then never reads | until the end |
//!
//! `kill -9` rather than a graceful stop, because a crash is what durability is about: nothing gets
//! the chance to flush or say goodbye. What happened is recorded as a [`FaultEvent`] in
//! `lab up --json`, beside the agents' per-second timeline, so that a report can plot latency
//! through the fault and count what was lost by `seq`.

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// What fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// `kill -9` of one System 1 worker process.
    KillWorker,
    /// `kill -9` of the private Redis, then a restart on the same data directory.
    RestartRedis,
    /// `kill -9` of System 2, then a restart.
    RestartSystem2,
    /// A dashboard on each system that stops reading.
    StallDashboard,
}

impl FaultKind {
    const ALL: [FaultKind; 4] = [
        FaultKind::KillWorker,
        FaultKind::RestartRedis,
        FaultKind::RestartSystem2,
        FaultKind::StallDashboard,
    ];

    /// The name in `--fault`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker",
            FaultKind::RestartRedis => "restart-redis",
            FaultKind::RestartSystem2 => "restart-system2",
            FaultKind::StallDashboard => "stall-dashboard",
        }
    }

    /// How long the part stays down when the spec does not say (`None`: to the end of the run).
    fn default_down(self) -> Option<Duration> {
        match self {
            FaultKind::RestartRedis | FaultKind::RestartSystem2 => Some(Duration::from_secs(2)),
            FaultKind::KillWorker | FaultKind::StallDashboard => None,
        }
    }
}

/// One `--fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What fails.
    pub kind: FaultKind,
    /// When, from the start of sending.
    pub at: Duration,
    /// How long it stays down; `None`: to the end of the run.
    pub down: Option<Duration>,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}s", self.kind.as_str(), self.at.as_secs_f64())?;
        if let Some(down) = self.down {
            write!(f, ":{}s", down.as_secs_f64())?;
        }
        Ok(())
    }
}

/// Parses `KIND@AT[:DOWN]`, e.g. `restart-redis@10s:3s`; the error says what a valid one looks
/// like (clap shows it beside the flag).
pub fn parse_fault(s: &str) -> Result<Fault, String> {
    let kinds = FaultKind::ALL.map(FaultKind::as_str).join(", ");
    let (kind, when) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?} is not KIND@AT[:DOWN] (e.g. kill-worker@10s, restart-redis@10s:2s)"))?;
    let kind = FaultKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| format!("{kind:?} is not a fault; the faults are {kinds}"))?;
    let (at, down) = match when.split_once(':') {
        Some((at, down)) => (at, Some(down)),
        None => (when, None),
    };
    let at = lab_core::duration::parse_duration(at).map_err(|e| format!("the time of {s:?}: {e}"))?;
    let down = match down {
        Some(d) => {
            let d =
                lab_core::duration::parse_duration(d).map_err(|e| format!("the down time of {s:?}: {e}"))?;
            if d.is_zero() {
                return Err(format!(
                    "the down time of {s:?} is zero; leave it out for the default"
                ));
            }
            Some(d)
        }
        None => kind.default_down(),
    };
    Ok(Fault { kind, at, down })
}

/// What the supervisor did, as `lab up --json` records it under `faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// The fault as given, e.g. `restart-redis@10s:2s`.
    pub fault: String,
    /// Its kind.
    pub kind: FaultKind,
    /// When it was injected, in seconds from the start of sending.
    pub at_s: f64,
    /// When the part was ready again, in seconds from the start of sending (`None`: it was not
    /// started again, or never got ready).
    pub back_s: Option<f64>,
    /// What was done and seen, in words (the process and its pid; for a stalled dashboard, what
    /// each system did with it).
    pub what: Vec<String>,
}

/// A dashboard connection that subscribes to everything and then stops reading: the stalled
/// browser tab of the `stall-dashboard` fault. Its socket's buffers fill, the server's writes to
/// it stall, and a well-made server closes it without slowing anyone else down — which the other
/// dashboards' (the agents') latency shows, or not.
pub struct StalledDashboard {
    /// The system's name, for the record.
    pub system: &'static str,
    ws: WebSocketStream<TcpStream>,
}

/// The stalled dashboard's socket receive buffer. Small, so that the stall reaches the server
/// within seconds instead of after the kernel has buffered megabytes for it (Linux grows a
/// receive buffer to 6 MiB by default: minutes of updates at a gentle rate).
const STALLED_RECEIVE_BUFFER: u32 = 4096;

impl StalledDashboard {
    /// Connects to `url` and subscribes like the agents' dashboard does, then does nothing more.
    pub async fn open(system: &'static str, url: &str) -> Result<StalledDashboard, String> {
        let connect = async {
            let address = url
                .trim_start_matches("ws://")
                .trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .map_err(|e| e.to_string())?;
            let socket = if address.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(|e| e.to_string())?;
            socket
                .set_recv_buffer_size(STALLED_RECEIVE_BUFFER)
                .map_err(|e| e.to_string())?;
            let stream = socket.connect(address).await.map_err(|e| e.to_string())?;
            tokio_tungstenite::client_async(url, stream)
                .await
                .map_err(|e| e.to_string())
        };
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .map_err(|_| format!("{system}: cannot connect to {url} within 5 s"))?
            .map_err(|e| format!("{system}: cannot connect to {url}: {e}"))?;
        for frame in [
            r#"{"type":"register","role":"dashboard","serverId":null}"#,
            r#"{"type":"subscribe","serverId":null}"#,
        ] {
            ws.send(Message::Text(frame.into()))
                .await
                .map_err(|e| format!("{system}: cannot subscribe at {url}: {e}"))?;
        }
        Ok(StalledDashboard { system, ws })
    }

    /// Reads what is waiting (for at most `within`) to see what the server did with the stalled
    /// connection: closed it (and with which code and reason), or kept it open.
    pub async fn verdict(mut self, within: Duration) -> String {
        let mut frames = 0u64;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => {
                    return format!(
                        "{}: the stalled dashboard was still open at the end ({frames} frames were waiting to be read)",
                        self.system
                    );
                }
                Ok(Some(Ok(Message::Close(close)))) => {
                    let how = close.map_or("without a code".to_string(), |c| {
                        format!("with code {} ({})", u16::from(c.code), c.reason)
                    });
                    return format!(
                        "{}: the server closed the stalled dashboard {how}, after {frames} frames it had sent",
                        self.system
                    );
                }
                Ok(Some(Ok(_))) => frames += 1,
                Ok(Some(Err(e))) => {
                    return format!(
                        "{}: the stalled dashboard's connection failed ({e}) after {frames} frames",
                        self.system
                    );
                }
                Ok(None) => {
                    return format!(
                        "{}: the server dropped the stalled dashboard's connection after {frames} frames",
                        self.system
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_kind_at_and_down_with_per_kind_defaults() {
        let f = parse_fault("restart-redis@10s").unwrap();
        assert_eq!(f.kind, FaultKind::RestartRedis);
        assert_eq!(f.at, Duration::from_secs(10));
        assert_eq!(f.down, Some(Duration::from_secs(2)));
        let f = parse_fault("kill-worker@1500ms").unwrap();
        assert_eq!((f.at, f.down), (Duration::from_millis(1500), None));
        let f = parse_fault("restart-system2@3s:5s").unwrap();
        assert_eq!(f.down, Some(Duration::from_secs(5)));
        assert_eq!(f.to_string(), "restart-system2@3s:5s");
    }

    #[test]
    fn a_bad_fault_says_what_a_good_one_looks_like() {
        let e = parse_fault("kill-worker").unwrap_err();
        assert!(e.contains("KIND@AT[:DOWN]"), "{e}");
        let e = parse_fault("reboot@3s").unwrap_err();
        assert!(
            e.contains("kill-worker, restart-redis, restart-system2, stall-dashboard"),
            "{e}"
        );
        let e = parse_fault("kill-worker@soon").unwrap_err();
        assert!(e.contains("the time of"), "{e}");
        let e = parse_fault("restart-redis@3s:0s").unwrap_err();
        assert!(e.contains("zero"), "{e}");
    }
}
