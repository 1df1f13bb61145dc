//! Test harness: mock upstreams on 127.0.0.1 that record what they saw and answer on command,
//! and the real `modelgate` binary started on an ephemeral port.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// What the upstream answers.
pub enum Reply {
    Json(u16, serde_json::Value),
    Raw(u16, Vec<(String, String)>, Vec<u8>),
    /// An SSE stream: each chunk is written and flushed; `gate` (if any) is awaited before the
    /// last chunk.
    Stream(Vec<Vec<u8>>, Option<Arc<Mutex<Receiver<()>>>>),
    /// An SSE stream written slowly: the header after `head_after`, then each chunk after its
    /// own pause.
    Paced {
        head_after: Duration,
        chunks: Vec<(Duration, Vec<u8>)>,
    },
    /// Close the connection without answering.
    Drop,
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Upstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Starts a mock upstream. `GET .../models` lists `models`; everything else goes to `handler`.
    pub fn start(
        models: &[&str],
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Upstream::spawn(
            Some(models.iter().map(|s| s.to_string()).collect()),
            handler,
        )
    }

    /// A mock upstream whose `handler` answers every request, `GET .../models` included.
    pub fn start_listing(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Upstream {
        Upstream::spawn(None, handler)
    }

    fn spawn(
        models: Option<Vec<String>>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind mock upstream");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (h, s, m) = (handler.clone(), seen2.clone(), models.clone());
                std::thread::spawn(move || serve(stream, h, s, m));
            }
        });
        Upstream { port, seen }
    }

    /// An OpenAI-compatible upstream that echoes the model it was asked for.
    pub fn echo(models: &[&str]) -> Upstream {
        Upstream::start(models, |s| {
            Reply::Json(
                200,
                chat_reply(s.json()["model"].as_str().unwrap_or("?"), "ok"),
            )
        })
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.path.ends_with("/models"))
            .cloned()
            .collect()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

pub fn chat_reply(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    })
}

fn serve(
    stream: TcpStream,
    handler: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
    models: Option<Vec<String>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Seen {
            method,
            path,
            headers,
            body,
        };
        seen.lock().unwrap().push(req.clone());
        let listing = models
            .as_ref()
            .filter(|_| req.method == "GET" && req.path.ends_with("/models"));
        let reply = if let Some(models) = listing {
            let data: Vec<_> = models
                .iter()
                .map(|m| serde_json::json!({"id": m, "object": "model"}))
                .collect();
            Reply::Json(200, serde_json::json!({"object": "list", "data": data}))
        } else {
            handler(&req)
        };
        match reply {
            Reply::Json(status, v) => {
                let body = serde_json::to_vec(&v).unwrap();
                write_whole(
                    &mut out,
                    status,
                    &[("content-type".into(), "application/json".into())],
                    &body,
                );
            }
            Reply::Raw(status, hs, body) => write_whole(&mut out, status, &hs, &body),
            Reply::Stream(chunks, gate) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let n = chunks.len();
                for (i, c) in chunks.iter().enumerate() {
                    if i + 1 == n {
                        if let Some(g) = &gate {
                            let _ = g.lock().unwrap().recv_timeout(Duration::from_secs(20));
                        }
                    }
                    let frame = format!("{:x}\r\n", c.len());
                    if out.write_all(frame.as_bytes()).is_err()
                        || out.write_all(c).is_err()
                        || out.write_all(b"\r\n").is_err()
                    {
                        return;
                    }
                    let _ = out.flush();
                }
                let _ = out.write_all(b"0\r\n\r\n");
                return;
            }
            Reply::Paced { head_after, chunks } => {
                std::thread::sleep(head_after);
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                if out.write_all(head.as_bytes()).is_err() || out.flush().is_err() {
                    return;
                }
                for (pause, c) in &chunks {
                    std::thread::sleep(*pause);
                    let frame = format!("{:x}\r\n", c.len());
                    if out.write_all(frame.as_bytes()).is_err()
                        || out.write_all(c).is_err()
                        || out.write_all(b"\r\n").is_err()
                        || out.flush().is_err()
                    {
                        return;
                    }
                }
                let _ = out.write_all(b"0\r\n\r\n");
                return;
            }
            Reply::Drop => return,
        }
    }
}

