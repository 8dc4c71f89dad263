//! Shared by the integration tests: start the real `agentbus` binary on
//! 127.0.0.1:0 with a temp data dir, talk to it over HTTP, run its CLI,
//! and open panes whose programs record what they receive.
#![allow(dead_code)]

pub mod pki;
pub mod tmux;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentbus")
}

/// The Python of the test venv (`scripts/test.sh` installs it).
pub fn python() -> PathBuf {
    let p = std::env::var_os("AGENTBUS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python")
        });
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test.sh`, which installs the Python test packages",
        p.display()
    );
    p
}

/// Runs `tests/python/<script>` with `args`; the JSON report it prints
/// as its last line.
pub async fn run_python(script: &str, args: Vec<String>) -> Value {
    let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(&args)
        .env_remove("AGENTBUS_URL")
        .env_remove("AGENTBUS_AGENT_TOKEN")
        .env_remove("AGENTBUS_AGENT_ID");
    run_for_report("the Python client", cmd).await
}

/// Runs a client program to its end; the JSON report it prints as its
/// last line (it must succeed).
pub async fn run_for_report(what: &str, mut cmd: Command) -> Value {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad report ({e}): {stdout}\n{stderr}"))
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub enum Cred {
    None,
    Key,
    Token(String),
    Header(&'static str, String),
}

pub struct Daemon {
    pub child: Child,
    pub url: String,
    pub key: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    config: Option<String>,
    extra_args: Vec<String>,
}

/// Polls `f` until it returns `Some`, or panics after `secs`.
pub async fn eventually<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_in(tempfile::tempdir().unwrap(), None)
    }

    /// Starts with a config file holding `toml`.
    pub fn start_with(toml: &str) -> Daemon {
        Self::start_in(tempfile::tempdir().unwrap(), Some(toml.to_string()))
    }

    fn spawn(dir: &Path, config: Option<&str>) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("daemon")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if let Some(text) = config {
            let path = dir.join("test-config.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.env_remove("AGENTBUS_URL")
            .env_remove("AGENTBUS_AUTH_KEY")
            .env_remove("AGENTBUS_AGENT_TOKEN")
            .env("AGENTBUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// Starts with extra arguments to `agentbus daemon`.
    pub fn start_args(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Self::spawn(dir.path(), None);
        cmd.args(args);
        let mut d = Self::finish_start(cmd, dir, None);
        d.extra_args = args.iter().map(|a| a.to_string()).collect();
        d
    }

    /// Starts with extra environment variables.
    pub fn start_env(env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Self::spawn(dir.path(), None);
        cmd.envs(env.iter().copied());
        Self::finish_start(cmd, dir, None)
    }

    /// Starts as user `nobody` (the test must run as root), on a data dir
    /// that user owns, with extra environment variables.
    pub fn start_as_nobody(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        chown_to_nobody(dir.path());
        let mut cmd = Self::spawn(dir.path(), None);
        cmd.envs(env.iter().copied())
            .args(args)
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/");
        Self::finish_start(cmd, dir, None)
    }

    pub fn start_in(dir: tempfile::TempDir, config: Option<String>) -> Daemon {
        let cmd = Self::spawn(dir.path(), config.as_deref());
        Self::finish_start(cmd, dir, config)
    }

    fn finish_start(mut cmd: Command, dir: tempfile::TempDir, config: Option<String>) -> Daemon {
        let mut child = cmd.spawn().expect("start the daemon");
        let url = first_line(&mut child);
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "first stdout line is the URL, got {url:?}"
        );
        let key = std::fs::read_to_string(dir.path().join("authkey"))
            .unwrap()
            .trim()
            .to_string();
        Daemon {
            child,
            url,
            key,
            dir,
            http: agentbus_daemon::tls::default_client(),
            config,
            extra_args: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `kill -9` the daemon.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new daemon on the same data dir (after `kill9`).
    pub fn restart(&mut self) {
        let mut child = Self::spawn(self.dir.path(), self.config.as_deref())
            .args(&self.extra_args)
            .spawn()
            .unwrap();
        self.url = first_line(&mut child);
        self.key = std::fs::read_to_string(self.dir.path().join("authkey"))
            .unwrap()
            .trim()
            .to_string();
        self.child = child;
    }

    /// Sends `sig` and waits for the process to end; returns its status.
    pub fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
        self.wait_exit()
    }

    /// Waits (at most 30 s) for the daemon process to end.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn request(&self, method: reqwest::Method, path: &str, cred: &Cred) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.url));
        match cred {
            Cred::None => req,
            Cred::Key => req.header("x-authkey", &self.key),
            Cred::Token(t) => req.header("authorization", format!("Bearer {t}")),
            Cred::Header(name, value) => req.header(*name, value),
        }
    }

    async fn finish(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request reaches the daemon");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON answer ({status}): {text:?}"));
        (status, body)
    }

    pub async fn get(&self, path: &str, cred: &Cred) -> (u16, Value) {
        Self::finish(self.request(reqwest::Method::GET, path, cred)).await
    }

    pub async fn post(&self, path: &str, body: &Value, cred: &Cred) -> (u16, Value) {
        Self::finish(self.request(reqwest::Method::POST, path, cred).json(body)).await
    }

    /// POSTs raw bytes (for malformed bodies).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, cred: &Cred) -> (u16, Value) {
        Self::finish(
            self.request(reqwest::Method::POST, path, cred)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn send(&self, method: &str, path: &str, cred: &Cred) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self.request(m.clone(), path, cred);
        let req = if m == reqwest::Method::POST {
            req.json(&json!({}))
        } else {
            req
        };
        Self::finish(req).await
    }

    /// Runs the CLI against this daemon (through its data dir).
    /// Mints an extra App API token for `agent` held to `scopes`
    /// (`agentbus token create`) and returns its secret.
    pub fn mint_token(&self, agent: &str, scopes: &[&str]) -> String {
        let mut args = vec!["token", "create", "--agent", agent];
        for s in scopes {
            args.extend(["--scope", s]);
        }
        let out = self.cli(&args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--data-dir").arg(self.dir.path()).args(args);
        cmd.env_remove("AGENTBUS_URL")
            .env_remove("AGENTBUS_AUTH_KEY")
            .env_remove("AGENTBUS_AGENT_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    }

    /// Opens `name` running `command`.
    pub async fn open(&self, name: &str, provider: &str, command: &[&str]) -> Value {
        let (status, body) = self
            .post(
                "/v1/agents",
                &json!({ "agent_id": name, "provider": provider, "command": command }),
                &Cred::Key,
            )
            .await;
        assert_eq!(status, 201, "open {name}: {body}");
        body
    }

    /// Waits until `line` is one of the last 200 lines of `name`'s pane.
    pub async fn wait_output_line(&self, name: &str, line: &str) {
        let path = format!("/v1/agents/{name}/output?lines=200");
        eventually(&format!("{line:?} in {name}'s output"), 20, async || {
            let (_, b) = self.get(&path, &Cred::Key).await;
            b["lines"]
                .as_array()?
                .iter()
                .any(|l| l.as_str() == Some(line))
                .then_some(())
        })
        .await;
    }

    /// Opens a pane running the byte-recording sink and waits until it has
    /// enabled bracketed paste (unless `bracketed` is false).
    pub async fn open_sink(&self, name: &str, provider: &str, bracketed: bool) -> Sink {
        let out = self.dir.path().join(format!("{name}.sink"));
        let out_s = out.display().to_string();
        let mut cmd = vec![bin(), "probe", "sink", "--out", &out_s];
        if !bracketed {
            cmd.push("--no-bracketed");
        }
        self.open(name, provider, &cmd).await;
        self.wait_output_line(name, "sink ready").await;
        if bracketed {
            let status = format!("/v1/agents/{name}");
            eventually("bracketed paste on", 10, async || {
                let (_, b) = self.get(&status, &Cred::Key).await;
                b["bracketed_paste"].as_bool()?.then_some(())
            })
            .await;
        }
        Sink { path: out }
    }

    pub async fn jekt(&self, target: &str, message: &str, cred: &Cred) -> (u16, Value) {
        self.post(
            "/agentmux/reactive/inject",
            &json!({ "target_agent": target, "message": message }),
            cred,
        )
        .await
    }

    /// Sends a message.
    pub async fn msg(&self, to: &str, body: &str, cred: &Cred) -> (u16, Value) {
        self.post("/v1/messages", &json!({ "to": to, "body": body }), cred)
            .await
    }

    /// Reads a mailbox page; `query` is appended as is (`peek=true&...`).
    pub async fn inbox(&self, agent: &str, query: &str, cred: &Cred) -> (u16, Value) {
        self.get(&format!("/v1/inbox/{agent}?{query}"), cred).await
    }

    /// The ids of a page's messages.
    pub fn ids(page: &Value) -> Vec<String> {
        page["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m["id"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Registers an external agent; returns its token.
    /// The token of `name`'s own pane, opened as `opened` says (binding
    /// the name to its block again mints a new one).
    pub async fn own_token(&self, name: &str, opened: &Value) -> String {
        let (status, reg) = self
            .post(
                "/agentmux/reactive/register",
                &json!({"agent_id": name, "block_id": opened["block_id"]}),
                &Cred::Key,
            )
            .await;
        assert_eq!(status, 200, "{reg}");
        reg["token"].as_str().unwrap().to_string()
    }

    /// Arguments for `tests/python/app_api.py`: the scenario, this
    /// daemon's URL and key, then `extra`.
    pub fn app_api_args(&self, scenario: &str, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            scenario.to_string(),
            "--url".into(),
            self.url.clone(),
            "--key".into(),
            self.key.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    pub async fn register(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/agentmux/reactive/register",
                &json!({ "agent_id": name }),
                &Cred::Key,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    // A relay node on a JetStream cluster that just lost a node waits
    // for its leaders before it starts.
    rx.recv_timeout(Duration::from_secs(90))
        .expect("the daemon printed its URL")
        .trim()
        .to_string()
}

/// What a sink pane's program has read from its terminal.
pub struct Sink {
    pub path: PathBuf,
}

impl Sink {
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }

    /// Waits until the program has read `n` carriage returns.
    pub async fn wait_submits(&self, n: usize) -> Vec<u8> {
        eventually(
            &format!("{n} submits in {}", self.path.display()),
            30,
            async || {
                let b = self.bytes();
                (b.iter().filter(|&&c| c == b'\r').count() >= n).then_some(b)
            },
        )
        .await
    }
}

/// The uid and gid of `nobody` / `nogroup` on Debian.
pub const NOBODY: u32 = 65_534;

/// Whether this test runs as root (and may act as another user).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Gives `path` to `nobody`.
pub fn chown_to_nobody(path: &Path) {
    let id = Some(nix::unistd::Uid::from_raw(NOBODY));
    nix::unistd::chown(path, id, Some(nix::unistd::Gid::from_raw(NOBODY))).unwrap();
}

/// Splits `haystack` on `needle`.
pub fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// A free TCP port on loopback (taken back at once; a test races only
/// itself for it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `nats-server` with JetStream, on loopback ports, keeping its
/// data under `dir`; killed on drop. With `cluster`, it is node `i` of
/// a cluster whose route ports are listed.
pub struct Nats {
    pub child: Child,
    pub port: u16,
    args: Vec<String>,
}

impl Nats {
    pub fn start(dir: &Path) -> Nats {
        Self::start_node(dir, "n0", free_port(), None)
    }

    /// A single node that speaks only TLS, with this certificate and key.
    pub fn start_tls(dir: &Path, cert: &str, key: &str) -> Nats {
        let port = free_port();
        let mut args = Self::node_args(dir, "tls0", port);
        args.extend(["--tls", "--tlscert", cert, "--tlskey", key].map(String::from));
        let nats = Nats {
            child: Self::spawn(&args),
            port,
            args,
        };
        nats.wait_ready();
        nats
    }

    fn node_args(dir: &Path, name: &str, port: u16) -> Vec<String> {
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.join(format!("nats-{name}")).display().to_string(),
            "-n".into(),
            name.into(),
        ]
    }

    /// One node of a cluster: `routes` are every node's route port, its
    /// own `route_port` among them.
    pub fn start_node(dir: &Path, name: &str, port: u16, cluster: Option<(u16, &[u16])>) -> Nats {
        let mut args = Self::node_args(dir, name, port);
        if let Some((route_port, routes)) = cluster {
            let list: Vec<String> = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            args.extend([
                "--cluster_name".into(),
                "agentbus-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{route_port}"),
                "--routes".into(),
                list.join(","),
            ]);
        }
        let child = Self::spawn(&args);
        let nats = Nats { child, port, args };
        nats.wait_ready();
        nats
    }

    fn spawn(args: &[String]) -> Child {
        Command::new("nats-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed (scripts/test.sh installs it)")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server came up on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.args);
        self.wait_ready();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The relay tests run on SQLite, or on NATS JetStream when
/// `AGENTBUS_TEST_RELAY=nats` (scripts/test.sh runs them both ways).
pub fn relay_on_nats() -> bool {
    std::env::var("AGENTBUS_TEST_RELAY").is_ok_and(|v| v == "nats")
}

/// A relay started from the real binary on 127.0.0.1:0 with a temp
/// database (or, on NATS, its own private nats-server); killed on drop.
pub struct Relay {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    pub http: reqwest::Client,
    pub nats: Option<Nats>,
}

impl Relay {
    pub fn start(args: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let nats = relay_on_nats().then(|| Nats::start(dir.path()));
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let store = match &nats {
            Some(n) => vec!["--nats".to_string(), n.url()],
            None => vec![
                "--db".to_string(),
                dir.path().join("relay.db").display().to_string(),
            ],
        };
        args.splice(0..0, store);
        let mut relay = Self::node("127.0.0.1:0", args);
        relay.dir = dir;
        relay.nats = nats;
        relay
    }

    /// A relay node on `listen` with exactly `args` (which start with
    /// where it keeps its data: `--db FILE` or `--nats URLS`).
    pub fn node(listen: &str, args: Vec<String>) -> Relay {
        let mut child = Self::command(listen, &args)
            .spawn()
            .expect("start the relay");
        let url = first_line(&mut child);
        Relay {
            child,
            url,
            dir: tempfile::tempdir().unwrap(),
            args,
            http: agentbus_daemon::tls::default_client(),
            nats: None,
        }
    }

    fn command(listen: &str, args: &[String]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("relay")
            .arg("--listen")
            .arg(listen)
            .args(args)
            .env("AGENTBUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    /// `--db FILE` or `--nats URL`: where this relay keeps its data.
    pub fn store_args(&self) -> Vec<String> {
        self.args[..2].to_vec()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("relay.db")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same database and port (after `kill9`), so
    /// clients configured with its URL find it again.
    pub fn restart(&mut self) {
        let addr = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |u| u.1)
            .to_string();
        let mut child = Self::command(&addr, &self.args).spawn().unwrap();
        let url = first_line(&mut child);
        assert_eq!(url, self.url, "the relay came back on its port");
        self.child = child;
    }

    /// `agentbus relay token ...` on this relay's data; the secret.
    pub fn token(&self, args: &[&str]) -> String {
        let out = Command::new(bin())
            .arg("relay")
            .args(self.store_args())
            .arg("token")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub async fn send(&self, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/send", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// One value of `/metrics` (`None` while the relay does not answer).
    pub async fn metric(&self, name: &str) -> Option<u64> {
        let resp = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?;
        let text = resp.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))?
            .parse()
            .ok()
    }

    pub async fn get(&self, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path_and_query}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `agentbus trust ...` on the data dir `dir`: its output (stdout and
/// stderr); it must succeed.
pub fn trust_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("trust")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("AGENTBUS_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "trust {args:?}: {text}");
    text
}

impl Daemon {
    /// `agentbus trust ...` on this daemon's data dir.
    pub fn trust(&self, args: &[&str]) -> String {
        trust_in(self.data_dir(), args)
    }

    /// This instance's public key, as `agentbus trust key` prints it.
    pub fn public_key(&self) -> String {
        self.trust(&["key"])
            .lines()
            .find_map(|l| l.strip_prefix("key:"))
            .unwrap()
            .trim()
            .to_string()
    }
}

/// A relayed jekt from alice to bob, unsigned, as a daemon hands it over.
pub fn relay_jekt(body: &str) -> agentbus_proto::relay::RelaySend {
    agentbus_proto::relay::RelaySend {
        id: agentbus_proto::MessageId::new(),
        from: "alice".into(),
        to: agentbus_proto::AgentId::parse("bob").unwrap(),
        kind: agentbus_proto::relay::RelayKind::Jekt,
        body: body.into(),
        thread_id: None,
        reply_to: None,
        tier: None,
        priority: None,
        origin_trust: None,
        signature: None,
    }
}
