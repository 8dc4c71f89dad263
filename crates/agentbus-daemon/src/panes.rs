//! Opening, registering, stopping and forgetting agents and their panes.
//! The HTTP routes call these; so will the WebSocket App API.

use crate::agents::PaneRecord;
use crate::error::ApiError;
use crate::state::{AppState, AuditRecord};
use agentbus_proto::api::{
    AgentState, OpenRequest, OpenResponse, Provider, RegisterRequest, RegisterResponse,
    StopResponse, TmuxPane, UnregisterResponse,
};
use agentbus_proto::event::EventKind;
use agentbus_proto::{AgentId, BlockId, now_ms};
use agentbus_term::tmux::{PaneRef, Server};
use agentbus_term::{Pane, PaneSpec, TermError, TmuxSpec};
use std::time::Duration;

/// Refuses environment variables a caller may not give a pane: invalid
/// names, the daemon's own (`AGENTBUS_*`), and any value that is a secret
/// of this daemon.
pub fn check_env(
    state: &AppState,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    for (k, v) in env {
        let valid_key = !k.is_empty() && !k.contains('=') && !k.contains('\0');
        if !valid_key || v.contains('\0') {
            return Err(ApiError::bad_request(
                "invalid_env",
                format!(
                    "environment variable {} is invalid: names must be non-empty without '=' or NUL, values without NUL",
                    agentbus_proto::ids::escape_for_display(k, 40)
                ),
            ));
        }
        if k.starts_with(crate::pane_env::DAEMON_PREFIX) {
            return Err(ApiError::bad_request(
                "invalid_env",
                format!(
                    "{} is set by the daemon and cannot be given",
                    agentbus_proto::ids::escape_for_display(k, 40)
                ),
            ));
        }
        if state.holds_secret(v) {
            return Err(ApiError::bad_request(
                "invalid_env",
                format!(
                    "refusing to put an agentbus credential into a pane's environment ({})",
                    agentbus_proto::ids::escape_for_display(k, 40)
                ),
            ));
        }
    }
    Ok(())
}

/// The whole environment of a new pane (see [`crate::pane_env`]). A
/// pane on a host runs `ssh` here: it gets the allow-list only (the
/// request's variables are set on the host, see [`crate::conn`]), no
/// `AGENTBUS_*` variable and no token: nothing of this daemon's reaches
/// the host beyond what the allow-list passes.
fn pane_env(state: &AppState, launch: &Launch, agent: Option<&AgentId>) -> Vec<(String, String)> {
    let config = state.config();
    let daemon_env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let mut env =
        crate::pane_env::pass_through(daemon_env, &config.env_pass(launch.provider), |v| {
            state.holds_secret(v)
        });
    if launch.conn.is_some() {
        return env;
    }
    let mut set = |k: &str, v: String| match env.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k.to_string(), v)),
    };
    for (k, v) in &launch.env {
        set(k, v.clone());
    }
    set("AGENTBUS_URL", state.url().to_string());
    if let Some(id) = agent {
        set("AGENTBUS_AGENT_ID", id.to_string());
        set("AGENTBUS_AGENT_TOKEN", state.auth().mint(id));
        if launch.provider == Provider::Codex {
            // Its own home, so that its MCP server is its own (see
            // `codex_home`).
            let requested = launch
                .env
                .iter()
                .find(|(k, _)| k.as_str() == "CODEX_HOME")
                .map(|(_, v)| v.as_str());
            let home = crate::codex_home::user_home(requested)
                .map(|user| crate::codex_home::prepare(&config.daemon.data_dir, id, &user));
            match home {
                Some(Ok(dir)) => set("CODEX_HOME", dir.display().to_string()),
                Some(Err(e)) => {
                    tracing::warn!(agent = %id, error = %e, "no Codex home of its own for this pane");
                }
                None => {}
            }
        }
    }
    env
}

fn spawn_error(e: TermError) -> ApiError {
    match e {
        TermError::Spawn { .. } => ApiError::bad_request("spawn_failed", e.to_string()),
        TermError::BadCwd(_) => ApiError::bad_request("invalid_cwd", e.to_string()),
        TermError::BadSize { .. } => ApiError::bad_request("invalid_size", e.to_string()),
        other => ApiError::internal(other),
    }
}

/// How often an adopted tmux pane is looked at (liveness, activity).
const TMUX_POLL: Duration = Duration::from_millis(250);

