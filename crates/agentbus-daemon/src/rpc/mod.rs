//! The Agent App API (`/ws`, issue 6): JSON-RPC 2.0 over WebSocket.
//!
//! Built in steps. Here so far: [`protocol`] — framing, batches, the
//! standard error codes and application errors with `data.code`, and how
//! the daemon's own errors map onto them. Next: the connection (auth on
//! the upgrade or as the first call, subscriptions owned by the
//! connection, lag notices, keep-alive) and the method table, one handler
//! file per family.

pub mod protocol;
