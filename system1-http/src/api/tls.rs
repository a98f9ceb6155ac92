//! TLS for the ingest API (`--tls-cert`/`--tls-key`, or `--tls-self-signed`).
//!
//! **Why the API offers TLS at all.** Browsers speak HTTP/2 only over TLS, and they agree on it during
//! the TLS handshake with ALPN (the client lists the protocols it speaks, the server picks one). Without
//! TLS, HTTP/2 needs "prior knowledge" (the client simply starts in HTTP/2), which load tools and curl
//! do but browsers do not. With TLS on, both API ports offer `h2` and `http/1.1` by ALPN.
//!
//! ```text
//! TCP accept ─▶ TCP_NODELAY ─▶ TLS handshake (own task, bounded by HANDSHAKE_TIMEOUT)
//!                                  │ fails: logged at debug, counted, connection dropped; the loop goes on
//!                                  ▼
//!                              hyper-util's auto builder: HTTP/2 if the client's first bytes are the
//!                              HTTP/2 preface (as ALPN `h2` promised), else HTTP/1.1 ─▶ the same axum Router
//! ```
//!
//! **Why an accept loop of our own.** `axum::serve` accepts plain TCP only. Doing the TLS handshake
//! inside an accept loop would let one slow (or malicious) client hold up every other connection, so
//! each connection gets its own task at once and does its handshake there. Graceful shutdown works as
//! `axum::serve`'s does: stop accepting, ask every connection to finish its in-flight requests
//! (HTTP/2 `GOAWAY`, HTTP/1.1 `Connection: close`), and wait for them (the caller bounds the wait).
//!
//! **Crypto.** rustls with the `ring` provider, chosen explicitly rather than through rustls's
//! process-wide default: the default provider (aws-lc-rs) needs cmake and nasm to build.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ApiArgs;

/// Longest a client may take to complete its TLS handshake. A client that connects and then says
/// nothing would otherwise hold a task and a socket for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an accept error that is not about one connection (out of file
/// descriptors, say): retrying at once would spin, and the condition usually takes a moment to clear.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The names a self-signed certificate is valid for: what a browser or client on this machine dials.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The protocols offered by ALPN, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS could not be set up. Each message names the file at fault, so that a typo in a path is found
/// from the message alone; the underlying cause is the error's `source` (anyhow prints it as
/// "Caused by").
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read the TLS {what} file {}", path.display())]
    Read {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not PEM, or has no item of the expected kind.
    #[error("the TLS {what} file {} is not valid PEM: {reason} (expected {expected})", path.display())]
    Pem {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
        /// What the file should hold.
        expected: &'static str,
    },
    /// rustls refused the pair (a key that does not match the certificate, an unsupported key type).
    #[error("the TLS certificate {} and key {} cannot be used together", cert.display(), key.display())]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate")]
    Generate(#[from] rcgen::Error),
    /// The self-signed certificate (generated in memory) was refused by rustls.
    #[error("the generated self-signed certificate was refused")]
    SelfSignedRefused(#[source] rustls::Error),
    /// The self-signed certificate could not be written for clients to trust.
    #[error("cannot write the self-signed certificate to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A certificate generated at start-up (`--tls-self-signed`).
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The certificate in PEM, for clients to trust (it is its own issuer).
    pub pem: String,
    /// Where it was written, once it was (see [`SelfSigned::write_to_temp_dir`]).
    pub path: Option<PathBuf>,
}

impl SelfSigned {
    /// Writes the certificate (never the key, which stays in memory) to the temporary directory, named
    /// after the API's first port, so that `curl --cacert` or a browser can be pointed at it.
    pub fn write_to_temp_dir(&mut self, port: u16) -> Result<&Path, TlsError> {
        let path = std::env::temp_dir().join(format!("system1-api-{port}-self-signed.pem"));
        std::fs::write(&path, &self.pem).map_err(|source| TlsError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(self.path.insert(path))
    }
}

/// The API's TLS settings, ready to accept connections.
#[derive(Clone)]
pub struct Tls {
    /// Shared by every connection of both ports.
    pub acceptor: TlsAcceptor,
    /// Set with `--tls-self-signed`.
    pub self_signed: Option<SelfSigned>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// What the flags ask for: `None` without TLS flags; else the loaded (or generated) certificate.
    /// Runs before any port is bound, so a bad file stops the start-up with a clear message.
    pub fn from_args(args: &ApiArgs) -> Result<Option<Tls>, TlsError> {
        if args.tls_self_signed {
            let (config, pem) = self_signed_config()?;
            return Ok(Some(Tls {
                acceptor: TlsAcceptor::from(config),
                self_signed: Some(SelfSigned { pem, path: None }),
            }));
        }
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Tls {
                acceptor: TlsAcceptor::from(load_config(cert, key)?),
                self_signed: None,
            })),
            // clap's `requires` makes a lone --tls-cert or --tls-key a usage error before this.
            _ => Ok(None),
        }
    }
}

