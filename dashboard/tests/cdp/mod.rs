//! Just enough of the Chrome DevTools Protocol to test a page: launch headless chromium, open a tab,
//! navigate, evaluate JavaScript, read performance counters, take a screenshot, and collect what the
//! browser reports as wrong (console errors, exceptions, failed requests, HTTP errors).
//!
//! Why not a crate: chromiumoxide and headless_chrome generate or wrap the whole protocol (hundreds
//! of types, minutes of build); WebDriver (fantoccini) needs chromedriver and cannot see the
//! console. The protocol is JSON over one WebSocket, and tokio-tungstenite is already in the
//! workspace: this file is the whole client.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A headless chromium with one tab.
pub struct Browser {
    process: tokio::process::Child,
    _profile: tempfile_dir::TempDir,
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    next_id: Mutex<u64>,
    session: String,
    problems: Arc<Mutex<Vec<String>>>,
}

/// A private profile folder, removed on drop (no tempfile dependency needed for one folder).
mod tempfile_dir {
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Browser {
    /// Starts `chromium` headless (with `--no-sandbox`: tests run as root in CI) and attaches to a
    /// new tab with the console, network and performance domains enabled.
    pub async fn launch(program: &Path) -> anyhow::Result<Browser> {
        // One profile per browser: two chromiums on one profile would be one (the second hands its
        // work to the first and exits).
        static LAUNCHED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LAUNCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("dashboard-test-chromium-{}-{n}", std::process::id()));
        let mut process = tokio::process::Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                "--window-size=1440,1900",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        // Chromium prints its DevTools address on stderr.
        let stderr = process.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("DevTools listening on ") {
                    return Ok(rest.trim().to_string());
                }
            }
            anyhow::bail!("chromium exited without printing its DevTools address")
        })
        .await
        .map_err(|_| anyhow::anyhow!("chromium did not start within 30 s"))??;
        // Keep draining stderr so that chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let (ws, _) = tokio_tungstenite::connect_async(endpoint.as_str()).await?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = out_rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let (p, pr) = (pending.clone(), problems.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = p.lock().unwrap().remove(&id) {
                        let _ = tx.send(value);
                    }
                } else if let Some(problem) = problem(&value) {
                    pr.lock().unwrap().push(problem);
                }
            }
        });
        let mut browser = Browser {
            process,
            _profile: tempfile_dir::TempDir(profile),
            out,
            pending,
            next_id: Mutex::new(0),
            session: String::new(),
            problems,
        };
        let target = browser
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        browser.session = attached["sessionId"].as_str().unwrap_or_default().to_string();
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
            "Page.enable",
            "Performance.enable",
        ] {
            browser.send(domain, json!({})).await?;
        }
        Ok(browser)
    }

    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.out.send(message.to_string())?;
        let reply = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .map_err(|_| anyhow::anyhow!("{method}: no answer within 30 s"))??;
        if let Some(error) = reply.get("error") {
            anyhow::bail!("{method}: {error}");
        }
        Ok(reply["result"].clone())
    }

    /// A command to the tab.
    pub async fn send(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.call(Some(&self.session.clone()), method, params).await
    }

    /// Loads `url` and waits for its `load` event (by polling `document.readyState`).
    pub async fn navigate(&self, url: &str) -> anyhow::Result<()> {
        self.send("Page.navigate", json!({"url": url})).await?;
        for _ in 0..300 {
            if self.evaluate("document.readyState").await == "complete" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("{url} did not finish loading within 30 s")
    }

    /// Evaluates `expression` in the page; its value as JSON (`null` on an exception, which is also
    /// recorded as a problem by the console listener).
    pub async fn evaluate(&self, expression: &str) -> Value {
        match self
            .send(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await
        {
            Ok(result) => result["result"]["value"].clone(),
            Err(e) => Value::String(format!("evaluate failed: {e}")),
        }
    }

    /// The renderer's counters so far (`Performance.getMetrics`): `TaskDuration` (main-thread busy
    /// time), `ScriptDuration`, `LayoutDuration`, `RecalcStyleDuration`, in seconds; and others.
    pub async fn performance(&self) -> HashMap<String, f64> {
        let metrics = self
            .send("Performance.getMetrics", json!({}))
            .await
            .unwrap_or_default();
        metrics["metrics"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["value"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A PNG of the whole page.
    pub async fn screenshot(&self) -> Vec<u8> {
        let shot = self
            .send(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await
            .expect("a screenshot");
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("base64 PNG")
    }

    /// What went wrong so far, in words.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// Closes the browser.
    pub async fn close(mut self) {
        let _ = self.call(None, "Browser.close", json!({})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.process.wait()).await;
        let _ = self.process.kill().await;
    }
}

/// Events that mean something is wrong with the page.
fn problem(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.exceptionThrown" => Some(format!("exception: {}", params["exceptionDetails"])),
        "Runtime.consoleAPICalled" if matches!(params["type"].as_str(), Some("error" | "assert")) => {
            Some(format!("console.{}: {}", params["type"], params["args"]))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => Some(format!("log: {}", params["entry"])),
        "Network.loadingFailed" if params["canceled"] != true => Some(format!("request failed: {}", params)),
        "Network.responseReceived" if params["response"]["status"].as_u64().unwrap_or(0) >= 400 => {
            Some(format!(
                "HTTP {} for {}",
                params["response"]["status"], params["response"]["url"]
            ))
        }
        _ => None,
    }
}
