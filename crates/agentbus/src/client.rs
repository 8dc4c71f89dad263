//! How CLI commands reach a daemon.
//!
//! Order of discovery:
//! 1. `--data-dir DIR` on the command line: `DIR/daemon.json` + `DIR/authkey`;
//! 2. `AGENTBUS_URL` with `AGENTBUS_AUTH_KEY` (admin) or
//!    `AGENTBUS_AGENT_TOKEN` (that agent) — what a hosted pane has;
//! 3. `AGENTBUS_DATA_DIR`, else `~/.agentbus`: `daemon.json` + `authkey`.

use agentbus_daemon::config::default_data_dir;
use agentbus_daemon::instance::{AUTHKEY_FILE, read_discovery};
use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub enum Credential {
    InstanceKey(String),
    AgentToken(String),
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Credential,
}

pub use agentbus_proto::api::ApiFailure;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The data dir a command means: the flag, else `AGENTBUS_DATA_DIR`, else
/// the default.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| env("AGENTBUS_DATA_DIR").map(PathBuf::from))
        .unwrap_or_else(default_data_dir)
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence; EPERM means it exists but is not ours.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

impl Client {
    pub fn discover(data_dir_flag: Option<&Path>) -> anyhow::Result<Client> {
        if data_dir_flag.is_none()
            && let Some(url) = env("AGENTBUS_URL")
        {
            let credential = match (env("AGENTBUS_AUTH_KEY"), env("AGENTBUS_AGENT_TOKEN")) {
                (Some(k), _) => Credential::InstanceKey(k),
                (None, Some(t)) => Credential::AgentToken(t),
                (None, None) => bail!(
                    "AGENTBUS_URL is set but neither AGENTBUS_AUTH_KEY nor AGENTBUS_AGENT_TOKEN is"
                ),
            };
            return Ok(Self::new(url, credential));
        }
        let dir = data_dir(data_dir_flag);
        let Some(found) = read_discovery(&dir) else {
            bail!(
                "no agentbus daemon is running for {} (start one with `agentbus daemon`, or point --data-dir / AGENTBUS_URL at one)",
                dir.display()
            );
        };
        if !pid_alive(found.pid) {
            bail!(
                "the daemon recorded in {} (pid {}) is not running; start a new one with `agentbus daemon`",
                dir.join("daemon.json").display(),
                found.pid
            );
        }
        let key_path = dir.join(AUTHKEY_FILE);
        let key = std::fs::read_to_string(&key_path)
            .with_context(|| format!("failed to read the instance key {}", key_path.display()))?;
        Ok(Self::new(
            found.url,
            Credential::InstanceKey(key.trim().to_string()),
        ))
    }

    pub fn new(base: String, credential: Credential) -> Client {
        Client {
            http: agentbus_daemon::tls::default_client(),
            base: base.trim_end_matches('/').to_string(),
            credential,
        }
    }

    /// The header that carries this client's credential.
    pub fn auth_header(&self) -> (&'static str, String) {
        match &self.credential {
            Credential::InstanceKey(k) => ("x-authkey", k.clone()),
            Credential::AgentToken(t) => ("authorization", format!("Bearer {t}")),
        }
    }

    /// Sends `req` with this client's credential; an error status becomes
    /// an [`ApiFailure`] carrying the daemon's code and message.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let (name, value) = self.auth_header();
        let resp = req
            .header(name, value)
            .send()
            .await
            .with_context(|| format!("failed to reach the daemon at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(ApiFailure::from_body(status, &bytes, "http_error").into())
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let bytes = self
            .call(req)
            .await?
            .bytes()
            .await
            .context("failed to read the daemon's answer")?;
        serde_json::from_slice(&bytes).context("the daemon's answer is not what this CLI expects")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// GET with query parameters, encoded by `Url`.
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<T> {
        let mut url =
            reqwest::Url::parse(&format!("{}{path}", self.base)).context("bad daemon URL")?;
        url.query_pairs_mut().extend_pairs(query);
        self.send(self.http.get(url)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// Performs `call` (an MCP tool's request); the answer's JSON, or the
    /// daemon's error — a daemon that cannot be reached is status 0.
    pub async fn request(
        &self,
        call: &agentbus_mcp::ApiCall,
    ) -> Result<serde_json::Value, ApiFailure> {
        let url = format!("{}{}", self.base, call.path_and_query());
        let method =
            reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|e| ApiFailure {
                status: 0,
                code: "invalid_method".into(),
                message: e.to_string(),
            })?;
        let mut req = self.http.request(method, url);
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        match self.send(req).await {
            Ok(v) => Ok(v),
            Err(e) => Err(match e.downcast::<ApiFailure>() {
                Ok(f) => f,
                Err(e) => ApiFailure {
                    status: 0,
                    code: "unreachable".into(),
                    message: format!("{e:#}"),
                },
            }),
        }
    }

    /// Who this client is, when it holds an agent token and the pane's
    /// `AGENTBUS_AGENT_ID` says so.
    pub fn own_agent(&self) -> Option<String> {
        match self.credential {
            Credential::AgentToken(_) => env("AGENTBUS_AGENT_ID"),
            Credential::InstanceKey(_) => None,
        }
    }

    /// Starts a streaming GET; the caller reads the body chunk by chunk.
    pub async fn get_stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `ws://` form of the base URL plus `path`.
    pub fn ws_url(&self, path: &str) -> String {
        let base = self
            .base
            .strip_prefix("https://")
            .map(|rest| format!("wss://{rest}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|rest| format!("ws://{rest}"))
            })
            .unwrap_or_else(|| self.base.clone());
        format!("{base}{path}")
    }
}