/// A server configuration from a PEM certificate chain and a PEM private key.
pub fn load_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("certificate", cert)?;
    let key_pem = read("key", key)?;
    const CERT_EXPECTED: &str = "one or more -----BEGIN CERTIFICATE----- blocks";
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error("certificate", cert, CERT_EXPECTED))?;
    if chain.is_empty() {
        return Err(pem_error("certificate", cert, CERT_EXPECTED)(
            rustls::pki_types::pem::Error::NoItemsFound,
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(pem_error(
        "key",
        key,
        "a -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) block",
    ))?;
    server_config(chain, private_key).map_err(|source| TlsError::Refused {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

/// Turns a PEM parser error about `path` into a [`TlsError::Pem`] that says what the file should hold.
fn pem_error<'a>(
    what: &'static str,
    path: &'a Path,
    expected: &'static str,
) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + 'a {
    move |e| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
        expected,
    }
}

/// A server configuration with a certificate generated now, for [`SELF_SIGNED_NAMES`]; and the
/// certificate in PEM.
pub fn self_signed_config() -> Result<(Arc<ServerConfig>, String), TlsError> {
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names)?;
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let config =
        server_config(vec![generated.cert.der().clone()], key).map_err(TlsError::SelfSignedRefused)?;
    Ok((config, generated.cert.pem()))
}

/// rustls's server configuration: the `ring` provider, its safe default protocol versions (TLS 1.3 and
/// 1.2), no client certificates, and ALPN offering HTTP/2 then HTTP/1.1.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        // Also checks that the key belongs to the certificate.
        .with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `stop`, then waits for the open connections to finish
/// their in-flight requests (the caller bounds that wait). `handshake_failures` counts the
/// connections that never completed a handshake.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Tls,
    app: Router,
    handshake_failures: Counter,
    stop: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    // One builder for every connection: HTTP/1.1 and HTTP/2, chosen by the connection's first bytes.
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Errors about one connection (reset before it was accepted) need no pause.
                if !is_connection_error(&e) {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                continue;
            }
        };
        // Small responses must not wait for Nagle's algorithm, as on the plain-text ports.
        let _ = tcp.set_nodelay(true);
        // Taken here, before the task starts, so that a shutdown that begins now still waits for it.
        let watcher = graceful.watcher();
        tokio::spawn(serve_connection(
            tcp,
            peer,
            tls.acceptor.clone(),
            builder.clone(),
            app.clone(),
            watcher,
            handshake_failures.clone(),
            stop.clone(),
        ));
    }
    // Stop accepting (the port refuses new connections), then drain.
    drop(listener);
    graceful.shutdown().await;
}

/// One connection: the handshake, then HTTP until the client closes it or shutdown drains it.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    watcher: Watcher,
    handshake_failures: Counter,
    stop: CancellationToken,
) {
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
        // Nothing was asked of us yet: a shutdown simply drops the half-open connection.
        () = stop.cancelled() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // A client speaking plain HTTP to a TLS port, a client that does not trust our certificate:
            // the client's problem, reported to it by the failed handshake. Debug, not warn: anyone can
            // cause these at any rate, and the counter shows whether they happen.
            handshake_failures.inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            handshake_failures.inc();
            tracing::debug!(%peer, limit = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            return;
        }
    };
    tracing::trace!(
        %peer,
        alpn = ?stream.get_ref().1.alpn_protocol().map(String::from_utf8_lossy),
        "TLS connection"
    );
    let service = TowerToHyperService::new(app);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
    }
}

/// Accept errors that concern one connection only (as hyper and axum classify them).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
