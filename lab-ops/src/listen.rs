//! Binding a port. A port in use is the most common start-up failure of a lab run on a laptop (a
//! previous run still up, another program on 4000), so every server says the same thing: which address,
//! the likely cause, and which flag or environment variable moves it.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A port that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} (is the port in use? change it with {hint})")]
pub struct ListenError {
    /// The address asked for.
    pub address: SocketAddr,
    /// The flag and environment variable that change it, as the message shows them.
    pub hint: String,
    /// What the operating system said (`Address already in use`, `Permission denied`, …).
    #[source]
    pub source: std::io::Error,
}

/// Binds `address` (port 0 picks a free one); on failure, the error names `hint`: the flag and
/// environment variable that change the port, e.g. `"--port or SYSTEM2_WS_PORT"`.
pub async fn listen(address: SocketAddr, hint: &str) -> Result<TcpListener, ListenError> {
    TcpListener::bind(address).await.map_err(|source| ListenError {
        address,
        hint: hint.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_named_with_its_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = taken.local_addr().unwrap();
        let error = listen(address, "--port or SOME_PORT").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("cannot listen on {address} (is the port in use? change it with --port or SOME_PORT)")
        );
        assert_eq!(error.source.kind(), std::io::ErrorKind::AddrInUse);
    }
}
