//! # lab-testkit: real services for the lab's tests
//!
//! The lab's integration tests talk to a real `redis-server`, never a mock: a mock would agree with
//! whatever the code under test believes about Redis, which is exactly what a test must not do.
//! [`RedisServer`] starts a private one per test (or per suite):
//!
//! - on a free TCP port of 127.0.0.1, or on a unix socket in its own temporary directory;
//! - with its data in that temporary directory, removed afterwards;
//! - optionally with AOF persistence and a chosen fsync policy, for durability tests;
//! - waited for with `PING` before the test goes on, so no test races the server's start-up;
//! - stopped ([`RedisServer::stop`], a clean `SHUTDOWN`), crashed ([`RedisServer::kill`], `SIGKILL`)
//!   and started again on the same address and data ([`RedisServer::restart`]), for fault tests;
//! - killed when dropped, so a failing test leaves no server behind.
//!
//! It never touches the shared Redis on port 6379: the port is always one the OS just handed out.
//!
//! ```no_run
//! let redis = lab_testkit::RedisServer::start().expect("redis-server is installed");
//! let mut con = redis.connection();
//! let pong: String = redis::cmd("PING").query(&mut con).unwrap();
//! assert_eq!(pong, "PONG");
//! ```

use std::fs;
use std::io::{self, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use thiserror::Error;

/// How long to wait for a started server to answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times to retry start-up when a free port was taken before redis-server could bind it.
const PORT_RETRIES: usize = 5;

/// The environment variable that names the `redis-server` binary, when it is not on `PATH`.
pub const REDIS_SERVER_BIN_ENV: &str = "REDIS_SERVER_BIN";

/// When AOF writes are flushed to disk (`appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every write: nothing acknowledged is lost, even on a crash.
    Always,
    /// Once a second: up to a second of writes may be lost on a crash.
    EverySec,
    /// When the OS decides.
    No,
}

impl Fsync {
    fn as_arg(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::EverySec => "everysec",
            Fsync::No => "no",
        }
    }
}

/// A private redis-server could not be started.
#[derive(Debug, Error)]
pub enum TestkitError {
    /// No `redis-server` binary.
    #[error(
        "redis-server is not installed (looked for {binary:?}); install it with `apt-get install redis-server` \
         (Debian/Ubuntu) or `brew install redis` (macOS), or set {REDIS_SERVER_BIN_ENV} to its path"
    )]
    NotInstalled {
        /// The binary looked for.
        binary: String,
    },
    /// It started but did not answer `PING` in time, or exited.
    #[error("redis-server did not come up: {reason}\n--- last lines of its log ---\n{log_tail}")]
    DidNotStart {
        /// What went wrong.
        reason: String,
        /// The end of its log file.
        log_tail: String,
    },
    /// Filesystem or process trouble.
    #[error("could not run redis-server: {0}")]
    Io(#[from] io::Error),
}

/// Options for [`RedisServer`]; see [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    aof: Option<Fsync>,
    unix_socket: bool,
    extra_args: Vec<String>,
}

impl Builder {
    /// Turns on AOF persistence with this fsync policy.
    pub fn aof(mut self, fsync: Fsync) -> Self {
        self.aof = Some(fsync);
        self
    }

    /// Listens on a unix socket in the server's temporary directory instead of TCP.
    pub fn unix_socket(mut self) -> Self {
        self.unix_socket = true;
        self
    }

    /// Passes further configuration, such as `["--maxmemory", "10mb"]`.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts the server and waits until it answers `PING`.
    pub fn start(self) -> Result<RedisServer, TestkitError> {
        let dir = tempfile::Builder::new().prefix("lab-redis-").tempdir()?;
        let mut server = RedisServer {
            options: self,
            dir,
            address: Address::Tcp(0),
            child: None,
        };
        server.start_fresh()?;
        Ok(server)
    }
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp(u16),
    Unix(PathBuf),
}