/// Starts `req.command` in a new pane as agent `req.agent_id`, or with
/// `req.tmux` adopts that tmux pane. Idempotent: an agent whose pane is
/// running is returned as is (`created: false`).
pub async fn open(
    state: &AppState,
    actor: &str,
    req: OpenRequest,
) -> Result<OpenResponse, ApiError> {
    open_on(state, actor, req, None).await
}

/// [`open`], the program run on host `conn` (through its ssh master)
/// when one is given.
pub async fn open_on(
    state: &AppState,
    actor: &str,
    req: OpenRequest,
    conn: Option<crate::conn::Destination>,
) -> Result<OpenResponse, ApiError> {
    check_env(state, &req.env)?;
    let tmux = req.tmux.as_ref().map(tmux_ref).transpose()?;
    if tmux.is_some() && conn.is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "a tmux pane cannot be opened on a connection",
        ));
    }
    if tmux.is_some() && !req.command.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give either command (a program to start) or tmux (a pane to adopt), not both",
        ));
    }
    let _one_at_a_time = state.open_lock().lock().await;
    let id = req.agent_id.clone();
    if let Some(existing) = state.agents().pane_of(&id)
        && existing.pane.is_running()
    {
        if tmux.is_some() && existing.pane.tmux() != tmux.as_ref() {
            return Err(ApiError::conflict(
                "agent_exists",
                format!(
                    "{id} is already open in another pane ({}); stop it first",
                    existing.block
                ),
            ));
        }
        return Ok(OpenResponse {
            agent_id: id,
            block_id: existing.block,
            provider: existing.provider,
            created: false,
            pid: existing.pane.pid(),
            token: None,
        });
    }
    check_peer_name(state, &id)?;
    let block = BlockId::new();
    let started = match &tmux {
        Some(pane) => adopt(state, block, &id, pane, req.provider)
            .map(|(started, token)| (started, Some(token))),
        None => start(
            state,
            block,
            Some(&id),
            &Launch {
                provider: req
                    .provider
                    .unwrap_or_else(|| Provider::guess(&req.command)),
                command: req.command.clone(),
                cwd: req.cwd.clone(),
                env: req.env.clone(),
                rows: req.rows,
                cols: req.cols,
                conn: conn.clone(),
            },
        )
        .map(|started| (started, None)),
    };
    let (started, token) = match started {
        Ok(r) => r,
        Err(err) => {
            if state.agents().get(&id).is_none() {
                state.auth().revoke(&id);
            }
            state
                .audit(
                    AuditRecord::new(actor, "open", Some(id.as_str()), "failed")
                        .detail(err.message.clone()),
                )
                .await;
            return Err(err);
        }
    };
    let pid = started.record.pane.pid();
    let provider = started.record.provider;
    let replaced = state.agents().add_pane(&id, started.record.clone());
    started.follow_exit(state);
    if let Some(old) = replaced {
        retire(state, old);
    }
    state.events().publish(EventKind::BlockCreated {
        block_id: block,
        agent_id: Some(id.clone()),
        provider: Some(provider),
        pid,
        view: None,
    });
    state.events().publish(EventKind::AgentRegistered {
        agent_id: id.clone(),
        block_id: Some(block),
    });
    state
        .store()
        .remember_agent(id.to_string(), now_ms())
        .await?;
    publish(state, &id);
    crate::hold::kick(state, &id);
    // The program's name only: arguments may carry secrets.
    let mut what = match (&req.tmux, req.command.first()) {
        (Some(t), _) => format!("tmux={} socket={}", t.pane_id, t.socket),
        (None, Some(program)) => {
            format!("program={}", program.rsplit('/').next().unwrap_or_default())
        }
        (None, None) => String::new(),
    };
    if let Some(c) = &conn {
        what.push_str(&format!(" conn={}", c.shown()));
    }
    state
        .audit(
            AuditRecord::new(actor, "open", Some(id.as_str()), "ok")
                .detail(format!("block={block} provider={provider} {what}")),
        )
        .await;
    Ok(OpenResponse {
        agent_id: id,
        block_id: block,
        provider,
        created: true,
        pid,
        token,
    })
}

