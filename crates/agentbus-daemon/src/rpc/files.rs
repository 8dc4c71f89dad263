//! `file*`: the App API's file methods, confined to the roots of the
//! config's `[files]` section (none by default: every method is refused
//! with `FILES_DISABLED`).
//!
//! A call names its file by `root` (a root's name; may be left out when
//! there is one root, or when `path` is absolute) and `path` (relative to
//! the root; an absolute path is accepted only if it lies lexically under
//! a root). The path is checked lexically when the params are parsed, so
//! the scope check sees the very root and path the handler acts on
//! ([`Target::Path`]); the file is then reached beneath the root's
//! descriptor ([`beneath`]). Blocking file IO runs on blocking threads;
//! streams (`filereadstream`, `fileliststream`, `filestreamtar`) are
//! produced on one and sent as `stream` notifications through a channel
//! of two items, so a slow reader slows the producer (the connection's
//! bounded out-queue), and memory stays bounded whatever the size.

pub mod beneath;

use super::methods::{Ctx, Params};
use super::protocol::{INVALID_PARAMS, RpcError, notification};
use super::scope::Target;
use crate::config::FilesConfig;
use crate::error::{ApiError, check_range};
use crate::state::AppState;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use beneath::{At, Existing, Fail, PathError, RelPath, Root};
use rustix::fs::{AtFlags, FileType};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use tokio::sync::mpsc;

/// Largest chunk a stream sends (before base64): with the connection's
/// out-queue (frames) this bounds what a slow reader makes the daemon
/// hold (256 × 64 KiB as base64 ≈ 22 MB).
pub const MAX_CHUNK: i64 = 64 * 1024;
/// The chunk a stream sends when the call does not say (≈ 11 MB queued
/// at most).
pub const DEFAULT_CHUNK: i64 = 32 * 1024;
/// Entries per `fileliststream` notification, at most.
pub const MAX_BATCH: i64 = 1000;

/// Where a call acts: the root's name (empty if the call left it to be
/// chosen and there are several) and the path beneath it.
#[derive(Debug, Clone, Default)]
pub struct Loc {
    root: String,
    rel: RelPath,
}

impl Loc {
    fn target(&self) -> Target {
        Target::Path {
            root: self.root.clone(),
            path: self.rel.show(),
        }
    }
}

fn path_error(e: PathError) -> RpcError {
    match e.code() {
        "INVALID_PATH" => invalid("INVALID_PATH", e.to_string()),
        code => RpcError::app(code, e.to_string()),
    }
}

/// Malformed params: -32602, with `data.code` naming what.
fn invalid(code: &str, message: impl Into<String>) -> RpcError {
    let mut e = RpcError::new(INVALID_PARAMS, message);
    e.data = Some(json!({ "code": code }));
    e
}

fn fail(f: Fail) -> RpcError {
    match f.code {
        "INVALID_PATH" => invalid(f.code, f.message),
        code => RpcError::app(code, f.message),
    }
}

fn roots(state: &AppState) -> Vec<Root> {
    state
        .config()
        .files
        .roots
        .iter()
        .map(|r| Root {
            name: r.name.clone(),
            dir: beneath::clean_abs(&r.path).unwrap_or_else(|| r.path.clone()),
        })
        .collect()
}

/// Resolves `root` + `path` lexically (no disk).
fn locate(state: &AppState, root: Option<&str>, path: &str) -> Result<Loc, RpcError> {
    let (root, rel) = beneath::locate(&roots(state), root, path).map_err(path_error)?;
    Ok(Loc { root, rel })
}

/// Params that name one file by `root` and `path`.
macro_rules! one_path {
    ($($t:ty),+ $(,)?) => {$(
        impl Params for $t {
            fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
                let loc = locate(state, self.root.as_deref(), &self.path)?;
                let t = loc.target();
                self.loc = loc;
                Ok(vec![t])
            }
        }
    )+};
}

fn dot() -> String {
    ".".into()
}