/// A private `redis-server` process, killed when dropped. See the [crate docs](crate).
#[derive(Debug)]
pub struct RedisServer {
    /// How it was asked to run; kept for restarts.
    options: Builder,
    /// Its working directory (data, AOF, log, socket); deleted on drop.
    dir: TempDir,
    /// Where it listens; kept across restarts, so clients reconnect to the same address.
    address: Address,
    /// The running process, if it is running.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server with default options: TCP on a free port, no persistence.
    pub fn start() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The URL clients use: `redis://127.0.0.1:PORT/` or `redis+unix:///path/redis.sock`.
    pub fn url(&self) -> String {
        match &self.address {
            Address::Tcp(port) => format!("redis://127.0.0.1:{port}/"),
            Address::Unix(path) => format!("redis+unix://{}", path.display()),
        }
    }

    /// The TCP port, when listening on TCP.
    pub fn port(&self) -> Option<u16> {
        match self.address {
            Address::Tcp(port) => Some(port),
            Address::Unix(_) => None,
        }
    }

    /// The server's working directory (data files and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("the testkit builds valid URLs")
    }

    /// A new synchronous connection. Panics if the server is down: tests want to know at once.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .expect("connect to the test redis-server")
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server cleanly (`SHUTDOWN`: with AOF on, everything written is flushed) and waits
    /// for the process to exit. Its address and data stay, for [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Ok(mut con) = self.client().get_connection() {
            // The server closes the connection instead of answering, so the error is the success.
            let _ = redis::cmd("SHUTDOWN").query::<()>(&mut con);
        }
        self.wait_or_kill(Duration::from_secs(10));
    }

    /// Crashes the server (`SIGKILL`): writes not yet fsynced are lost, as in a real crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same address with the same data directory.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        if self.is_running() {
            self.stop();
        }
        self.spawn()?;
        self.wait_ready()
    }

    fn wait_or_kill(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// First start: pick an address, retrying when a free port is taken before redis binds it.
    fn start_fresh(&mut self) -> Result<(), TestkitError> {
        let mut last_error = None;
        for _ in 0..PORT_RETRIES {
            self.address = if self.options.unix_socket {
                Address::Unix(self.dir.path().join("redis.sock"))
            } else {
                Address::Tcp(free_port()?)
            };
            self.spawn()?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e @ TestkitError::DidNotStart { .. }) if self.port().is_some() => {
                    self.kill();
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.expect("the loop ran at least once"))
    }

    fn spawn(&mut self) -> Result<(), TestkitError> {
        let binary = std::env::var(REDIS_SERVER_BIN_ENV).unwrap_or_else(|_| "redis-server".into());
        let dir = self.dir.path();
        let mut cmd = Command::new(&binary);
        cmd.arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        cmd.args(["--daemonize", "no", "--save", "", "--databases", "16"]);
        match &self.address {
            Address::Tcp(port) => {
                cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()]);
            }
            Address::Unix(path) => {
                cmd.args(["--port", "0", "--unixsocketperm", "700"])
                    .arg("--unixsocket")
                    .arg(path);
            }
        }
        match self.options.aof {
            Some(fsync) => cmd.args(["--appendonly", "yes", "--appendfsync", fsync.as_arg()]),
            None => cmd.args(["--appendonly", "no"]),
        };
        cmd.args(&self.options.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TestkitError::NotInstalled {
                binary: binary.clone(),
            },
            _ => TestkitError::Io(e),
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = self.client();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                self.child = None;
                return Err(self.did_not_start(format!("it exited with {status}. {}", stderr.trim())));
            }
            if let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING")
                    .query::<String>(&mut con)
                    .is_ok_and(|p| p == "PONG")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.did_not_start(format!("no PONG within {START_TIMEOUT:?}")));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn did_not_start(&self, reason: String) -> TestkitError {
        let log = fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(20)..].join("\n");
        TestkitError::DidNotStart { reason, log_tail }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process that is killed, and reaped, when this is dropped: a server a benchmark or a test
/// started never outlives it, whatever fails.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