/// Checks a tmux pane reference from a request: an absolute path to a
/// socket of this user's, a `%N` pane id, a pid.
fn tmux_ref(t: &TmuxPane) -> Result<PaneRef, ApiError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let bad = |msg: String| ApiError::bad_request("invalid_tmux", msg);
    let path = std::path::Path::new(&t.socket);
    if !path.is_absolute() {
        return Err(bad(format!(
            "tmux.socket must be an absolute path, got {:?}",
            t.socket
        )));
    }
    let meta =
        std::fs::metadata(path).map_err(|e| bad(format!("tmux.socket {}: {e}", t.socket)))?;
    if !meta.file_type().is_socket() {
        return Err(bad(format!("tmux.socket {} is not a socket", t.socket)));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(bad(format!(
            "tmux.socket {} belongs to another user",
            t.socket
        )));
    }
    let digits = t.pane_id.strip_prefix('%').unwrap_or_default();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "tmux.pane_id must be a pane id like %3, got {:?}",
            t.pane_id
        )));
    }
    if t.pane_pid == 0 {
        return Err(bad("tmux.pane_pid must be a process id".into()));
    }
    Ok(PaneRef {
        server: Server::at(&t.socket),
        id: t.pane_id.clone(),
        pid: t.pane_pid,
    })
}

/// Takes tmux pane `pane` as agent `id`'s terminal. Returns the record and
/// the agent's new token (nothing can put it in the pane's environment).
fn adopt(
    state: &AppState,
    block: BlockId,
    id: &AgentId,
    pane: &PaneRef,
    provider: Option<Provider>,
) -> Result<(Started, String), ApiError> {
    if let Some(other) = state
        .agents()
        .all_panes()
        .into_iter()
        .find(|r| r.pane.is_running() && r.pane.tmux() == Some(pane))
    {
        let names = state.agents().names_of(&other.block);
        return Err(ApiError::conflict(
            "tmux_pane_taken",
            format!(
                "tmux pane {} is already the terminal of {}",
                pane.id,
                names
                    .first()
                    .map_or_else(|| other.block.to_string(), ToString::to_string)
            ),
        ));
    }
    let unavailable = |e: TermError| ApiError::bad_request("tmux_pane_unavailable", e.to_string());
    let info = pane
        .server
        .pane(&pane.id)
        .map_err(|e| unavailable(TermError::Tmux(e.to_string())))?;
    let provider = provider.unwrap_or_else(|| Provider::guess(std::slice::from_ref(&info.command)));
    let config = state.config();
    let adopted = Pane::adopt_tmux(
        TmuxSpec {
            label: id.to_string(),
            pane: pane.clone(),
            profile: config.profile(provider),
            input_timeout: Duration::from_millis(config.panes.input_timeout_ms),
            poll: TMUX_POLL,
        },
        &info,
    )
    .map_err(unavailable)?;
    let token = state.auth().mint(id);
    let (exit_recorded_tx, exit_recorded) = tokio::sync::watch::channel(false);
    Ok((
        Started {
            record: PaneRecord {
                block,
                pane: adopted,
                provider,
                command: Vec::new(),
                cwd: Some(info.cwd),
                env: Default::default(),
                conn: None,
                created_ms: now_ms(),
                exit_recorded,
            },
            exit_recorded: exit_recorded_tx,
        },
        token,
    ))
}

/// What a pane runs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub provider: Provider,
    pub command: Vec<String>,
    pub cwd: Option<String>,
    pub env: std::collections::BTreeMap<String, String>,
    pub rows: Option<u16>,
    pub cols: Option<u16>,
    /// The host to run it on, through its ssh master: the PTY here runs
    /// `ssh -tt` (see [`crate::conn`]).
    pub conn: Option<crate::conn::Destination>,
}

/// Spawns `launch` in a new PTY as block `block` and follows its exit.
/// With `agent`, the pane gets that agent's name and a fresh token.
pub fn start(
    state: &AppState,
    block: BlockId,
    agent: Option<&AgentId>,
    launch: &Launch,
) -> Result<Started, ApiError> {
    if launch.command.is_empty() || launch.command[0].is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "command must not be empty",
        ));
    }
    let config = state.config();
    let (command, cwd) = match &launch.conn {
        None => (launch.command.clone(), launch.cwd.as_ref().map(Into::into)),
        Some(dest) => (
            state
                .conns()
                .pane_argv(
                    &config,
                    dest,
                    &launch.command,
                    launch.cwd.as_deref(),
                    &launch.env,
                )
                .map_err(|m| ApiError::bad_request("invalid_conn_command", m))?,
            None,
        ),
    };
    let spec = PaneSpec {
        label: agent.map_or_else(|| block.to_string(), ToString::to_string),
        command,
        cwd,
        env: pane_env(state, launch, agent),
        rows: launch.rows.unwrap_or(config.panes.rows),
        cols: launch.cols.unwrap_or(config.panes.cols),
        scrollback_lines: config.panes.scrollback_lines,
        profile: config.profile(launch.provider),
        input_timeout: Duration::from_millis(config.panes.input_timeout_ms),
        max_parse_backlog: config.panes.max_parse_backlog_bytes,
    };
    let pane = Pane::spawn(spec).map_err(spawn_error)?;
    let (exit_recorded_tx, exit_recorded) = tokio::sync::watch::channel(false);
    Ok(Started {
        record: PaneRecord {
            block,
            pane,
            provider: launch.provider,
            command: launch.command.clone(),
            cwd: launch.cwd.clone(),
            env: launch.env.clone(),
            conn: launch.conn.clone(),
            created_ms: now_ms(),
            exit_recorded,
        },
        exit_recorded: exit_recorded_tx,
    })
}