fn write_whole(out: &mut TcpStream, status: u16, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
    let _ = out.flush();
}

/// A gate for `Reply::Stream`: the upstream waits on it before its last chunk.
pub fn gate() -> (Sender<()>, Arc<Mutex<Receiver<()>>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (tx, Arc::new(Mutex::new(rx)))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary, running on an ephemeral port; killed on drop.
pub struct Gateway {
    pub port: u16,
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_modelgate")
}

/// A command for the binary with a clean environment (no provider keys from the host).
pub fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("SQLITE_PATH", dir.join("store.db"))
        .current_dir(dir);
    c
}

impl Gateway {
    pub fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        // The free port can be taken between `free_port` and the gateway's bind (by another
        // test's outgoing connection, as its source port): then again on another port.
        let mut last = String::new();
        for _ in 0..3 {
            match Gateway::try_start(config, env) {
                Ok(g) => return g,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("gateway did not start: {e}"),
            }
        }
        panic!("gateway did not start: {last}")
    }

    pub fn try_start(config: &str, env: &[(&str, &str)]) -> Result<Gateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        let port = free_port();
        let log = dir.path().join("gateway.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = command(dir.path());
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut g = Gateway {
            port,
            child,
            dir,
            config: cfg,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = g.child.try_wait() {
                return Err(format!("exited with {status}: {}", g.logs()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && g.healthy() {
                return Ok(g);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not listening after 20 s: {}", g.logs()))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether `/health` answers 200 now. A connection refused or reset while the gateway is
    /// still starting is "not yet", not a failure.
    fn healthy(&self) -> bool {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build()
            .get(&self.url("/health"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build()
    }

    /// GET: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.get_with(path, &[])
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut r = Self::agent().get(&self.url(path));
        for (k, v) in headers {
            r = r.set(k, v);
        }
        into_parts(r.call()).0
    }

    /// POST JSON: status, body, response headers.
    pub fn post(&self, path: &str, body: &serde_json::Value, headers: &[(&str, &str)]) -> Resp {
        self.post_raw(path, &serde_json::to_vec(body).unwrap(), headers)
    }

    pub fn post_raw(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Resp {
        let mut r = Self::agent()
            .post(&self.url(path))
            .set("content-type", "application/json");
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let ((status, body), headers) = into_parts(r.send_bytes(body));
        Resp {
            status,
            body,
            headers,
        }
    }

    /// Any method, an optional JSON body (sent with `content-type: application/json`).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut r = Self::agent().request(method, &self.url(path));
        for (k, v) in headers {
            r = r.set(k, v);
        }
        let result = match body {
            Some(b) => r
                .set("content-type", "application/json")
                .send_bytes(&serde_json::to_vec(b).unwrap()),
            None => r.call(),
        };
        let ((status, body), headers) = into_parts(result);
        Resp {
            status,
            body,
            headers,
        }
    }

    pub fn chat(&self, model: &str) -> Resp {
        self.post(
            "/v1/chat/completions",
            &serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
            &[],
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: HashMap<String, String>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

fn into_parts(r: Result<ureq::Response, ureq::Error>) -> ((u16, String), HashMap<String, String>) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            resp.header(&n)
                .map(|v| (n.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let body = resp.into_string().unwrap_or_default();
    ((status, body), headers)
}

/// Runs `modelgate ARGS` with a config; returns exit code and stderr+stdout.
pub fn run_cli(config: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = command(dir.path());
    cmd.args(args).arg("--config").arg(&cfg);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A config with one OpenAI-compatible provider `up` at the mock upstream.
pub fn provider_block(name: &str, up: &Upstream, models: &[&str]) -> String {
    format!(
        "  {name}:\n    type: openai_compatible\n    base_url: {}\n    api_key: sk-test-{name}\n    models: [{}]\n",
        up.base_url(),
        models.join(", ")
    )
}