/// The configured root a call acts beneath, or why none.
fn root_of(cfg: &FilesConfig, loc: &Loc) -> Result<Root, RpcError> {
    let names = || {
        cfg.roots
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if cfg.roots.is_empty() {
        return Err(RpcError::app(
            "FILES_DISABLED",
            "the file methods are off: no root is configured. Add one to the config file \
             ([[files.roots]] name = \"docs\", path = \"/abs/dir\") and restart the daemon",
        ));
    }
    if loc.root.is_empty() {
        return Err(RpcError::app(
            "MISSING_ARG",
            format!(
                "give root: several roots are configured ({}), or an absolute path under one",
                names()
            ),
        ));
    }
    let r = cfg
        .roots
        .iter()
        .find(|r| r.name == loc.root)
        .ok_or_else(|| {
            RpcError::app(
                "ROOT_NOT_FOUND",
                format!(
                    "no root is named {}; the roots are: {}",
                    agentbus_proto::ids::escape_for_display(&loc.root, 64),
                    names()
                ),
            )
        })?;
    Ok(Root {
        name: r.name.clone(),
        dir: beneath::clean_abs(&r.path).unwrap_or_else(|| r.path.clone()),
    })
}

/// Runs `f` on a blocking thread with the root open.
async fn on_root<T: Send + 'static>(
    ctx: &Ctx,
    loc: Loc,
    f: impl FnOnce(&At<'_>, &FilesConfig) -> Result<T, Fail> + Send + 'static,
) -> Result<T, RpcError> {
    let cfg = ctx.state.config().files.clone();
    let root = root_of(&cfg, &loc)?;
    blocking(move || {
        let fd = root.open()?;
        let at = At {
            root: fd.as_fd(),
            root_name: &root.name,
            rel: &loc.rel,
        };
        f(&at, &cfg)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Fail> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RpcError::from(ApiError::internal(e)))?
        .map_err(fail)
}

/// Bytes given as `data` (UTF-8 text) or `data64` (base64): exactly one.
fn payload(
    data: Option<String>,
    data64: Option<String>,
    cfg: &FilesConfig,
) -> Result<Vec<u8>, RpcError> {
    let bytes = match (data, data64) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "INVALID_ARG",
                "give data (text) or data64 (base64), not both",
            ));
        }
        (None, None) => {
            return Err(super::methods::missing(
                "give data (UTF-8 text) or data64 (base64 bytes)",
            ));
        }
        (Some(t), None) => t.into_bytes(),
        (None, Some(b)) => B64
            .decode(b.as_bytes())
            .map_err(|e| invalid("INVALID_BASE64", format!("data64 is not base64: {e}")))?,
    };
    if bytes.len() as u64 > cfg.max_write_bytes {
        return Err(RpcError::app(
            "TOO_LARGE",
            format!(
                "the data is {} bytes, over the limit of {} (files.max_write_bytes)",
                bytes.len(),
                cfg.max_write_bytes
            ),
        ));
    }
    Ok(bytes)
}

fn name_fields(name: &[u8]) -> Value {
    match std::str::from_utf8(name) {
        Ok(s) => json!({ "name": s }),
        Err(_) => json!({
            "name": String::from_utf8_lossy(name),
            "name64": B64.encode(name),
        }),
    }
}