/// A pane just spawned. Its exit is followed once the caller has put the
/// record in the table ([`Started::follow_exit`]), so the exit finds the
/// names bound to it.
pub struct Started {
    pub record: PaneRecord,
    exit_recorded: tokio::sync::watch::Sender<bool>,
}

impl Started {
    pub fn follow_exit(self, state: &AppState) {
        watch_exit(
            state.clone(),
            self.record.block,
            self.record.pane,
            self.exit_recorded,
        );
    }
}

/// Tells the other instances of this user that `id` lives here.
fn publish(state: &AppState, id: &AgentId) {
    if let (Some(r), Some(rec)) = (state.registry(), state.agents().get(id)) {
        r.publish(id, rec.block);
    }
}

/// Refuses a name that a live peer instance of this user already hosts:
/// names are unique across instances, never guessed between them.
fn check_peer_name(state: &AppState, id: &AgentId) -> Result<(), ApiError> {
    match state.registry().and_then(|r| r.lookup(id)) {
        Some(e) => Err(ApiError::conflict(
            "agent_exists",
            format!(
                "{id} is running on another instance ({}); stop it there first",
                e.local_url
            ),
        )
        .with_details(serde_json::json!({ "instance": e.local_url }))),
        None => Ok(()),
    }
}

/// Announces and audits the pane's exit when it happens, then raises
/// `recorded` (shutdown waits for it before closing the store).
fn watch_exit(
    state: AppState,
    block: BlockId,
    pane: Pane,
    recorded: tokio::sync::watch::Sender<bool>,
) {
    tokio::spawn(async move {
        let exit = pane.exited().await;
        state.agents().changed();
        // Its processes are no longer the tracker's business.
        state.tracker().forget(&block);
        let names = state.agents().names_of(&block);
        // Not reachable here any more: peers stop forwarding to it.
        if let Some(r) = state.registry() {
            for n in &names {
                r.withdraw(n);
            }
        }
        let agent = names.into_iter().next();
        state.events().publish(EventKind::BlockExited {
            block_id: block,
            agent_id: agent.clone(),
            exit_code: exit.code,
            signal: exit.signal.clone(),
        });
        let mut how = match (&exit.code, &exit.signal, &exit.reason) {
            (Some(c), _, _) => format!("exit_code={c}"),
            (None, Some(s), _) => format!("signal={s}"),
            (None, None, Some(r)) => r.clone(),
            (None, None, None) => "unknown".into(),
        };
        if let (Some(reason), true) = (&exit.reason, exit.code.is_some() || exit.signal.is_some()) {
            how = format!("{how} ({reason})");
        }
        state
            .audit(
                AuditRecord::new(
                    "daemon",
                    "exit",
                    agent.as_ref().map(AgentId::as_str),
                    "exited",
                )
                .detail(format!("block={block} {how}")),
            )
            .await;
        // A tmux pane that ended is not coming back under that name: its
        // agents are unregistered (a daemon shutdown only lets it go).
        if pane.tmux().is_some() && !*state.shutdown_signal().borrow() {
            for name in state.agents().names_of(&block) {
                if let Err(e) = unregister(&state, "daemon", &name).await {
                    tracing::warn!(agent = %name, error = %e.message, "unregistering a closed tmux pane's agent failed");
                }
            }
        }
        let _ = recorded.send(true);
    });
}

/// Ends a pane no name points to any more, in the background.
pub fn retire(state: &AppState, record: PaneRecord) {
    let grace = Duration::from_millis(state.config().panes.stop_grace_ms);
    tokio::spawn(async move {
        record.pane.stop(false, grace).await;
    });
}

