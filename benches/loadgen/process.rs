//! The servers a comparison loads, each as its own process on 127.0.0.1: a hyperty node
//! (the bench's own `hyperty` binary), nats-server with its WebSocket listener, and the
//! plain socket.io 4 relay of `web/bench` on Node.js. Each is killed when its handle
//! drops, and its files are removed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::nats::NatsAuth;
use super::LoadError;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, LoadError> {
        let dir = std::env::temp_dir().join(format!("hyperty-{what}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process, killed (and waited for) when dropped.
struct Server(Child);

impl Server {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lost(what: &str, reason: impl std::fmt::Display) -> LoadError {
    LoadError::Lost {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// A node process started with a configuration file.
pub struct NodeProcess {
    child: Server,
    /// `ws://127.0.0.1:<port>/ws`, from the node's `listening on` line.
    pub ws_url: String,
    /// The HTTP address of the node.
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl NodeProcess {
    /// Starts `bin` on a free port with `config` (TOML) and `files` beside it
    /// (name, contents; the config may name them relative to `{dir}`, which is
    /// replaced by their directory).
    pub fn start(bin: &Path, config: &str, files: &[(&str, &str)]) -> Result<Self, LoadError> {
        let dir = TempDir::new("bench-node")?;
        let dir_text = dir.0.display().to_string();
        for (name, contents) in files {
            std::fs::write(dir.0.join(name), contents)?;
        }
        let cfg = dir.0.join("node.toml");
        std::fs::write(&cfg, config.replace("{dir}", &dir_text))?;
        // the node's log, and whatever it keeps in its working directory by
        // default, stay in `dir`: no two bench nodes share a store
        let log_path = dir.0.join("node.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Server(
            Command::new(bin)
                .args(["--listen", "127.0.0.1:0", "--config"])
                .arg(&cfg)
                .current_dir(&dir.0)
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .map_err(|e| lost(&format!("start {}", bin.display()), e))?,
        );
        let mut line = String::new();
        if let Some(out) = child.0.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let what = "node start";
        let ws_url = match line.trim().strip_prefix("listening on ") {
            Some(url) => url.to_owned(),
            None => {
                let _ = child.0.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(lost(
                    what,
                    format!(
                        "unexpected first line {line:?}; its log ends: {}",
                        tail.join(" | ")
                    ),
                ));
            }
        };
        let addr = ws_url
            .strip_prefix("ws://")
            .and_then(|a| a.strip_suffix("/ws"))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| lost(what, format!("unexpected URL {ws_url:?}")))?;
        Ok(NodeProcess {
            child,
            ws_url,
            addr,
            _dir: dir,
        })
    }

    /// Registers `user` at the node's identity provider and logs in: an ID token.
    pub async fn user_token(&self, user: &str, password: &str) -> Result<String, LoadError> {
        let body = serde_json::json!({"username": user, "password": password}).to_string();
        let (code, text) = post_json(self.addr, "/idp/users", &body).await?;
        if code != 201 {
            return Err(LoadError::Rejected {
                what: "POST /idp/users".into(),
                code: code.to_string(),
                frame: text,
            });
        }
        let (code, text) = post_json(self.addr, "/idp/login", &body).await?;
        let token = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["idToken"].as_str().map(str::to_owned));
        match token {
            Some(t) if code == 200 => Ok(t),
            _ => Err(LoadError::Rejected {
                what: "POST /idp/login".into(),
                code: code.to_string(),
                frame: text,
            }),
        }
    }
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux the project runs on
    Some(Duration::from_millis((utime + stime) * 10))
}

impl NodeProcess {
    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// One `POST` of a JSON body; the status code and the response body.
pub async fn post_json(to: SocketAddr, path: &str, body: &str) -> Result<(u16, String), LoadError> {
    let what = format!("POST {path}");
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(to).await?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {to}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| LoadError::Timeout {
            what: what.clone(),
            after: Duration::from_secs(30),
        })?
        .map_err(|e| lost(&what, e))?;
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|b| b.1.to_owned());
    Ok((code, body.unwrap_or_default()))
}

/// A nats-server process with a WebSocket listener and user/password authorization.
pub struct NatsProcess {
    child: Server,
    /// `ws://127.0.0.1:<port>`.
    pub ws_url: String,
    pub auth: NatsAuth,
    _dir: TempDir,
}

impl NatsProcess {
    /// Starts `bin` (nats-server) on random ports; answers once its WebSocket
    /// listener's port is known (nats-server writes it to its ports file).
    pub async fn start(bin: &str) -> Result<Self, LoadError> {
        let dir = TempDir::new("bench-nats")?;
        let auth = NatsAuth {
            user: "bench".into(),
            password: uuid::Uuid::new_v4().simple().to_string(),
        };
        let cfg = dir.0.join("nats.conf");
        // ping_interval: well past any run, so a subscriber busy reading never misses one
        std::fs::write(
            &cfg,
            format!(
                "listen: \"127.0.0.1:-1\"\nping_interval: \"10m\"\n\
                 max_pending: 268435456\n\
                 websocket {{\n  listen: \"127.0.0.1:-1\"\n  no_tls: true\n}}\n\
                 authorization {{\n  user: \"{}\"\n  password: \"{}\"\n}}\n",
                auth.user, auth.password
            ),
        )?;
        let mut child = Server(
            Command::new(bin)
                .arg("-c")
                .arg(&cfg)
                .arg("--ports_file_dir")
                .arg(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    lost(
                        &format!("start {bin}"),
                        format!("{e} (install it: apt-get install nats-server)"),
                    )
                })?,
        );
        let ports = dir.0.join(format!("nats-server_{}.ports", child.pid()));
        let until = Instant::now() + Duration::from_secs(10);
        // Polled until nats-server has written its ports file, bounded by `until`.
        let ws_url = loop {
            let found = std::fs::read_to_string(&ports)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["websocket"][0].as_str().map(str::to_owned));
            if let Some(url) = found {
                break url;
            }
            if let Ok(Some(status)) = child.0.try_wait() {
                return Err(lost("nats-server start", format!("exited with {status}")));
            }
            if Instant::now() > until {
                return Err(LoadError::Timeout {
                    what: "nats-server ports file".into(),
                    after: Duration::from_secs(10),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(NatsProcess {
            child,
            ws_url: ws_url.replace("0.0.0.0", "127.0.0.1"),
            auth,
            _dir: dir,
        })
    }
}

impl NatsProcess {
    /// nats-server's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// The plain socket.io 4 relay (`web/bench/relay.mjs`) running on Node.js.
pub struct RelayProcess {
    child: Server,
    /// `ws://127.0.0.1:<port>`, from the relay's `listening on` line.
    pub url: String,
}

impl RelayProcess {
    /// Starts `node <script>` on a free port; answers once it listens.
    pub async fn start(node: &str, script: &Path) -> Result<Self, LoadError> {
        let what = format!("start {node} {}", script.display());
        let modules = script.with_file_name("node_modules");
        if !modules.join("socket.io").is_dir() {
            return Err(lost(
                &what,
                format!(
                    "{} has no socket.io (run npm ci in {}, as scripts/test.sh does)",
                    modules.display(),
                    script
                        .parent()
                        .map(Path::display)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                ),
            ));
        }
        let mut child = Server(
            Command::new(node)
                .arg(script)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| lost(&what, format!("{e} (Node.js 20 or newer is needed)")))?,
        );
        let Some(out) = child.0.stdout.take() else {
            return Err(lost(&what, "no stdout"));
        };
        // Read on a blocking thread: the relay prints one line once it listens.
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map(|_| line)
        });
        let line = match tokio::time::timeout(Duration::from_secs(20), line).await {
            Ok(Ok(read)) => read?,
            Ok(Err(e)) => return Err(lost(&what, e)),
            Err(_) => {
                return Err(LoadError::Timeout {
                    what,
                    after: Duration::from_secs(20),
                })
            }
        };
        match line.trim().strip_prefix("listening on ") {
            Some(url) if url.starts_with("ws://127.0.0.1:") => Ok(RelayProcess {
                url: url.to_owned(),
                child,
            }),
            _ => Err(lost(&what, format!("unexpected first line {line:?}"))),
        }
    }

    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}
