//! Readiness: is a service answering yet? The supervisor starts the agents only when every service
//! answers, so that the first seconds of a run measure the systems, not their start-up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::child::{Child, describe};

/// How a service shows it is ready.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `GET path` answers 200.
    Http(SocketAddr, &'static str),
    /// Redis answers `PING` with `+PONG`.
    RedisPing(SocketAddr),
}

impl Probe {
    /// One attempt, bounded by a second.
    pub async fn check(&self) -> bool {
        let attempt = async {
            match self {
                Probe::Http(address, path) => {
                    let request =
                        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
                    exchange(*address, request.as_bytes())
                        .await
                        .is_some_and(|r| r.starts_with(b"HTTP/1.1 200") || r.starts_with(b"HTTP/1.0 200"))
                }
                Probe::RedisPing(address) => exchange(*address, b"PING\r\n")
                    .await
                    .is_some_and(|r| r.starts_with(b"+PONG")),
            }
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .unwrap_or(false)
    }
}

/// Sends `request` and reads the first bytes of the answer.
async fn exchange(address: SocketAddr, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut answer = vec![0; 64];
    let mut read = 0;
    // Enough to see the status: up to the first line's end (Redis keeps the connection open).
    while read < 16 && !answer[..read].contains(&b'\n') {
        match stream.read(&mut answer[read..]).await.ok()? {
            0 => break,
            n => read += n,
        }
    }
    answer.truncate(read);
    Some(answer)
}

/// Waits until `probe` succeeds, the child exits, or `timeout` passes; an error says which, with
/// the end of the child's log.
pub async fn wait_ready(child: &mut Child, probe: &Probe, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.exited() {
            anyhow::bail!(
                "{} exited while starting ({}). The end of its log ({}):\n{}",
                child.spec.name,
                describe(status),
                child.log.display(),
                child.tail(20)
            );
        }
        if probe.check().await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "{} was not ready within {} s ({:?} did not succeed; change the bound with \
                 --ready-timeout). The end of its log ({}):\n{}",
                child.spec.name,
                timeout.as_secs(),
                probe,
                child.log.display(),
                child.tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