/// Binds a name to an existing pane, or registers an external agent (no
/// pane). Mints the agent's token and returns it.
pub async fn register(
    state: &AppState,
    actor: &str,
    req: RegisterRequest,
) -> Result<RegisterResponse, ApiError> {
    let _one_at_a_time = state.open_lock().lock().await;
    let id = req.agent_id.clone();
    if let Some(current) = state.agents().pane_of(&id)
        && current.pane.is_running()
        && Some(current.block) != req.block_id
    {
        return Err(ApiError::conflict(
            "agent_exists",
            format!(
                "{id} is the name of running pane {}; unregister or stop it first",
                current.block
            ),
        ));
    }
    check_peer_name(state, &id)?;
    let orphan = state
        .agents()
        .bind(&id, req.block_id)
        .map_err(|e| ApiError::not_found("block_not_found", e.to_string()))?;
    if let Some(old) = orphan {
        retire(state, old);
    }
    let token = state.auth().mint(&id);
    state.events().publish(EventKind::AgentRegistered {
        agent_id: id.clone(),
        block_id: req.block_id,
    });
    state
        .store()
        .remember_agent(id.to_string(), now_ms())
        .await?;
    publish(state, &id);
    crate::hold::kick(state, &id);
    let detail = match req.block_id {
        Some(b) => format!("block={b}"),
        None => "external".into(),
    };
    state
        .audit(AuditRecord::new(actor, "register", Some(id.as_str()), "ok").detail(detail))
        .await;
    Ok(RegisterResponse {
        agent_id: id,
        block_id: req.block_id,
        token,
    })
}

/// Forgets a name and revokes its token. A pane left with no name is
/// stopped.
pub async fn unregister(
    state: &AppState,
    actor: &str,
    id: &AgentId,
) -> Result<UnregisterResponse, ApiError> {
    let Some((_, orphan)) = state.agents().remove(id) else {
        return Err(ApiError::agent_not_found(id));
    };
    state.auth().revoke(id);
    if let Some(old) = orphan {
        retire(state, old);
    }
    if let Some(r) = state.registry() {
        r.withdraw(id);
    }
    // Deleting an agent deletes what was held for it.
    state.store().forget_agent(id.to_string()).await?;
    let dropped = state.store().drop_held_for(id.clone()).await?;
    state.held().clear(id);
    if dropped > 0 {
        tracing::info!(agent = %id, dropped, "held jekts deleted with their agent");
    }
    state.events().publish(EventKind::AgentUnregistered {
        agent_id: id.clone(),
    });
    state
        .audit(AuditRecord::new(
            actor,
            "unregister",
            Some(id.as_str()),
            "ok",
        ))
        .await;
    Ok(UnregisterResponse {
        agent_id: id.clone(),
        removed: true,
    })
}

/// The pane of `id`, or the right error.
pub fn pane_or_error(state: &AppState, id: &AgentId) -> Result<PaneRecord, ApiError> {
    if let Some(p) = state.agents().pane_of(id) {
        return Ok(p);
    }
    if state.agents().get(id).is_some() {
        return Err(ApiError::conflict(
            "no_pane",
            format!("{id} is an external agent with no pane"),
        ));
    }
    Err(ApiError::agent_not_found(id))
}

/// Stops the program in `id`'s pane: its quit, then SIGTERM, then SIGKILL
/// (`force` goes straight to SIGKILL). The agent stays listed, exited,
/// with its exit code.
pub async fn stop(
    state: &AppState,
    actor: &str,
    id: &AgentId,
    force: bool,
) -> Result<StopResponse, ApiError> {
    let record = pane_or_error(state, id)?;
    let grace = Duration::from_millis(state.config().panes.stop_grace_ms);
    let report = record.pane.stop(force, grace).await;
    let exit = report.exit.clone();
    state
        .audit(
            AuditRecord::new(actor, "stop", Some(id.as_str()), report.step.as_str())
                .detail(format!("block={} force={force}", record.block)),
        )
        .await;
    Ok(StopResponse {
        agent_id: id.clone(),
        block_id: record.block,
        state: if exit.is_some() {
            AgentState::Exited
        } else {
            AgentState::Running
        },
        exit_code: exit.as_ref().and_then(|e| e.code),
        exit_signal: exit.and_then(|e| e.signal),
        stopped_by: report.step.as_str().to_string(),
    })
}

