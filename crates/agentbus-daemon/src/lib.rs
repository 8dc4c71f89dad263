//! One agentbus instance (the "daemon"): it hosts panes, delivers jekts
//! into them, authenticates every caller, keeps the audit log, and
//! publishes events.
//!
//! Components:
//! - [`instance`] — claims the data dir, makes the instance key, binds,
//!   writes `daemon.json`, serves, shuts down gracefully;
//! - [`config`] — the one typed configuration (file, env, flags);
//! - [`vars`] — the live settings `setvar` changes over it, saved;
//! - [`routes`] — the HTTP route table (AgentMux reactive routes + `/v1`);
//! - [`rpc`] — `/ws`: the App API (JSON-RPC 2.0 over WebSocket), its
//!   method table, scopes and connections;
//! - [`blocks`] — the App API's blocks (views, tabs, sub-blocks, sysinfo);
//! - [`tracker`] — the processes under each pane, from `/proc`;
//! - [`auth`] — instance key and agent tokens, scopes, origin checks;
//! - [`agents`] — the names of this instance and the panes they live in;
//! - [`registry`] — the cross-instance registry and peer lookup;
//! - [`private_dir`] — directories only this user may write (data dir,
//!   registry), reached through an open descriptor;
//! - [`pane_env`] — the allow-list a pane's environment is built from;
//! - [`codex_home`] — each Codex pane's own `CODEX_HOME`, so that its MCP
//!   server acts as its agent;
//! - [`conn`] — SSH connections (one ControlMaster per host), panes run
//!   on a host through them, AWS profiles;
//! - [`panes`] — open / register / stop / unregister;
//! - [`jekt`] — the delivery pipeline from request to submitted paste:
//!   every rule a jekt must pass, and [`jekt::JektError`];
//! - [`hold`] — the durable hold and its in-order replay;
//! - [`mailbox`] — the message verb: send, read (long-poll), ack, search;
//! - [`mcp`] — `/mcp`: the MCP tools over streamable HTTP;
//! - [`metrics`] — `/metrics`: counters, gauges, the store's commit
//!   times, the read-only metrics token;
//! - [`poller`] — the relay poller: long-polls the relay for this
//!   instance's agents, delivers what comes, and hands sends over;
//! - [`limits`] — per-sender and per-pair rate limits (storm protection);
//! - [`retention`] — the background sweeper;
//! - [`refusals`] — refusals counted and sampled into the audit log;
//! - [`events`] — the internal typed event bus, with history;
//! - [`output_events`] — panes' output as `agent:output` events, tapped
//!   only while a subscription wants them;
//! - [`error`] — `ApiError`, the HTTP error every route answers with, and
//!   the extractors that name what is wrong with a request;
//! - [`state`] — the shared handle all of the above hang off.

pub mod agent_state;
pub mod agents;
pub mod auth;
pub mod blocks;
pub mod codex_home;
pub mod config;
pub mod conn;
pub mod error;
pub mod events;
pub mod hold;
pub mod instance;
pub mod jekt;
pub mod limits;
pub mod mailbox;
pub mod mcp;
pub mod metrics;
pub mod output_events;
pub mod pane_env;
pub mod panes;
pub mod poller;
pub mod private_dir;
pub mod refusals;
pub mod registry;
pub mod retention;
pub mod routes;
pub mod rpc;
pub mod signing;
pub mod state;
pub mod tls;
pub mod tracker;
pub mod ui;
pub mod vars;

pub use config::Config;
pub use instance::{Daemon, DaemonError, Discovery};
pub use state::AppState;