fn stat_fields(st: &rustix::fs::Stat) -> Value {
    let t = beneath::file_type(st);
    json!({
        "type": beneath::kind(t),
        "size": st.st_size,
        "mode": beneath::perm(st),
        "mode_octal": format!("{:04o}", beneath::perm(st)),
        "mtime_ms": beneath::mtime_ms(st),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// How `fileread` gives the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[serde(alias = "utf-8")]
    Utf8,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    root: Option<String>,
    path: String,
    /// Forced; by default text when the bytes are UTF-8, else base64.
    encoding: Option<Encoding>,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathParams {
    root: Option<String>,
    path: String,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteParams {
    root: Option<String>,
    path: String,
    data: Option<String>,
    data64: Option<String>,
    /// Mode of a new file (default 0644); an existing file keeps its own.
    mode: Option<u32>,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendParams {
    root: Option<String>,
    path: String,
    data: Option<String>,
    data64: Option<String>,
    /// Create the file if it does not exist (default: NOT_FOUND).
    #[serde(default)]
    create: bool,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    root: Option<String>,
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirParams {
    root: Option<String>,
    path: String,
    #[serde(default)]
    parents: bool,
    mode: Option<u32>,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    root: Option<String>,
    #[serde(default = "dot")]
    path: String,
    max_entries: Option<i64>,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListStreamParams {
    root: Option<String>,
    #[serde(default = "dot")]
    path: String,
    batch: Option<i64>,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadStreamParams {
    root: Option<String>,
    path: String,
    chunk_bytes: Option<i64>,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
    #[serde(skip)]
    loc: Loc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TarParams {
    root: Option<String>,
    #[serde(default = "dot")]
    path: String,
    chunk_bytes: Option<i64>,
    #[serde(skip)]
    loc: Loc,
}

one_path!(
    ReadParams,
    PathParams,
    WriteParams,
    AppendParams,
    DeleteParams,
    MkdirParams,
    ListParams,
    ListStreamParams,
    ReadStreamParams,
    TarParams,
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoPathParams {
    root: Option<String>,
    path: String,
    /// The destination's root (default: the source's, unless `to_path`
    /// is absolute).
    to_root: Option<String>,
    to_path: String,
    #[serde(default)]
    overwrite: bool,
    #[serde(skip)]
    loc: Loc,
    #[serde(skip)]
    to: Loc,
}

impl Params for TwoPathParams {
    fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
        self.loc = locate(state, self.root.as_deref(), &self.path)?;
        let to_root = match (&self.to_root, self.to_path.starts_with('/')) {
            (Some(r), _) => Some(r.as_str()),
            (None, true) => None,
            (None, false) => Some(self.loc.root.as_str()).filter(|r| !r.is_empty()),
        };
        self.to = locate(state, to_root, &self.to_path)?;
        Ok(vec![self.loc.target(), self.to.target()])
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinParams {
    root: Option<String>,
    parts: Vec<String>,
    #[serde(skip)]
    joined: Option<RelPath>,
}

/// `filejoin` targets the root it names (or the only one) with the
/// joined path, so `filejoin@root:<name>` grants it.
impl Params for JoinParams {
    fn targets(&mut self, state: &AppState) -> Result<Vec<Target>, RpcError> {
        let joined = beneath::join(&self.parts).map_err(path_error)?;
        let root = match (&self.root, roots(state).as_slice()) {
            (Some(r), _) => r.clone(),
            (None, [only]) => only.name.clone(),
            _ => String::new(),
        };
        let t = Target::Path {
            root,
            path: joined.show(),
        };
        self.joined = Some(joined);
        Ok(vec![t])
    }
}

/// A mode asked for: permission bits and the sticky bit, never setuid or
/// setgid.
fn check_mode(mode: Option<u32>) -> Result<(), RpcError> {
    match mode {
        Some(m) if m & !beneath::MODE_BITS != 0 => Err(invalid(
            "INVALID_ARG",
            format!(
                "mode {m:#o} is not allowed: give permission bits (at most 0o1777; no setuid or setgid)"
            ),
        )),
        _ => Ok(()),
    }
}

fn answer_loc(loc: &Loc) -> Value {
    json!({ "root": loc.root, "path": loc.rel.show() })
}

/// `fileread`: a regular file's bytes (or `length` of them from
/// `offset`), at most `files.max_read_bytes`.
pub async fn read(ctx: Ctx, p: ReadParams) -> Result<Value, RpcError> {
    let base = answer_loc(&p.loc);
    let (offset, length, encoding) = (p.offset, p.length, p.encoding);
    let (bytes, size) = on_root(&ctx, p.loc, move |at, cfg| {
        let what = at.show();
        let (mut f, st) = at.open_file()?;
        let size = st.st_size as u64;
        let left = size.saturating_sub(offset);
        let want = length.map_or(left, |l| l.min(left));
        if want > cfg.max_read_bytes {
            let shown = if length.is_some() || offset > 0 {
                format!("{what} (the range asked for)")
            } else {
                what.clone()
            };
            return Err(beneath::too_large(
                &shown,
                want,
                cfg.max_read_bytes,
                "files.max_read_bytes",
            ));
        }
        Ok((beneath::read_range(&mut f, offset, want, &what)?, size))
    })
    .await?;
    let mut out = merge(
        base,
        json!({ "size": size, "offset": offset, "length": bytes.len() }),
    );
    let text = match encoding {
        Some(Encoding::Base64) => None,
        Some(Encoding::Utf8) => Some(String::from_utf8(bytes.clone()).map_err(|e| {
            RpcError::app(
                "NOT_UTF8",
                format!(
                    "the bytes are not UTF-8 (at byte {}): read with encoding base64",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?),
        None => std::str::from_utf8(&bytes).ok().map(str::to_string),
    };
    match text {
        Some(t) => {
            out["encoding"] = json!("utf8");
            out["data"] = json!(t);
        }
        None => {
            out["encoding"] = json!("base64");
            out["data64"] = json!(B64.encode(&bytes));
        }
    }
    Ok(out)
}

async fn write_or_create(ctx: Ctx, p: WriteParams, existing: Existing) -> Result<Value, RpcError> {
    let bytes = payload(p.data, p.data64, &ctx.state.config().files)?;
    check_mode(p.mode)?;
    let base = answer_loc(&p.loc);
    let mode = p.mode;
    let w = on_root(&ctx, p.loc, move |at, _| {
        beneath::write_atomic(at, &bytes, mode, existing)
    })
    .await?;
    Ok(merge(
        base,
        json!({ "size": w.size, "created": w.created, "mode": w.mode }),
    ))
}

/// `filewrite`: replaces the file atomically (temp file, fsync, rename,
/// fsync of the directory); an existing file keeps its mode.
pub async fn write(ctx: Ctx, p: WriteParams) -> Result<Value, RpcError> {
    write_or_create(ctx, p, Existing::Replace).await
}

/// `filecreate`: as `filewrite`, but `EXISTS` if the file is there.
pub async fn create(ctx: Ctx, p: WriteParams) -> Result<Value, RpcError> {
    write_or_create(ctx, p, Existing::Refuse).await
}

/// `fileappend`: appends and syncs before answering.
pub async fn append(ctx: Ctx, p: AppendParams) -> Result<Value, RpcError> {
    let bytes = payload(p.data, p.data64, &ctx.state.config().files)?;
    let base = answer_loc(&p.loc);
    let (n, create) = (bytes.len(), p.create);
    let size = on_root(&ctx, p.loc, move |at, _| {
        beneath::append(at, &bytes, create)
    })
    .await?;
    Ok(merge(base, json!({ "appended": n, "size": size })))
}

/// `filedelete`: a file or symlink; a directory only when empty unless
/// `recursive`.
pub async fn delete(ctx: Ctx, p: DeleteParams) -> Result<Value, RpcError> {
    let base = answer_loc(&p.loc);
    let recursive = p.recursive;
    let d = on_root(&ctx, p.loc, move |at, _| beneath::delete(at, recursive)).await?;
    Ok(merge(
        base,
        json!({ "deleted": true, "type": d.kind, "removed": d.removed }),
    ))
}

/// `filemkdir`: one directory, or with `parents` every missing one.
pub async fn mkdir(ctx: Ctx, p: MkdirParams) -> Result<Value, RpcError> {
    check_mode(p.mode)?;
    let base = answer_loc(&p.loc);
    let (parents, mode) = (p.parents, p.mode.unwrap_or(0o755));
    let created = on_root(&ctx, p.loc, move |at, _| beneath::mkdir(at, parents, mode)).await?;
    Ok(merge(base, json!({ "created": created })))
}

/// Runs `f` with both ends of a copy or move open beneath their roots.
async fn two<T: Send + 'static>(
    ctx: &Ctx,
    from: Loc,
    to: Loc,
    f: impl FnOnce(&At<'_>, &At<'_>, &FilesConfig) -> Result<T, Fail> + Send + 'static,
) -> Result<T, RpcError> {
    let cfg = ctx.state.config().files.clone();
    let (from_root, to_root) = (root_of(&cfg, &from)?, root_of(&cfg, &to)?);
    blocking(move || {
        let ffd = from_root.open()?;
        let tfd = to_root.open()?;
        let a = At {
            root: ffd.as_fd(),
            root_name: &from_root.name,
            rel: &from.rel,
        };
        let b = At {
            root: tfd.as_fd(),
            root_name: &to_root.name,
            rel: &to.rel,
        };
        f(&a, &b, &cfg)
    })
    .await
}

/// `filecopy`: a regular file to another path (maybe another root).
pub async fn copy(ctx: Ctx, p: TwoPathParams) -> Result<Value, RpcError> {
    let out = json!({ "from": answer_loc(&p.loc), "to": answer_loc(&p.to) });
    let overwrite = p.overwrite;
    let size = two(&ctx, p.loc, p.to, move |a, b, cfg| {
        beneath::copy(a, b, overwrite, cfg.max_write_bytes)
    })
    .await?;
    Ok(merge(out, json!({ "size": size })))
}

/// `filemove`: a rename by parent descriptors (maybe into another root
/// on the same filesystem; across filesystems `CROSS_DEVICE`).
pub async fn rename(ctx: Ctx, p: TwoPathParams) -> Result<Value, RpcError> {
    let out = json!({ "from": answer_loc(&p.loc), "to": answer_loc(&p.to) });
    let overwrite = p.overwrite;
    let kind = two(&ctx, p.loc, p.to, move |a, b, _| {
        beneath::rename(a, b, overwrite)
    })
    .await?;
    Ok(merge(out, json!({ "moved": true, "type": kind })))
}

/// `fileinfo`: type, size, mode, mtime; for a symlink its target, not
/// followed.
pub async fn info(ctx: Ctx, p: PathParams) -> Result<Value, RpcError> {
    let base = answer_loc(&p.loc);
    let (st, target) = on_root(&ctx, p.loc, move |at, _| {
        let st = at.stat()?;
        let target = if beneath::file_type(&st) == FileType::Symlink {
            let (dir, name) = at.parent()?;
            Some(beneath::link_target(
                &dir,
                std::ffi::OsStr::new(name),
                &at.show(),
            )?)
        } else {
            None
        };
        Ok((st, target))
    })
    .await?;
    let mut out = merge(base, stat_fields(&st));
    out["is_symlink"] = json!(target.is_some());
    if let Some(t) = target {
        match String::from_utf8(t) {
            Ok(s) => out["target"] = json!(s),
            Err(e) => {
                out["target"] = json!(String::from_utf8_lossy(e.as_bytes()));
                out["target64"] = json!(B64.encode(e.as_bytes()));
            }
        }
    }
    Ok(out)
}

/// One listed entry: its name and status (not following a symlink).
fn entry(dir: &std::os::fd::OwnedFd, name: &[u8]) -> Option<Value> {
    let st = rustix::fs::statat(
        dir,
        std::ffi::OsStr::from_bytes(name),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .ok()?;
    Some(merge(name_fields(name), stat_fields(&st)))
}

/// `filelist`: a directory's entries sorted by name (bytes), at most
/// `max_entries` (the first ones in that order, with `truncated`).
pub async fn list(ctx: Ctx, p: ListParams) -> Result<Value, RpcError> {
    let cap = ctx.state.config().files.max_entries as i64;
    let max = p.max_entries.unwrap_or(cap);
    check_range("max_entries", max, 1..=cap)?;
    let base = answer_loc(&p.loc);
    let (entries, total) = on_root(&ctx, p.loc, move |at, _| {
        let dir = at.open_dir()?;
        let mut names = std::collections::BinaryHeap::new();
        let mut total = 0u64;
        // The `max` smallest names, whatever the directory's size.
        beneath::each_entry(&dir, &at.show(), |name, _| {
            total += 1;
            if names.len() < max as usize {
                names.push(name.to_vec());
            } else if names
                .peek()
                .is_some_and(|top: &Vec<u8>| name < top.as_slice())
            {
                names.pop();
                names.push(name.to_vec());
            }
            Ok(())
        })?;
        let names = names.into_sorted_vec();
        let entries: Vec<Value> = names.iter().filter_map(|n| entry(&dir, n)).collect();
        Ok((entries, total))
    })
    .await?;
    let truncated = total > entries.len() as u64;
    Ok(merge(
        base,
        json!({ "entries": entries, "total": total, "truncated": truncated }),
    ))
}

/// The request id a stream tags its notifications with.
fn stream_id(ctx: &Ctx, method: &str) -> Result<Value, RpcError> {
    ctx.request_id
        .clone()
        .filter(|id| !id.is_null())
        .ok_or_else(|| {
            RpcError::new(
                INVALID_PARAMS,
                format!("{method} needs a request id: its stream is tagged with it"),
            )
        })
}

/// File streams running at once in the daemon: each holds a blocking
/// thread while its reader reads.
pub const MAX_STREAMS: usize = 64;

/// File streams one socket may run at once, so that one client cannot
/// hold them all.
pub const MAX_STREAMS_PER_SOCKET: u32 = 4;

/// A turn for a file stream: one of this socket's and one of the daemon's.
fn stream_permit(
    ctx: &Ctx,
) -> Result<
    (
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    ),
    RpcError,
> {
    let mine = ctx
        .session
        .file_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            RpcError::app(
                "BUSY",
                format!(
                    "this socket has {MAX_STREAMS_PER_SOCKET} file streams running; try again when one has ended"
                ),
            )
        })?;
    Ok((mine, daemon_stream_permit()?))
}

fn daemon_stream_permit() -> Result<tokio::sync::OwnedSemaphorePermit, RpcError> {
    static STREAMS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    STREAMS
        .get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)))
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            RpcError::app(
                "BUSY",
                format!("{MAX_STREAMS} file streams are running; try again when one has ended"),
            )
        })
}

/// Sends what `produce` (on a blocking thread) puts in the channel as
/// `stream` notifications, in order (`seq` from 1). The channel holds two
/// items and `Session::send` waits for room in the connection's queue:
/// a slow reader stops the producer. A closed connection ends it.
async fn pump<S: Send + 'static>(
    ctx: &Ctx,
    rid: Value,
    produce: impl FnOnce(mpsc::Sender<Value>) -> Result<S, Fail> + Send + 'static,
) -> Result<(S, u64), RpcError> {
    let permit = stream_permit(ctx)?;
    let (tx, mut rx) = mpsc::channel::<Value>(2);
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        produce(tx)
    });
    let mut seq = 0u64;
    loop {
        let data = tokio::select! {
            d = rx.recv() => d,
            _ = ctx.session.cancel.cancelled() => None,
        };
        let Some(data) = data else { break };
        seq += 1;
        let note = notification("stream", json!({ "id": rid, "seq": seq, "data": data }));
        if !ctx.session.send(&note).await {
            break;
        }
    }
    drop(rx);
    let r = job
        .await
        .map_err(|e| RpcError::from(ApiError::internal(e)))?;
    r.map(|s| (s, seq)).map_err(fail)
}

/// What a producer sends into: one item, or `CLOSED` once the call's
/// connection is gone.
fn put(tx: &mpsc::Sender<Value>, v: Value) -> Result<(), Fail> {
    tx.blocking_send(v)
        .map_err(|_| Fail::new("CLOSED", "the connection closed"))
}

fn opened(ctx: &Ctx, loc: &Loc) -> Result<Root, RpcError> {
    root_of(&ctx.state.config().files, loc)
}

/// `fileliststream`: every entry of a directory (in directory order, no
/// cap), `batch` at a time.
pub async fn list_stream(ctx: Ctx, p: ListStreamParams) -> Result<Value, RpcError> {
    let rid = stream_id(&ctx, "fileliststream")?;
    let batch = p.batch.unwrap_or(256);
    check_range("batch", batch, 1..=MAX_BATCH)?;
    let root = opened(&ctx, &p.loc)?;
    let base = answer_loc(&p.loc);
    let loc = p.loc;
    let (total, batches) = pump(&ctx, rid, move |tx| {
        let fd = root.open()?;
        let at = At {
            root: fd.as_fd(),
            root_name: &root.name,
            rel: &loc.rel,
        };
        let dir = at.open_dir()?;
        let mut total = 0u64;
        let mut pending = Vec::new();
        beneath::each_entry(&dir, &at.show(), |n, _| {
            if let Some(v) = entry(&dir, n) {
                pending.push(v);
                total += 1;
            }
            if pending.len() == batch as usize {
                put(&tx, json!({ "entries": std::mem::take(&mut pending) }))?;
            }
            Ok(())
        })?;
        if !pending.is_empty() {
            put(&tx, json!({ "entries": pending }))?;
        }
        Ok(total)
    })
    .await?;
    Ok(merge(
        base,
        json!({ "stream": "ended", "entries": total, "batches": batches }),
    ))
}

/// `filereadstream`: a regular file in `chunk_bytes` pieces (base64),
/// with no size cap; the answer has the total and its SHA-256.
pub async fn read_stream(ctx: Ctx, p: ReadStreamParams) -> Result<Value, RpcError> {
    let rid = stream_id(&ctx, "filereadstream")?;
    let chunk = p.chunk_bytes.unwrap_or(DEFAULT_CHUNK);
    check_range("chunk_bytes", chunk, 1..=MAX_CHUNK)?;
    let root = opened(&ctx, &p.loc)?;
    let base = answer_loc(&p.loc);
    let (loc, offset, length) = (p.loc, p.offset, p.length);
    let ((size, bytes, sha), chunks) = pump(&ctx, rid, move |tx| {
        let fd = root.open()?;
        let at = At {
            root: fd.as_fd(),
            root_name: &root.name,
            rel: &loc.rel,
        };
        let what = at.show();
        let (mut f, st) = at.open_file()?;
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Fail::new("IO_ERROR", format!("{what}: {e}")))?;
        let mut r = f.take(length.unwrap_or(u64::MAX));
        let mut sha = Sha256::new();
        let mut sent = 0u64;
        let mut buf = vec![0u8; chunk as usize];
        loop {
            let mut n = 0;
            while n < buf.len() {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Fail::new("IO_ERROR", format!("{what}: {e}"))),
                }
            }
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            put(
                &tx,
                json!({ "offset": offset + sent, "data64": B64.encode(&buf[..n]) }),
            )?;
            sent += n as u64;
        }
        Ok((st.st_size as u64, sent, hex::encode(sha.finalize())))
    })
    .await?;
    Ok(merge(
        base,
        json!({ "stream": "ended", "size": size, "offset": offset, "bytes": bytes,
                "chunks": chunks, "sha256": sha }),
    ))
}

/// A `Write` that cuts what the tar builder writes into chunks and sends
/// each (base64) as one stream item, waiting for room.
struct ChunkWriter {
    tx: mpsc::Sender<Value>,
    buf: Vec<u8>,
    chunk: usize,
    sent: u64,
    sha: Sha256,
}

impl ChunkWriter {
    fn send(&mut self, n: usize) -> std::io::Result<()> {
        let piece: Vec<u8> = self.buf.drain(..n).collect();
        self.sha.update(&piece);
        let v = json!({ "offset": self.sent, "data64": B64.encode(&piece) });
        self.sent += n as u64;
        self.tx
            .blocking_send(v)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = self.chunk - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.send(self.chunk)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `filestreamtar`: a tar of a file or directory tree (symlinks stored
/// as symlinks, never followed; FIFOs, sockets and devices left out and
/// named), in base64 chunks.
pub async fn stream_tar(ctx: Ctx, p: TarParams) -> Result<Value, RpcError> {
    let rid = stream_id(&ctx, "filestreamtar")?;
    let chunk = p.chunk_bytes.unwrap_or(DEFAULT_CHUNK);
    check_range("chunk_bytes", chunk, 1..=MAX_CHUNK)?;
    let root = opened(&ctx, &p.loc)?;
    let base = answer_loc(&p.loc);
    let loc = p.loc;
    let ((sum, bytes, sha), chunks) = pump(&ctx, rid, move |tx| {
        let fd = root.open()?;
        let at = At {
            root: fd.as_fd(),
            root_name: &root.name,
            rel: &loc.rel,
        };
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(chunk as usize),
            chunk: chunk as usize,
            sent: 0,
            sha: Sha256::new(),
        };
        let sum = match beneath::tar_tree(&at, &mut w) {
            Ok(s) => s,
            Err(_) if w.tx.is_closed() => return Err(Fail::new("CLOSED", "the connection closed")),
            Err(e) => return Err(e),
        };
        let rest = w.buf.len();
        if rest > 0 {
            w.send(rest)
                .map_err(|_| Fail::new("CLOSED", "the connection closed"))?;
        }
        Ok((sum, w.sent, hex::encode(w.sha.finalize())))
    })
    .await?;
    Ok(merge(
        base,
        json!({ "stream": "ended", "bytes": bytes, "chunks": chunks, "sha256": sha,
                "files": sum.files, "dirs": sum.dirs, "symlinks": sum.symlinks,
                "skipped": sum.skipped }),
    ))
}

/// `filejoin`: joins and normalizes lexically; touches no disk.
pub async fn join(ctx: Ctx, p: JoinParams) -> Result<Value, RpcError> {
    let cfg = &ctx.state.config().files;
    if cfg.roots.is_empty() {
        root_of(cfg, &Loc::default())?;
    }
    if let Some(r) = &p.root {
        root_of(
            cfg,
            &Loc {
                root: r.clone(),
                rel: RelPath::default(),
            },
        )?;
    }
    let joined = p.joined.unwrap_or_default();
    Ok(json!({ "root": p.root, "path": joined.show(), "is_root": joined.is_root() }))
}