/// At daemon shutdown: SIGHUP every pane (as a closing terminal would),
/// give them the stop grace to exit, then SIGKILL what is left. Returns
/// once every exit is published and audited (or a bound has passed), so
/// the store can be closed after it.
pub async fn hang_up_all(state: &AppState) {
    let records = state.agents().all_panes();
    let running: Vec<&Pane> = records
        .iter()
        .map(|r| &r.pane)
        .filter(|p| p.is_running())
        .collect();
    if !running.is_empty() {
        tracing::info!(panes = running.len(), "hanging up panes");
    }
    for p in &running {
        match p.tmux() {
            // Not ours: let go, never signalled.
            Some(_) => drop(p.stop(false, Duration::ZERO).await),
            None => p.signal(nix::sys::signal::Signal::SIGHUP),
        }
    }
    let grace = Duration::from_millis(state.config().panes.stop_grace_ms);
    let all_exited = futures_util::future::join_all(running.iter().map(|p| p.exited()));
    if tokio::time::timeout(grace, all_exited).await.is_err() {
        for p in running.iter().filter(|p| p.is_running()) {
            p.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
    let all_recorded = futures_util::future::join_all(records.iter().map(|r| {
        let mut rx = r.exit_recorded.clone();
        async move {
            let _ = rx.wait_for(|done| *done).await.map(|_| ());
        }
    }));
    if tokio::time::timeout(grace.max(Duration::from_secs(2)), all_recorded)
        .await
        .is_err()
    {
        tracing::warn!("some pane exits were not recorded before shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;
    use crate::config::Config;
    use crate::events::Received;
    use agentbus_proto::api::InjectRequest;
    use agentbus_proto::event::{Event, EventKind};
    use std::sync::Arc;

    async fn next(sub: &mut crate::events::Subscription) -> Arc<Event> {
        match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
            Ok(Some(Received::Event(e))) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_lifecycle_of_an_agent_is_published_as_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.daemon.data_dir = dir.path().to_path_buf();
        config.profiles.insert(
            Provider::Generic,
            crate::config::ProfileOverride {
                settle_ms: Some(10),
                ..Default::default()
            },
        );
        let store = agentbus_store::Store::open(&dir.path().join("t.db")).unwrap();
        let state = AppState::new(
            config,
            "http://127.0.0.1:9".into(),
            store,
            "instance-key",
            "forward-token",
            None,
            crate::poller::Poller::new(dir.path(), "test".into(), None),
        );
        let mut sub = state.events().subscribe();
        let id = AgentId::parse("ev").unwrap();
        let opened = open(
            &state,
            "admin",
            OpenRequest {
                agent_id: id.clone(),
                provider: Some(Provider::Generic),
                command: vec!["sh".into(), "-c".into(), "read -r x; exit 5".into()],
                tmux: None,
                cwd: None,
                env: Default::default(),
                rows: None,
                cols: None,
            },
        )
        .await
        .unwrap();
        let e = next(&mut sub).await;
        assert!(
            matches!(&e.kind, EventKind::BlockCreated { block_id, .. } if *block_id == opened.block_id),
            "{e:?}"
        );
        assert!(e.scopes.contains(&format!("block:{}", opened.block_id)));
        assert!(matches!(
            next(&mut sub).await.kind,
            EventKind::AgentRegistered { .. }
        ));

        let req: InjectRequest =
            serde_json::from_value(serde_json::json!({"target_agent": "ev", "message": "go"}))
                .unwrap();
        let resp = crate::jekt::inject(&state, &Identity::Admin, req)
            .await
            .unwrap();
        // The submitted line ends `read` and the program exits 5. The
        // delivery and the exit come from independent producers, so they
        // may arrive in either order.
        let (mut delivered, mut exited) = (false, false);
        for _ in 0..2 {
            match &next(&mut sub).await.kind {
                EventKind::JektDelivered { msg_id, to, .. } => {
                    assert_eq!((*msg_id, to), (resp.msg_id, &id));
                    delivered = true;
                }
                EventKind::BlockExited {
                    exit_code,
                    agent_id,
                    ..
                } => {
                    assert_eq!((*exit_code, agent_id.as_ref()), (Some(5), Some(&id)));
                    exited = true;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(delivered && exited);
        unregister(&state, "admin", &id).await.unwrap();
        assert!(matches!(
            next(&mut sub).await.kind,
            EventKind::AgentUnregistered { .. }
        ));
        state.store().close();
    }
}
