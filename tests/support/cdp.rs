//! A small Chrome DevTools Protocol client for the browser tests: launches
//! headless Chromium on loopback, speaks the protocol over a minimal
//! WebSocket client (RFC 6455 text frames, client-masked), and collects
//! the page's JavaScript errors (Runtime.exceptionThrown,
//! Runtime.consoleAPICalled of type error, Log.entryAdded of level error).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex as AsyncMutex};

/// Chromium from `KUBE_INSIGHT_TEST_CHROMIUM`, or on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBE_INSIGHT_TEST_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for dir in std::env::split_paths(&path) {
            let c = dir.join(name);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

/// A running headless Chromium (killed on drop).
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn launch(bin: &Path, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        // Chromium writes its port to DevToolsActivePort in the profile.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&file) {
                if let Some(p) = s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()) {
                    break p;
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("chromium exited at start: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// A new page (tab), with its events enabled.
    pub async fn page(&self) -> Page {
        let body: Value = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/json/new?about:blank",
                self.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = body["id"].as_str().unwrap();
        let page = Page::connect(self.port, &format!("/devtools/page/{id}")).await;
        for m in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            page.call(m, json!({})).await;
        }
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One page's protocol session.
pub struct Page {
    writer: AsyncMutex<OwnedWriteHalf>,
    pending: Pending,
    next: AtomicU64,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Page {
    async fn connect(port: u16, path: &str) -> Page {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, mut write) = stream.into_split();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        write.write_all(req.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(read);
        let mut status = String::new();
        reader.read_line(&mut status).await.unwrap();
        assert!(
            status.contains(" 101 "),
            "websocket upgrade refused: {status}"
        );
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).await.unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
        }
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let page = Page {
            writer: AsyncMutex::new(write),
            pending: pending.clone(),
            next: AtomicU64::new(1),
            events: events.clone(),
        };
        tokio::spawn(read_loop(reader, pending, events));
        page
    }

    /// Sends a command and returns its result (panics on a protocol error).
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        send_text(&mut *self.writer.lock().await, msg.as_bytes()).await;
        let v = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer in 60 s"))
            .unwrap();
        if let Some(e) = v.get("error") {
            panic!("{method}: {e}");
        }
        v["result"].clone()
    }

    /// Evaluates an expression (awaiting a promise) and returns its value.
    pub async fn eval(&self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(d) = r.get("exceptionDetails") {
            panic!("evaluating {expr}: {d}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `expr` is truthy; returns its value.
    pub async fn wait(&self, what: &str, expr: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr).await;
            let truthy =
                !(v.is_null() || v == Value::Bool(false) || v == json!(0) || v == json!(""));
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let errs = self.errors(&[]).join("\n");
                let body = self
                    .eval("document.getElementById('main') && document.getElementById('main').innerText.slice(0, 800)")
                    .await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}\npage: {body}\nerrors: {errs}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn navigate(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// A real mouse click at the centre of the element `selector` matches (of
    /// its first box, when a link wraps).
    pub async fn click(&self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.scrollIntoView({{block: 'center'}}); return true; }})()"
            ))
            .await;
        assert_eq!(
            found,
            Value::Bool(true),
            "click: nothing matches {selector}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = self
            .eval(&format!(
                "(() => {{ const r = document.querySelector({sel}).getClientRects()[0]; return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = match r.as_array() {
            Some(a) => (a[0].as_f64().unwrap(), a[1].as_f64().unwrap()),
            None => panic!("click: nothing matches {selector}"),
        };
        for t in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": t, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// A key press (`key`: "ArrowDown", "Enter", "Tab"…).
    pub async fn key(&self, key: &str) {
        let code = match key {
            "ArrowDown" => 40,
            "ArrowUp" => 38,
            "Enter" => 13,
            "Tab" => 9,
            _ => 0,
        };
        for t in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": t, "key": key, "code": key, "windowsVirtualKeyCode": code}),
            )
            .await;
        }
    }

    /// A PNG of the page's viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        decode_base64(r["data"].as_str().unwrap())
    }

    /// The JavaScript errors so far, less those matching one of `allowed`.
    pub fn errors(&self, allowed: &[&str]) -> Vec<String> {
        let evs = self.events.lock().unwrap();
        let mut out = Vec::new();
        for e in evs.iter() {
            let p = &e["params"];
            let text = match e["method"].as_str() {
                Some("Runtime.exceptionThrown") => Some(p["exceptionDetails"].to_string()),
                Some("Runtime.consoleAPICalled")
                    if p["type"] == "error" || p["type"] == "assert" =>
                {
                    Some(format!("console.{}: {}", p["type"], p["args"]))
                }
                Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                    Some(format!("log: {} {}", p["entry"]["text"], p["entry"]["url"]))
                }
                _ => None,
            };
            if let Some(t) = text {
                if !allowed.iter().any(|a| t.contains(a)) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Every event received with this method.
    pub fn events(&self, method: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["method"] == method)
            .cloned()
            .collect()
    }
}

async fn send_text(w: &mut OwnedWriteHalf, payload: &[u8]) {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x81);
    let n = payload.len();
    if n < 126 {
        frame.push(0x80 | n as u8);
    } else if n < 65536 {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(n as u64).to_be_bytes());
    }
    let mask = [0x5a, 0x13, 0xc7, 0x2e];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    w.write_all(&frame).await.unwrap();
}

async fn read_loop(
    mut r: BufReader<OwnedReadHalf>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
) {
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        if r.read_exact(&mut head).await.is_err() {
            return;
        }
        let (fin, op) = (head[0] & 0x80 != 0, head[0] & 0x0f);
        let mut len = (head[1] & 0x7f) as u64;
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await.unwrap();
            len = u16::from_be_bytes(b) as u64;
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await.unwrap();
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; len as usize];
        if r.read_exact(&mut payload).await.is_err() {
            return;
        }
        match op {
            0 | 1 => {
                message.extend_from_slice(&payload);
                if !fin {
                    continue;
                }
                let v: Value = serde_json::from_slice(&message).unwrap();
                message.clear();
                if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = pending.lock().unwrap().remove(&id) {
                        let _ = tx.send(v);
                    }
                } else {
                    events.lock().unwrap().push(v);
                }
            }
            8 => return,
            _ => {} // ping/pong: Chromium does not ping its clients
        }
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk.iter().fold(0u32, |acc, &c| {
            (acc << 6) | if c == b'=' { 0 } else { val(c) }
        });
        let n = n << (6 * (4 - chunk.len()));
        let b = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&b[..3 - pad]);
    }
    out
}
