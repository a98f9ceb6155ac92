//! Starting a real System 2 on a free port, and talking to it as clients do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use system2_ws::Server;
use system2_ws::config::Config;
use system2_ws::hub::Hub;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a test waits for anything before it fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A System 2 running in this test, on 127.0.0.1 and a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the given extra flags (e.g. `["--max-connections", "2"]`).
    pub async fn start(flags: &[&str]) -> TestServer {
        let mut args = vec!["system2", "--host", "127.0.0.1", "--port", "0"];
        args.extend_from_slice(flags);
        let config = Config::try_parse_from(args).expect("test flags parse");
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addr();
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(self.http_url(path)).await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    }

    pub async fn get_text(&self, path: &str) -> String {
        reqwest::get(self.http_url(path))
            .await
            .expect("GET")
            .text()
            .await
            .unwrap()
    }

    /// Asks the server to stop, as Ctrl-C would, and waits for `run` to return.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => tokio::time::timeout(PATIENCE, task)
                .await
                .expect("stops in time")
                .expect("no panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects and consumes the `connection.ack`.
    pub async fn connect(server: &TestServer) -> Client {
        let mut client = Client::connect_raw(&server.ws_url()).await;
        let ack = client.recv().await;
        assert_eq!(ack["type"], "connection.ack", "{ack}");
        client
    }

    /// Connects with a tiny TCP receive buffer, then registers as a dashboard: a client that stops
    /// reading fills its buffers after a few frames, not after megabytes.
    pub async fn stuck_dashboard(server: &TestServer) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        let mut client = Client { ws };
        assert_eq!(client.recv().await["type"], "connection.ack");
        client
            .send(json!({"type": "register", "role": "dashboard"}))
            .await;
        assert_eq!(client.recv().await["type"], "register.ack");
        client
    }

    /// Connects without reading anything.
    pub async fn connect_raw(url: &str) -> Client {
        let (ws, _) = connect_async(url).await.expect("WebSocket handshake");
        Client { ws }
    }

    /// Connects and registers with `register` (merged into a `register` frame), returning the ack.
    pub async fn register(server: &TestServer, register: Value) -> Client {
        let mut client = Client::connect(server).await;
        let mut frame = json!({"type": "register"});
        frame
            .as_object_mut()
            .unwrap()
            .extend(register.as_object().unwrap().clone());
        client.send(frame).await;
        let ack = client.recv().await;
        assert_eq!(ack["type"], "register.ack", "{ack}");
        client
    }

    pub async fn producer(server: &TestServer) -> Client {
        Client::register(server, json!({"role": "producer"})).await
    }

    pub async fn dashboard(server: &TestServer, register: Value) -> Client {
        let mut frame = json!({"role": "dashboard"});
        frame
            .as_object_mut()
            .unwrap()
            .extend(register.as_object().unwrap().clone());
        Client::register(server, frame).await
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON (pings are answered by tungstenite while reading).
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            match next.expect("connection open").expect("no error") {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a close in time");
            match next {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// A valid metric frame.
pub fn metric(server_id: &str, timestamp: f64, cpu: f64, seq: u64) -> Value {
    json!({
        "type": "metric",
        "serverId": server_id,
        "timestamp": timestamp,
        "metrics": {"cpu": cpu, "memory": 50.0, "disk": 25.0, "network": {"in": 100, "out": 200}},
        "seq": seq,
    })
}

/// The same metric without the frame's `type`, for batches.
pub fn item(server_id: &str, timestamp: f64, cpu: f64, seq: u64) -> Value {
    let mut m = metric(server_id, timestamp, cpu, seq);
    m.as_object_mut().unwrap().remove("type");
    m
}

pub fn now() -> f64 {
    lab_core::now_ms()
}
