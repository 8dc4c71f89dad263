//! `conn*`: SSH connections (`connconnect`, `connensure`,
//! `conndisconnect`, `connstatus`, `connlist`) and the AWS profiles of
//! this machine (`connlistaws`). The work is [`crate::conn`]'s; here the
//! params (a destination validated as it is parsed), the scope targets
//! (`host:<glob>`) and the answers.

use super::methods::{Ctx, Params};
use super::protocol::{INVALID_PARAMS, RpcError};
use super::scope::Target;
use crate::conn::{BadHost, ConnError, Destination, Status, aws};
use crate::state::AppState;
use serde::Deserialize;
use serde_json::{Value, json};
use std::num::NonZeroU16;

/// A `[user@]host` param, refused as it is parsed unless it is an ssh
/// destination (see [`Destination::parse`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct HostArg(Destination);

impl TryFrom<String> for HostArg {
    type Error = BadHost;
    fn try_from(s: String) -> Result<HostArg, BadHost> {
        Destination::parse(&s, None).map(HostArg)
    }
}

impl HostArg {
    /// The destination, on `port` if one is given.
    pub fn on(&self, port: Option<NonZeroU16>) -> Destination {
        match port {
            Some(p) => self.0.clone().with_port(p),
            None => self.0.clone(),
        }
    }
}

/// The scope target of a destination.
pub fn host_target(d: &Destination) -> Target {
    Target::Host {
        host: d.host_shown(),
        user: d.user().map(str::to_string),
    }
}

pub fn conn_error(e: ConnError) -> RpcError {
    RpcError::app(e.code(), e.message())
}

/// The environment of the ssh runs: the pane allow-list and the agent
/// socket.
fn env(state: &AppState) -> Vec<(String, String)> {
    crate::conn::ssh_env(&state.config(), &["SSH_AUTH_SOCK"], |v| {
        state.holds_secret(v)
    })
}

/// The host of a pane opened with `conn` (and `conn_port`).
pub fn pane_host(
    conn: &Option<HostArg>,
    port: Option<NonZeroU16>,
) -> Result<Option<Destination>, RpcError> {
    match conn {
        Some(h) => Ok(Some(h.on(port))),
        None if port.is_some() => Err(RpcError::new(
            INVALID_PARAMS,
            "invalid params: conn_port needs conn",
        )),
        None => Ok(None),
    }
}

/// Refuses, with `NOT_CONNECTED`, a pane on a destination whose master
/// is not up: a pane never connects by itself (it could not say why a
/// connection failed, and must never wait on one).
pub async fn require_connected(state: &AppState, dest: &Destination) -> Result<(), RpcError> {
    let info = state
        .conns()
        .check(&state.config(), dest, env(state))
        .await
        .map_err(conn_error)?;
    if info.status == Status::Connected {
        return Ok(());
    }
    Err(RpcError::app(
        "NOT_CONNECTED",
        format!(
            "{dest} is not connected{}: call connconnect or connensure first",
            info.message.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostParams {
    host: HostArg,
    port: Option<NonZeroU16>,
}

impl HostParams {
    fn dest(&self) -> Destination {
        self.host.on(self.port)
    }
}

impl Params for HostParams {
    fn targets(&mut self, _: &AppState) -> Result<Vec<Target>, RpcError> {
        Ok(vec![host_target(&self.dest())])
    }
}

/// `connconnect {host, port?}`: starts the master; an error if one is
/// up already (`ALREADY_CONNECTED`).
pub async fn connect(ctx: Ctx, p: HostParams) -> Result<Value, RpcError> {
    let dest = p.dest();
    let (info, _) = ctx
        .state
        .conns()
        .connect(&ctx.state.config(), &dest, env(&ctx.state), false)
        .await
        .map_err(conn_error)?;
    Ok(json!(info))
}

/// `connensure {host, port?}`: connects unless the master is up.
pub async fn ensure(ctx: Ctx, p: HostParams) -> Result<Value, RpcError> {
    let dest = p.dest();
    let (info, now) = ctx
        .state
        .conns()
        .connect(&ctx.state.config(), &dest, env(&ctx.state), true)
        .await
        .map_err(conn_error)?;
    let mut v = json!(info);
    v["connected_now"] = json!(now);
    Ok(v)
}

/// `conndisconnect {host, port?}`: `ssh -O exit`; nothing to do is not an
/// error (`was_connected: false`).
pub async fn disconnect(ctx: Ctx, p: HostParams) -> Result<Value, RpcError> {
    let dest = p.dest();
    let (info, was) = ctx
        .state
        .conns()
        .disconnect(&ctx.state.config(), &dest, env(&ctx.state))
        .await
        .map_err(conn_error)?;
    let mut v = json!(info);
    v["was_connected"] = json!(was);
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    host: Option<HostArg>,
    port: Option<NonZeroU16>,
}

impl Params for StatusParams {
    fn targets(&mut self, _: &AppState) -> Result<Vec<Target>, RpcError> {
        match &self.host {
            Some(h) => Ok(vec![host_target(&h.on(self.port))]),
            None if self.port.is_some() => Err(RpcError::new(
                INVALID_PARAMS,
                "invalid params for connstatus: port needs host",
            )),
            None => Ok(vec![Target::AllHosts]),
        }
    }
}

/// `connstatus {host?, port?}`: asks each known master (or the one
/// named, known or not) with `ssh -O check`.
pub async fn status(ctx: Ctx, p: StatusParams) -> Result<Value, RpcError> {
    let dests: Vec<Destination> = match &p.host {
        Some(h) => vec![h.on(p.port)],
        None => ctx
            .state
            .conns()
            .known()
            .into_iter()
            .map(|(d, _)| d)
            .collect(),
    };
    let mut out = Vec::new();
    for d in dests {
        let info = ctx
            .state
            .conns()
            .check(&ctx.state.config(), &d, env(&ctx.state))
            .await
            .map_err(conn_error)?;
        out.push(info);
    }
    Ok(json!({ "connections": out }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {}

impl Params for ListParams {
    fn targets(&mut self, _: &AppState) -> Result<Vec<Target>, RpcError> {
        Ok(vec![Target::AllHosts])
    }
}

/// `connlist`: the connections known since start, as last seen (no ssh
/// run; `connstatus` asks).
pub async fn list(ctx: Ctx, _: ListParams) -> Result<Value, RpcError> {
    let known: Vec<_> = ctx
        .state
        .conns()
        .known()
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    Ok(json!({ "connections": known }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsParams {}

super::methods::instance_wide!(AwsParams);

/// `connlistaws`: the AWS profiles of the daemon's user: names, region,
/// files, sign-in hints; never a key.
pub async fn list_aws(_: Ctx, _: AwsParams) -> Result<Value, RpcError> {
    let (config, credentials) = aws::default_files();
    let listing = tokio::task::spawn_blocking(move || aws::list_files(&config, &credentials))
        .await
        .map_err(|e| RpcError::from(crate::error::ApiError::internal(e)))?;
    Ok(json!(listing))
}
