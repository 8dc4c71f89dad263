//! Files beneath a root directory, reached only through descriptors.
//!
//! A path names a file relative to a root as components, checked
//! lexically first ([`RelPath`]: no NUL, no `..`, at most
//! [`MAX_PATH_BYTES`]). The root is opened at each use with `O_NOFOLLOW`
//! (a root that is itself a symlink is refused); from its descriptor the
//! parent directory of the file is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the kernel has it,
//! else component by component with `O_NOFOLLOW | O_DIRECTORY`. Symlinks
//! beneath a root are never followed, on any component: one swapped in
//! during a call makes the call fail, it never leads outside. Every
//! operation then acts on (parent descriptor, name): `openat` with
//! `O_NOFOLLOW`, `unlinkat`, `renameat`, `mkdirat`, `statat` without
//! following. Only regular files are read or written; a file is opened
//! `O_NONBLOCK` and checked with `fstat`, so a FIFO never blocks.
//!
//! Everything here is blocking: callers run it on a blocking thread.

use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Mode, OFlags, RenameFlags, ResolveFlags, Stat, fstat, mkdirat,
    openat, openat2, readlinkat, renameat, renameat_with, statat, unlinkat,
};
use rustix::io::Errno;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest component, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest directory tree a recursive delete or a tar walks.
pub const MAX_DEPTH: usize = 128;
/// Names of the temporary files a write makes next to its target.
pub const TEMP_PREFIX: &str = ".agentbus-tmp-";
/// The mode bits a file or directory made here may get: never setuid or
/// setgid (a daemon running as root must not mint set-id files), as the
/// kernel clears them when another user writes a set-id file.
pub const MODE_BITS: u32 = 0o1777;

/// Why a call failed: an App API error code and a message naming the
/// file (by root name and relative path, never the host path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub code: &'static str,
    pub message: String,
}

impl Fail {
    pub fn new(code: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            code,
            message: message.into(),
        }
    }

    /// A system error on `what` (a path as the caller named it).
    pub fn os(e: Errno, what: &str) -> Fail {
        let (code, why) = match e {
            Errno::NOENT => ("NOT_FOUND", "no such file or directory".to_string()),
            Errno::EXIST => ("EXISTS", "it already exists".into()),
            Errno::NOTDIR => (
                "NOT_A_DIRECTORY",
                "a component of the path is not a directory".into(),
            ),
            Errno::ISDIR => ("IS_A_DIRECTORY", "it is a directory".into()),
            Errno::LOOP => (
                "SYMLINK",
                "the path goes through a symlink; symlinks beneath a root are not followed".into(),
            ),
            Errno::XDEV => (
                "CROSS_DEVICE",
                "the two paths are on different filesystems".into(),
            ),
            Errno::NOTEMPTY => ("NOT_EMPTY", "the directory is not empty".into()),
            Errno::ACCESS | Errno::PERM => ("PERMISSION_DENIED", "permission denied".into()),
            Errno::NAMETOOLONG => ("INVALID_PATH", "a name is too long".into()),
            Errno::NOSPC | Errno::DQUOT => ("NO_SPACE", "no space left on the device".into()),
            Errno::ROFS => ("READ_ONLY", "the filesystem is read-only".into()),
            Errno::BUSY => ("BUSY", "it is in use (a mount point?)".into()),
            Errno::INVAL => (
                "INVALID_ARG",
                "the operation is not possible on it (a directory into itself?)".into(),
            ),
            e => ("IO_ERROR", format!("system error: {e}")),
        };
        Fail::new(code, format!("{what}: {why}"))
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// What is wrong with a path as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    Nul,
    TooLong(usize),
    NameTooLong(usize),
    DotDot,
    /// An absolute path under none of the roots (or not under the root named).
    Outside,
    /// `filejoin`: `..` would climb above the root.
    Climbs,
    /// `filejoin`: a part is absolute.
    AbsolutePart,
}

impl PathError {
    pub fn code(&self) -> &'static str {
        match self {
            PathError::Outside | PathError::Climbs => "OUTSIDE_ROOT",
            _ => "INVALID_PATH",
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Empty => f.write_str("the path is empty: give \".\" for the root itself"),
            PathError::Nul => f.write_str("the path holds a NUL byte"),
            PathError::TooLong(n) => write!(f, "the path is {n} bytes, over the limit of {MAX_PATH_BYTES}"),
            PathError::NameTooLong(n) => {
                write!(f, "a name in the path is {n} bytes, over the limit of {MAX_NAME_BYTES}")
            }
            PathError::DotDot => f.write_str(
                "the path has a \"..\" component: name files from the root down (filejoin normalizes)",
            ),
            PathError::Outside => f.write_str(
                "the absolute path lies under no configured root (files.roots); give root and a relative path",
            ),
            PathError::Climbs => f.write_str("the joined path climbs above the root with \"..\""),
            PathError::AbsolutePart => {
                f.write_str("a part is absolute: filejoin joins relative parts")
            }
        }
    }
}

/// A path relative to a root: components that are never empty, `.`,
/// `..`, and hold neither `/` nor NUL. No components: the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelPath {
    comps: Vec<String>,
    /// Written with a trailing `/`: it must be a directory.
    pub dir_hint: bool,
}

fn check_text(s: &str) -> Result<(), PathError> {
    if s.is_empty() {
        return Err(PathError::Empty);
    }
    if s.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(PathError::Nul);
    }
    Ok(())
}

/// The components of `s` (`/`-separated; empty and `.` ones dropped).
fn components(s: &str) -> Result<Vec<String>, PathError> {
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(PathError::DotDot),
            c if c.len() > MAX_NAME_BYTES => return Err(PathError::NameTooLong(c.len())),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

impl RelPath {
    /// Parses a relative path (a leading `/` is read as relative too:
    /// callers strip absolute paths with [`locate`] first).
    pub fn parse(s: &str) -> Result<RelPath, PathError> {
        check_text(s)?;
        Ok(RelPath {
            comps: components(s)?,
            dir_hint: s.ends_with('/') || s.ends_with("/."),
        })
    }

    pub fn is_root(&self) -> bool {
        self.comps.is_empty()
    }

    pub fn components(&self) -> &[String] {
        &self.comps
    }

    /// The parent's components and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(&[String], &str)> {
        let (last, dirs) = self.comps.split_last()?;
        Some((dirs, last.as_str()))
    }

    pub fn name(&self) -> Option<&str> {
        self.comps.last().map(String::as_str)
    }

    /// The path as answers show it: components joined by `/`, `.` for
    /// the root.
    pub fn show(&self) -> String {
        if self.comps.is_empty() {
            ".".into()
        } else {
            self.comps.join("/")
        }
    }
}

/// A configured root: its name and its directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Root {
    pub name: String,
    pub dir: PathBuf,
}

/// The lexical form of an absolute config path: `.` and empty components
/// dropped; `None` if it is relative or has `..`.
pub fn clean_abs(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Which root a call means and the path beneath it, from `root` (a name,
/// or none) and `path`. An absolute `path` must lie lexically under a
/// root's directory (the one named, else the deepest that holds it).
/// Without `root` and with a relative path, the only root if there is
/// one; else the root's name is left empty for the caller to refuse.
pub fn locate(
    roots: &[Root],
    root: Option<&str>,
    path: &str,
) -> Result<(String, RelPath), PathError> {
    check_text(path)?;
    if !path.starts_with('/') {
        let rel = RelPath::parse(path)?;
        let name = match (root, roots) {
            (Some(r), _) => r.to_string(),
            (None, [only]) => only.name.clone(),
            (None, _) => String::new(),
        };
        return Ok((name, rel));
    }
    let comps = components(path)?;
    let dir_hint = path.ends_with('/') && path.len() > 1;
    let holds = |r: &Root| {
        let rc: Vec<&[u8]> = r
            .dir
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.as_bytes()),
                _ => None,
            })
            .collect();
        (rc.len() <= comps.len() && rc.iter().zip(&comps).all(|(a, b)| *a == b.as_bytes()))
            .then_some(rc.len())
    };
    let found = match root {
        Some(name) => roots
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| holds(r).map(|n| (r, n))),
        None => roots
            .iter()
            .filter_map(|r| holds(r).map(|n| (r, n)))
            .max_by_key(|(_, n)| *n),
    };
    let (r, n) = found.ok_or(PathError::Outside)?;
    Ok((
        r.name.clone(),
        RelPath {
            comps: comps[n..].to_vec(),
            dir_hint,
        },
    ))
}

/// `filejoin`: joins relative parts and normalizes lexically (`.` and
/// empty components dropped, `..` takes the previous one off); a result
/// above the root is refused. Touches no disk.
pub fn join(parts: &[String]) -> Result<RelPath, PathError> {
    let mut comps: Vec<String> = Vec::new();
    let mut total = 0;
    for part in parts {
        if part.starts_with('/') {
            return Err(PathError::AbsolutePart);
        }
        if part.contains('\0') {
            return Err(PathError::Nul);
        }
        total += part.len() + 1;
        if total > MAX_PATH_BYTES + 1 {
            return Err(PathError::TooLong(total - 1));
        }
        for c in part.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    comps.pop().ok_or(PathError::Climbs)?;
                }
                c if c.len() > MAX_NAME_BYTES => return Err(PathError::NameTooLong(c.len())),
                c => comps.push(c.to_string()),
            }
        }
    }
    let dir_hint = parts.last().is_some_and(|p| p.ends_with('/'));
    Ok(RelPath { comps, dir_hint })
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Whether `openat2` is worth trying (cleared once the kernel says it
/// has none).
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// For the tests: walk component by component even where the kernel
/// has `openat2`.
pub fn set_openat2(on: bool) {
    OPENAT2.store(on, Ordering::Relaxed);
}

impl Root {
    /// Opens the root's directory, refusing one that is a symlink.
    pub fn open(&self) -> Result<OwnedFd, Fail> {
        openat(CWD, &self.dir, DIR, Mode::empty()).map_err(|e| {
            let why = match e {
                Errno::LOOP | Errno::NOTDIR if is_symlink(&self.dir) => {
                    "it is a symlink, which agentbus does not follow: set files.roots to the directory it points to".to_string()
                }
                Errno::NOTDIR => "it is not a directory".into(),
                Errno::NOENT => "it does not exist: create it or fix files.roots".into(),
                e => format!("it cannot be opened ({e})"),
            };
            Fail::new(
                "ROOT_UNAVAILABLE",
                format!("root {} cannot be used: {why}", self.name),
            )
        })
    }
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// How a caller's path is shown in errors: `root:path`.
pub fn shown(root: &str, dirs: &[String]) -> String {
    if dirs.is_empty() {
        format!("{root}:.")
    } else {
        format!("{root}:{}", dirs.join("/"))
    }
}

/// Opens the directory `comps` beneath `base`, following no symlink.
pub fn open_dir(base: BorrowedFd<'_>, comps: &[String], root: &str) -> Result<OwnedFd, Fail> {
    if comps.is_empty() {
        return openat(base, ".", DIR, Mode::empty()).map_err(|e| Fail::os(e, &shown(root, &[])));
    }
    if OPENAT2.load(Ordering::Relaxed) {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match openat2(base, comps.join("/"), DIR, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOSYS) => OPENAT2.store(false, Ordering::Relaxed),
            // Anything else: the walk names where it failed (and is just
            // as safe if it succeeds after a rename race, EAGAIN).
            Err(_) => {}
        }
    }
    walk(base, comps, root)
}

/// The component-by-component walk: each directory opened from the one
/// before with `O_NOFOLLOW | O_DIRECTORY`.
pub fn walk(base: BorrowedFd<'_>, comps: &[String], root: &str) -> Result<OwnedFd, Fail> {
    let mut cur: Option<OwnedFd> = None;
    for (i, c) in comps.iter().enumerate() {
        let at = cur.as_ref().map_or(base, |f| f.as_fd());
        match openat(at, c.as_str(), DIR, Mode::empty()) {
            Ok(fd) => cur = Some(fd),
            Err(e) => {
                let what = shown(root, &comps[..=i]);
                // O_NOFOLLOW|O_DIRECTORY on a symlink says ENOTDIR: say
                // which it is.
                return Err(match statat(at, c.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        Fail::os(Errno::LOOP, &what)
                    }
                    _ => Fail::os(e, &what),
                });
            }
        }
    }
    match cur {
        Some(fd) => Ok(fd),
        None => openat(base, ".", DIR, Mode::empty()).map_err(|e| Fail::os(e, &shown(root, &[]))),
    }
}

/// A file's kind as answers name it.
pub fn kind(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "char_device",
        FileType::BlockDevice => "block_device",
        _ => "unknown",
    }
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

pub fn mtime_ms(st: &Stat) -> i64 {
    st.st_mtime * 1000 + (st.st_mtime_nsec as i64) / 1_000_000
}

pub fn perm(st: &Stat) -> u32 {
    st.st_mode & 0o7777
}

/// A location beneath an open root.
pub struct At<'a> {
    pub root: BorrowedFd<'a>,
    pub root_name: &'a str,
    pub rel: &'a RelPath,
}

impl At<'_> {
    pub fn show(&self) -> String {
        shown(self.root_name, &self.rel.comps)
    }

    /// The parent directory and the last name; the root itself has none.
    pub fn parent(&self) -> Result<(OwnedFd, &str), Fail> {
        let Some((dirs, name)) = self.rel.split_last() else {
            return Err(Fail::new(
                "INVALID_PATH",
                format!(
                    "{}: this acts on a file in the root, not on the root itself",
                    self.show()
                ),
            ));
        };
        Ok((open_dir(self.root, dirs, self.root_name)?, name))
    }

    /// The file's status, not following a symlink at the end.
    pub fn stat(&self) -> Result<Stat, Fail> {
        if self.rel.is_root() {
            return fstat(self.root).map_err(|e| Fail::os(e, &self.show()));
        }
        let (dir, name) = self.parent()?;
        let st =
            statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, &self.show()))?;
        if self.rel.dir_hint && file_type(&st) != FileType::Directory {
            return Err(Fail::os(Errno::NOTDIR, &self.show()));
        }
        Ok(st)
    }

    /// The directory itself, opened to list it.
    pub fn open_dir(&self) -> Result<OwnedFd, Fail> {
        open_dir(self.root, &self.rel.comps, self.root_name)
    }

    /// Opens a regular file to read: a symlink, directory, FIFO, socket
    /// or device is refused (opened non-blocking, checked with fstat).
    pub fn open_file(&self) -> Result<(File, Stat), Fail> {
        if self.rel.is_root() {
            return Err(Fail::new(
                "IS_A_DIRECTORY",
                format!("{}: it is a directory (the root)", self.show()),
            ));
        }
        let (dir, name) = self.parent()?;
        open_regular(&dir, name, &self.show(), self.rel.dir_hint)
    }
}

fn not_regular(t: FileType, what: &str) -> Fail {
    match t {
        FileType::Directory => Fail::new("IS_A_DIRECTORY", format!("{what}: it is a directory")),
        FileType::Symlink => Fail::os(Errno::LOOP, what),
        t => Fail::new(
            "NOT_A_FILE",
            format!(
                "{what}: it is a {}; only regular files are read or written",
                kind(t)
            ),
        ),
    }
}

/// Opens `name` in `dir` read-only if it is a regular file.
pub fn open_regular(
    dir: &OwnedFd,
    name: &str,
    what: &str,
    dir_hint: bool,
) -> Result<(File, Stat), Fail> {
    let before = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, what))?;
    if file_type(&before) != FileType::RegularFile {
        return Err(not_regular(file_type(&before), what));
    }
    if dir_hint {
        return Err(Fail::os(Errno::NOTDIR, what));
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = openat(dir, name, flags, Mode::empty()).map_err(|e| Fail::os(e, what))?;
    let st = fstat(&fd).map_err(|e| Fail::os(e, what))?;
    if file_type(&st) != FileType::RegularFile {
        return Err(not_regular(file_type(&st), what));
    }
    Ok((File::from(fd), st))
}

/// A random name for a temporary file in the target's directory.
fn temp_name() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).expect("the OS random number generator failed");
    format!("{TEMP_PREFIX}{}", hex::encode(b))
}

/// A temporary file in `dir`, removed when dropped unless kept.
struct Temp<'a> {
    dir: &'a OwnedFd,
    name: String,
    file: File,
    kept: bool,
}

impl<'a> Temp<'a> {
    fn new(dir: &'a OwnedFd, what: &str) -> Result<Temp<'a>, Fail> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..8 {
            let name = temp_name();
            match openat(dir, name.as_str(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    return Ok(Temp {
                        dir,
                        name,
                        file: File::from(fd),
                        kept: false,
                    });
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Fail::os(e, what)),
            }
        }
        Err(Fail::new(
            "IO_ERROR",
            format!("{what}: no free temporary name"),
        ))
    }

    /// Syncs the data and gives the file its mode.
    fn finish(&mut self, mode: u32, what: &str) -> Result<(), Fail> {
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode)).map_err(|e| Fail::os(e, what))?;
        rustix::fs::fsync(&self.file).map_err(|e| Fail::os(e, what))
    }
}

impl Drop for Temp<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let _ = unlinkat(self.dir, self.name.as_str(), AtFlags::empty());
        }
    }
}

fn io_fail(e: std::io::Error, what: &str) -> Fail {
    match e.raw_os_error() {
        Some(n) => Fail::os(Errno::from_raw_os_error(n), what),
        None => Fail::new("IO_ERROR", format!("{what}: {e}")),
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub created: bool,
    pub mode: u32,
}

/// How a write treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// `filewrite`: replaced, keeping its mode.
    Replace,
    /// `filecreate`: refused with `EXISTS`.
    Refuse,
}

/// Writes `data` atomically: a temporary file in the same directory,
/// synced, renamed over the target (or linked, for a new-only write),
/// then the directory synced.
pub fn write_atomic(
    at: &At<'_>,
    data: &[u8],
    mode: Option<u32>,
    existing: Existing,
) -> Result<Written, Fail> {
    let what = at.show();
    if at.rel.dir_hint {
        return Err(Fail::new(
            "INVALID_PATH",
            format!("{what}: a path ending in / names a directory, not a file"),
        ));
    }
    let (dir, name) = at.parent()?;
    let old = match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) == FileType::RegularFile => Some(st),
        Ok(st) => return Err(not_regular(file_type(&st), &what)),
        Err(Errno::NOENT) => None,
        Err(e) => return Err(Fail::os(e, &what)),
    };
    if old.is_some() && existing == Existing::Refuse {
        return Err(Fail::os(Errno::EXIST, &what));
    }
    let mode = old.as_ref().map(perm).or(mode).unwrap_or(0o644) & MODE_BITS;
    let mut tmp = Temp::new(&dir, &what)?;
    // A replaced file keeps its owner (a daemon run as root must not
    // turn a user's file into root's); where that is not allowed, the
    // write goes on as the daemon's user.
    if let Some(st) = &old {
        let _ = rustix::fs::fchown(
            &tmp.file,
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        );
    }
    tmp.file.write_all(data).map_err(|e| io_fail(e, &what))?;
    tmp.finish(mode, &what)?;
    match existing {
        Existing::Replace => {
            renameat(&dir, tmp.name.as_str(), &dir, name).map_err(|e| Fail::os(e, &what))?;
        }
        Existing::Refuse => no_replace(&dir, &tmp.name, &dir, name, &what)?,
    }
    tmp.kept = true;
    rustix::fs::fsync(&dir).map_err(|e| Fail::os(e, &what))?;
    Ok(Written {
        size: data.len() as u64,
        created: old.is_none(),
        mode,
    })
}

/// Renames without replacing: `RENAME_NOREPLACE`, or where the
/// filesystem lacks it a hard link then unlink of the old name.
fn no_replace(
    from_dir: &OwnedFd,
    from: &str,
    to_dir: &OwnedFd,
    to: &str,
    what: &str,
) -> Result<(), Fail> {
    match renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::INVAL | Errno::NOSYS) => {
            rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty())
                .map_err(|e| Fail::os(e, what))?;
            let _ = unlinkat(from_dir, from, AtFlags::empty());
            Ok(())
        }
        Err(e) => Err(Fail::os(e, what)),
    }
}

/// Appends `data` durably (`O_APPEND`, then `fdatasync`); the new size.
pub fn append(at: &At<'_>, data: &[u8], create: bool) -> Result<u64, Fail> {
    let what = at.show();
    let (dir, name) = at.parent()?;
    match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) != FileType::RegularFile => {
            return Err(not_regular(file_type(&st), &what));
        }
        Ok(_) => {}
        Err(Errno::NOENT) if create => {}
        Err(e) => return Err(Fail::os(e, &what)),
    }
    let mut flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK
        | OFlags::NOCTTY
        | OFlags::CLOEXEC;
    if create {
        flags |= OFlags::CREATE;
    }
    let fd =
        openat(&dir, name, flags, Mode::from_raw_mode(0o644)).map_err(|e| Fail::os(e, &what))?;
    let st = fstat(&fd).map_err(|e| Fail::os(e, &what))?;
    if file_type(&st) != FileType::RegularFile {
        return Err(not_regular(file_type(&st), &what));
    }
    let mut f = File::from(fd);
    f.write_all(data).map_err(|e| io_fail(e, &what))?;
    rustix::fs::fdatasync(&f).map_err(|e| Fail::os(e, &what))?;
    if st.st_size == 0 && create {
        // A file this call may have made: its name must survive a crash.
        rustix::fs::fsync(&dir).map_err(|e| Fail::os(e, &what))?;
    }
    let st = fstat(&f).map_err(|e| Fail::os(e, &what))?;
    Ok(st.st_size as u64)
}

/// What a delete removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub kind: &'static str,
    /// Entries removed (the path itself and, recursively, what it held).
    pub removed: u64,
}

/// Deletes a file, a symlink (not its target), or a directory: an empty
/// one, or with `recursive` its whole tree, by descriptors, following no
/// symlink.
pub fn delete(at: &At<'_>, recursive: bool) -> Result<Deleted, Fail> {
    let what = at.show();
    let (dir, name) = at.parent()?;
    let st = statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, &what))?;
    let t = file_type(&st);
    if t != FileType::Directory {
        if at.rel.dir_hint {
            return Err(Fail::os(Errno::NOTDIR, &what));
        }
        unlinkat(&dir, name, AtFlags::empty()).map_err(|e| Fail::os(e, &what))?;
        rustix::fs::fsync(&dir).map_err(|e| Fail::os(e, &what))?;
        return Ok(Deleted {
            kind: kind(t),
            removed: 1,
        });
    }
    let mut removed = 0;
    if recursive {
        let sub = openat(&dir, name, DIR, Mode::empty()).map_err(|e| Fail::os(e, &what))?;
        empty_tree(&sub, &what, 1, &mut removed)?;
    }
    unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(|e| Fail::os(e, &what))?;
    rustix::fs::fsync(&dir).map_err(|e| Fail::os(e, &what))?;
    Ok(Deleted {
        kind: "dir",
        removed: removed + 1,
    })
}

/// The names in a directory (without `.` and `..`) and their types as
/// the directory says (`Unknown` on filesystems that do not).
pub fn entries(dir: &OwnedFd, what: &str) -> Result<Vec<(Vec<u8>, FileType)>, Fail> {
    let mut out = Vec::new();
    each_entry(dir, what, |n, t| {
        out.push((n.to_vec(), t));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with each name in a directory (without `.` and `..`) as it
/// is read, holding none of them.
pub fn each_entry(
    dir: &OwnedFd,
    what: &str,
    mut f: impl FnMut(&[u8], FileType) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let d = Dir::read_from(dir).map_err(|e| Fail::os(e, what))?;
    for e in d {
        let e = e.map_err(|e| Fail::os(e, what))?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        f(n, e.file_type())?;
    }
    Ok(())
}

fn empty_tree(dir: &OwnedFd, what: &str, depth: usize, removed: &mut u64) -> Result<(), Fail> {
    if depth > MAX_DEPTH {
        return Err(Fail::new(
            "TOO_DEEP",
            format!("{what}: the tree is deeper than {MAX_DEPTH} levels"),
        ));
    }
    for (name, _) in entries(dir, what)? {
        let name = std::ffi::OsStr::from_bytes(&name);
        let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, what))?;
        if file_type(&st) == FileType::Directory {
            let sub = openat(dir, name, DIR, Mode::empty()).map_err(|e| Fail::os(e, what))?;
            empty_tree(&sub, what, depth + 1, removed)?;
            unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| Fail::os(e, what))?;
        } else {
            unlinkat(dir, name, AtFlags::empty()).map_err(|e| Fail::os(e, what))?;
        }
        *removed += 1;
    }
    Ok(())
}

/// Makes a directory (with `parents`, the missing ones above it too, and
/// an existing directory is fine). Whether it made the last one.
pub fn mkdir(at: &At<'_>, parents: bool, mode: u32) -> Result<bool, Fail> {
    let what = at.show();
    let Some((dirs, name)) = at.rel.split_last() else {
        return if parents {
            Ok(false)
        } else {
            Err(Fail::os(Errno::EXIST, &what))
        };
    };
    let mode = Mode::from_raw_mode(mode & MODE_BITS);
    let parent = if parents {
        let mut cur = openat(at.root, ".", DIR, Mode::empty()).map_err(|e| Fail::os(e, &what))?;
        for (i, c) in dirs.iter().enumerate() {
            let here = shown(at.root_name, &dirs[..=i]);
            match mkdirat(&cur, c.as_str(), mode) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Fail::os(e, &here)),
            }
            cur = walk(cur.as_fd(), std::slice::from_ref(c), at.root_name).map_err(|f| {
                Fail::new(
                    f.code,
                    f.message
                        .replacen(&shown(at.root_name, std::slice::from_ref(c)), &here, 1),
                )
            })?;
        }
        cur
    } else {
        open_dir(at.root, dirs, at.root_name)?
    };
    match mkdirat(&parent, name, mode) {
        Ok(()) => {
            rustix::fs::fsync(&parent).map_err(|e| Fail::os(e, &what))?;
            Ok(true)
        }
        Err(Errno::EXIST) if parents => {
            let st =
                statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, &what))?;
            if file_type(&st) == FileType::Directory {
                Ok(false)
            } else {
                Err(Fail::new(
                    "EXISTS",
                    format!("{what}: it exists and is a {}", kind(file_type(&st))),
                ))
            }
        }
        Err(e) => Err(Fail::os(e, &what)),
    }
}

/// Copies a regular file to `to` (replacing a file there only with
/// `overwrite`), through a temporary file renamed into place; the size.
pub fn copy(from: &At<'_>, to: &At<'_>, overwrite: bool, max: u64) -> Result<u64, Fail> {
    let (what_from, what_to) = (from.show(), to.show());
    let (mut src, st) = from.open_file()?;
    let size = st.st_size as u64;
    if size > max {
        return Err(too_large(&what_from, size, max, "files.max_write_bytes"));
    }
    if to.rel.dir_hint {
        return Err(Fail::new(
            "INVALID_PATH",
            format!("{what_to}: a path ending in / names a directory, not a file"),
        ));
    }
    let (dir, name) = to.parent()?;
    match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if file_type(&st) != FileType::RegularFile => {
            return Err(not_regular(file_type(&st), &what_to));
        }
        Ok(_) if !overwrite => {
            return Err(Fail::new(
                "EXISTS",
                format!("{what_to}: it already exists (give overwrite: true to replace it)"),
            ));
        }
        Ok(_) | Err(Errno::NOENT) => {}
        Err(e) => return Err(Fail::os(e, &what_to)),
    }
    let mut tmp = Temp::new(&dir, &what_to)?;
    // At most the size seen, plus one byte to tell a file still growing.
    let copied = std::io::copy(&mut (&mut src).take(max + 1), &mut tmp.file)
        .map_err(|e| io_fail(e, &what_to))?;
    if copied > max {
        return Err(too_large(&what_from, copied, max, "files.max_write_bytes"));
    }
    tmp.finish(perm(&st) & MODE_BITS, &what_to)?;
    if overwrite {
        renameat(&dir, tmp.name.as_str(), &dir, name).map_err(|e| Fail::os(e, &what_to))?;
    } else {
        no_replace(&dir, &tmp.name, &dir, name, &what_to)?;
    }
    tmp.kept = true;
    rustix::fs::fsync(&dir).map_err(|e| Fail::os(e, &what_to))?;
    Ok(copied)
}

/// Moves (renames) `from` to `to`, both by their parent descriptors;
/// replaces only with `overwrite`. Across filesystems: `CROSS_DEVICE`.
pub fn rename(from: &At<'_>, to: &At<'_>, overwrite: bool) -> Result<&'static str, Fail> {
    let (what_from, what_to) = (from.show(), to.show());
    let (fdir, fname) = from.parent()?;
    let st =
        statat(&fdir, fname, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, &what_from))?;
    let (tdir, tname) = to.parent()?;
    let r = if overwrite {
        renameat(&fdir, fname, &tdir, tname).map_err(|e| Fail::os(e, &what_to))
    } else {
        match renameat_with(&fdir, fname, &tdir, tname, RenameFlags::NOREPLACE) {
            Err(Errno::INVAL | Errno::NOSYS) => {
                match statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => Err(Fail::os(Errno::EXIST, &what_to)),
                    Err(_) => {
                        renameat(&fdir, fname, &tdir, tname).map_err(|e| Fail::os(e, &what_to))
                    }
                }
            }
            r => r.map_err(|e| Fail::os(e, &what_to)),
        }
    };
    r.map_err(|f| match f.code {
        "CROSS_DEVICE" => Fail::new(
            "CROSS_DEVICE",
            format!("{what_from} and {what_to} are on different filesystems: filecopy then filedelete instead"),
        ),
        "EXISTS" => Fail::new("EXISTS", format!("{what_to}: it already exists (give overwrite: true to replace it)")),
        _ => f,
    })?;
    rustix::fs::fsync(&tdir).map_err(|e| Fail::os(e, &what_to))?;
    rustix::fs::fsync(&fdir).map_err(|e| Fail::os(e, &what_from))?;
    Ok(kind(file_type(&st)))
}

pub fn too_large(what: &str, size: u64, max: u64, setting: &str) -> Fail {
    Fail::new(
        "TOO_LARGE",
        format!(
            "{what} is {size} bytes, over the limit of {max} ({setting}); read it with filereadstream, or in pieces with offset and length"
        ),
    )
}

/// A symlink's target, read without following it.
pub fn link_target(dir: &OwnedFd, name: &std::ffi::OsStr, what: &str) -> Result<Vec<u8>, Fail> {
    readlinkat(dir, name, Vec::new())
        .map(|c| c.into_bytes())
        .map_err(|e| Fail::os(e, what))
}

/// Reads `len` bytes of `file` from `offset` (fewer at its end).
pub fn read_range(file: &mut File, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, Fail> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_fail(e, what))?;
    let mut buf = Vec::with_capacity(len.min(1 << 24) as usize);
    file.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| io_fail(e, what))?;
    Ok(buf)
}

/// What a tar of a tree held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries left out (FIFOs, sockets, devices), as `path: kind`.
    pub skipped: Vec<String>,
}

/// Writes a tar of the file or directory `at` into `out`: directories,
/// regular files, and symlinks as symlinks (never followed); other kinds
/// are left out and named in the summary. Entries are named from the
/// path's last name down (the root's own entries from the top).
pub fn tar_tree<W: Write>(at: &At<'_>, out: W) -> Result<TarSummary, Fail> {
    let what = at.show();
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut sum = TarSummary::default();
    let st = at.stat()?;
    let top = at.rel.name().map(PathBuf::from);
    match file_type(&st) {
        FileType::Directory => {
            let dir = at.open_dir()?;
            if let Some(top) = &top {
                dir_entry(&mut b, top, &st, &what)?;
                sum.dirs += 1;
            }
            tar_dir(
                &mut b,
                &dir,
                top.as_deref().unwrap_or(Path::new("")),
                &what,
                1,
                &mut sum,
            )?;
        }
        _ => {
            let (dir, name) = at.parent()?;
            tar_one(
                &mut b,
                &dir,
                std::ffi::OsStr::new(name),
                Path::new(name),
                &what,
                &mut sum,
            )?;
        }
    }
    b.into_inner().map_err(|e| io_fail(e, &what))?;
    Ok(sum)
}

fn header(st: &Stat, t: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(perm(st));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

fn dir_entry<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    st: &Stat,
    what: &str,
) -> Result<(), Fail> {
    let mut h = header(st, tar::EntryType::Directory);
    b.append_data(&mut h, path, std::io::empty())
        .map_err(|e| io_fail(e, what))
}

fn tar_dir<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    prefix: &Path,
    what: &str,
    depth: usize,
    sum: &mut TarSummary,
) -> Result<(), Fail> {
    if depth > MAX_DEPTH {
        return Err(Fail::new(
            "TOO_DEEP",
            format!("{what}: the tree is deeper than {MAX_DEPTH} levels"),
        ));
    }
    let mut names = entries(dir, what)?;
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in names {
        let name = std::ffi::OsStr::from_bytes(&name);
        let path = prefix.join(name);
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone since the listing.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(Fail::os(e, what)),
        };
        if file_type(&st) == FileType::Directory {
            let sub = match openat(dir, name, DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(Fail::os(e, what)),
            };
            dir_entry(b, &path, &st, what)?;
            sum.dirs += 1;
            tar_dir(b, &sub, &path, what, depth + 1, sum)?;
        } else {
            tar_one(b, dir, name, &path, what, sum)?;
        }
    }
    Ok(())
}

/// One non-directory entry.
fn tar_one<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    path: &Path,
    what: &str,
    sum: &mut TarSummary,
) -> Result<(), Fail> {
    let st = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| Fail::os(e, what))?;
    match file_type(&st) {
        FileType::Symlink => {
            let target = link_target(dir, name, what)?;
            let mut h = header(&st, tar::EntryType::Symlink);
            b.append_link(&mut h, path, std::ffi::OsStr::from_bytes(&target))
                .map_err(|e| io_fail(e, what))?;
            sum.symlinks += 1;
        }
        FileType::RegularFile => {
            let flags = OFlags::RDONLY
                | OFlags::NOFOLLOW
                | OFlags::NONBLOCK
                | OFlags::NOCTTY
                | OFlags::CLOEXEC;
            let fd = match openat(dir, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return Ok(()),
                Err(e) => return Err(Fail::os(e, what)),
            };
            let st = fstat(&fd).map_err(|e| Fail::os(e, what))?;
            if file_type(&st) != FileType::RegularFile {
                sum.skipped
                    .push(format!("{}: {}", path.display(), kind(file_type(&st))));
                return Ok(());
            }
            let size = st.st_size as u64;
            let mut h = header(&st, tar::EntryType::Regular);
            h.set_size(size);
            // Exactly `size` bytes whatever the file does meanwhile: cut
            // if it grew, zeros if it shrank.
            let body = File::from(fd)
                .take(size)
                .chain(std::io::repeat(0))
                .take(size);
            b.append_data(&mut h, path, body)
                .map_err(|e| io_fail(e, what))?;
            sum.files += 1;
        }
        t => sum.skipped.push(format!("{}: {}", path.display(), kind(t))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roots() -> Vec<Root> {
        vec![
            Root {
                name: "docs".into(),
                dir: "/srv/docs".into(),
            },
            Root {
                name: "deep".into(),
                dir: "/srv/docs/deep".into(),
            },
            Root {
                name: "work".into(),
                dir: "/home/u/work".into(),
            },
        ]
    }

    #[test]
    fn paths_parse_into_components_or_say_why_not() {
        assert_eq!(RelPath::parse("a//b/./c").unwrap().show(), "a/b/c");
        assert!(RelPath::parse(".").unwrap().is_root());
        assert!(RelPath::parse("a/").unwrap().dir_hint);
        assert_eq!(RelPath::parse(""), Err(PathError::Empty));
        assert_eq!(RelPath::parse("a/../b"), Err(PathError::DotDot));
        assert_eq!(RelPath::parse("a\0b"), Err(PathError::Nul));
        assert_eq!(
            RelPath::parse(&"a/".repeat(3000)),
            Err(PathError::TooLong(6000))
        );
        assert_eq!(
            RelPath::parse(&"x".repeat(256)),
            Err(PathError::NameTooLong(256))
        );
        assert_eq!(RelPath::parse("é/日本/🦀").unwrap().components().len(), 3);
    }

    #[test]
    fn absolute_paths_land_in_the_deepest_root_that_holds_them() {
        let r = roots();
        let (n, p) = locate(&r, None, "/srv/docs/a/b").unwrap();
        assert_eq!((n.as_str(), p.show().as_str()), ("docs", "a/b"));
        let (n, p) = locate(&r, None, "/srv/docs/deep/x").unwrap();
        assert_eq!((n.as_str(), p.show().as_str()), ("deep", "x"));
        let (n, p) = locate(&r, Some("docs"), "/srv/docs/deep/x").unwrap();
        assert_eq!((n.as_str(), p.show().as_str()), ("docs", "deep/x"));
        assert_eq!(locate(&r, None, "/srv/docsx/a"), Err(PathError::Outside));
        assert_eq!(
            locate(&r, Some("work"), "/srv/docs/a"),
            Err(PathError::Outside)
        );
        assert_eq!(locate(&r, None, "/etc/passwd"), Err(PathError::Outside));
        assert_eq!(
            locate(&r, None, "/srv/docs/../../etc"),
            Err(PathError::DotDot)
        );
        assert!(locate(&r, None, "/srv/docs").unwrap().1.is_root());
        assert_eq!(locate(&r, None, "a").unwrap().0, "");
        assert_eq!(locate(&r[..1], None, "a").unwrap().0, "docs");
    }

    #[test]
    fn join_normalizes_and_refuses_climbing_out() {
        let j = |p: &[&str]| join(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(j(&["a/b", "../c", "./d/"]).unwrap().show(), "a/c/d");
        assert_eq!(j(&["a", ".."]).unwrap().show(), ".");
        assert_eq!(j(&["a", "../.."]), Err(PathError::Climbs));
        assert_eq!(j(&["a", "/etc"]), Err(PathError::AbsolutePart));
        assert_eq!(j(&["a\0"]), Err(PathError::Nul));
    }

    proptest! {
        /// Whatever the text, a parsed path has only plain components.
        #[test]
        fn parsed_paths_never_hold_a_way_out(s in "\\PC{0,64}|[./a\\x00]{0,24}") {
            if let Ok(p) = RelPath::parse(&s) {
                for c in p.components() {
                    prop_assert!(!c.is_empty() && c != "." && c != "..");
                    prop_assert!(!c.contains('/') && !c.contains('\0'));
                }
            }
        }

        /// Joined parts never climb: the result is a plain path, and
        /// every part's components stayed inside.
        #[test]
        fn joins_never_leave_the_root(parts in proptest::collection::vec("[./ab]{0,8}", 0..6)) {
            if let Ok(p) = join(&parts) {
                for c in p.components() {
                    prop_assert!(c != ".." && c != "." && !c.is_empty());
                }
                prop_assert!(RelPath::parse(&p.show()).is_ok());
            }
        }

        /// An absolute path is placed under a root only if it lies under
        /// that root's directory, component for component.
        #[test]
        fn absolute_paths_only_land_under_a_root_that_holds_them(s in "/[a-z/.]{0,30}") {
            let r = roots();
            if let Ok((name, rel)) = locate(&r, None, &s) {
                let root = r.iter().find(|x| x.name == name).unwrap();
                let full = root.dir.join(rel.show());
                let lexical = clean_abs(Path::new(&s)).unwrap();
                prop_assert_eq!(clean_abs(&full).unwrap(), lexical);
            }
        }
    }

    /// A real tree: `..`, symlinks out (file and dir), a symlink root, a
    /// FIFO, and both ways of walking.
    #[test]
    fn resolution_stays_beneath_the_root_on_disk() {
        let t = tempfile::tempdir().unwrap();
        let root_dir = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"outside").unwrap();
        std::fs::write(root_dir.join("sub/in.txt"), b"inside").unwrap();
        std::os::unix::fs::symlink(&outside, root_dir.join("out_dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root_dir.join("out_file")).unwrap();
        std::os::unix::fs::symlink("sub", root_dir.join("rel_link")).unwrap();
        rustix::fs::mkfifoat(CWD, root_dir.join("fifo"), Mode::from_raw_mode(0o600)).unwrap();
        let root = Root {
            name: "r".into(),
            dir: root_dir.clone(),
        };
        let fd = root.open().unwrap();
        for openat2_on in [true, false] {
            set_openat2(openat2_on);
            let read = |p: &str| {
                let rel = RelPath::parse(p).unwrap();
                let at = At {
                    root: fd.as_fd(),
                    root_name: "r",
                    rel: &rel,
                };
                at.open_file().map(|(mut f, _)| {
                    let mut s = String::new();
                    f.read_to_string(&mut s).unwrap();
                    s
                })
            };
            assert_eq!(read("sub/in.txt").unwrap(), "inside");
            assert_eq!(read("out_file").unwrap_err().code, "SYMLINK");
            assert_eq!(read("out_dir/secret").unwrap_err().code, "SYMLINK");
            assert_eq!(read("rel_link/in.txt").unwrap_err().code, "SYMLINK");
            assert_eq!(read("fifo").unwrap_err().code, "NOT_A_FILE");
            assert_eq!(read("sub/in.txt/x").unwrap_err().code, "NOT_A_DIRECTORY");
            assert_eq!(read("sub").unwrap_err().code, "IS_A_DIRECTORY");
            assert_eq!(read("nope").unwrap_err().code, "NOT_FOUND");
        }
        set_openat2(true);
        let link_root = t.path().join("link_root");
        std::os::unix::fs::symlink(&root_dir, &link_root).unwrap();
        let e = Root {
            name: "l".into(),
            dir: link_root,
        }
        .open()
        .unwrap_err();
        assert_eq!(e.code, "ROOT_UNAVAILABLE");
        assert!(e.message.contains("symlink"), "{e}");
    }

    /// Arbitrary paths (made of the names on disk, `..`, `.`, empty and
    /// random components, absolute or not) against a real tree full of
    /// symlinks out: whatever resolves, by either walk, never reads or
    /// lists anything outside.
    #[test]
    fn arbitrary_paths_never_reach_outside_on_disk() {
        use proptest::test_runner::{Config, TestRunner};
        let t = tempfile::tempdir().unwrap();
        let root_dir = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"OUT").unwrap();
        std::fs::write(outside.join("a.txt"), b"OUT").unwrap();
        std::fs::write(root_dir.join("a.txt"), b"in").unwrap();
        std::fs::write(root_dir.join("sub/b.txt"), b"in").unwrap();
        std::os::unix::fs::symlink(&outside, root_dir.join("out")).unwrap();
        std::os::unix::fs::symlink("../outside", root_dir.join("up")).unwrap();
        std::os::unix::fs::symlink("..", root_dir.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink("/", root_dir.join("sub/abs")).unwrap();
        let roots = vec![Root {
            name: "r".into(),
            dir: root_dir.clone(),
        }];
        let fd = roots[0].open().unwrap();
        let token = prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("sub".to_string()),
            Just("out".to_string()),
            Just("up".to_string()),
            Just("loop".to_string()),
            Just("abs".to_string()),
            Just("a.txt".to_string()),
            Just("b.txt".to_string()),
            Just("secret.txt".to_string()),
            Just("outside".to_string()),
            "\\PC{0,4}",
        ];
        let prefix = prop_oneof![
            Just(String::new()),
            Just("/".to_string()),
            Just(format!("{}/", root_dir.display())),
            Just(format!("{}/", t.path().display())),
        ];
        let strategy = (prefix, proptest::collection::vec(token, 0..8));
        let (read, listed) = (
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        );
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            ..Config::default()
        });
        runner
            .run(&strategy, |(prefix, parts)| {
                let s = format!("{prefix}{}", parts.join("/"));
                let Ok((name, rel)) = locate(&roots, None, &s) else {
                    return Ok(());
                };
                prop_assert_eq!(name.as_str(), "r");
                for walk_only in [false, true] {
                    set_openat2(!walk_only);
                    let at = At {
                        root: fd.as_fd(),
                        root_name: "r",
                        rel: &rel,
                    };
                    if let Ok((mut f, _)) = at.open_file() {
                        let mut got = Vec::new();
                        f.read_to_end(&mut got).unwrap();
                        prop_assert_eq!(&got[..], b"in", "{:?}", s);
                        read.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(dir) = at.open_dir() {
                        let names = entries(&dir, "x").unwrap();
                        prop_assert!(
                            names.iter().all(|(n, _)| n != b"secret.txt"),
                            "{:?} listed outside",
                            s
                        );
                        listed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                set_openat2(true);
                Ok(())
            })
            .unwrap();
        // The paths did reach files and directories inside.
        let (read, listed) = (read.into_inner(), listed.into_inner());
        assert!(read >= 4 && listed >= 40, "read {read}, listed {listed}");
    }

    #[test]
    fn writes_are_atomic_and_keep_the_mode_deletes_go_by_descriptor() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let fd = Root {
            name: "r".into(),
            dir: t.path().to_path_buf(),
        }
        .open()
        .unwrap();
        let at = |p: &str| RelPath::parse(p).unwrap();
        let a = at("a.txt");
        let here = At {
            root: fd.as_fd(),
            root_name: "r",
            rel: &a,
        };
        let w = write_atomic(&here, b"one", Some(0o600), Existing::Refuse).unwrap();
        assert!(w.created);
        assert_eq!(
            write_atomic(&here, b"x", None, Existing::Refuse)
                .unwrap_err()
                .code,
            "EXISTS"
        );
        std::fs::set_permissions(
            t.path().join("a.txt"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        // Another owner (possible when the tests run as root): kept.
        let other = rustix::process::geteuid().is_root().then(|| {
            std::os::unix::fs::chown(t.path().join("a.txt"), Some(4321), Some(4321)).unwrap();
        });
        let w = write_atomic(&here, b"two", Some(0o600), Existing::Replace).unwrap();
        assert!(!w.created);
        let m = std::fs::metadata(t.path().join("a.txt")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        if other.is_some() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                (m.uid(), m.gid()),
                (4321, 4321),
                "a replaced file keeps its owner"
            );
        }
        assert_eq!(std::fs::read(t.path().join("a.txt")).unwrap(), b"two");
        assert_eq!(append(&here, b"+3", false).unwrap(), 5);
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.txt")]);
        // A tree with a symlink out: the recursive delete removes the
        // link, not what it points to.
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("precious"), b"p").unwrap();
        let d = at("d/e/f");
        assert!(
            mkdir(
                &At {
                    root: fd.as_fd(),
                    root_name: "r",
                    rel: &d
                },
                true,
                0o755
            )
            .unwrap()
        );
        std::os::unix::fs::symlink(keep.path(), t.path().join("d/e/link")).unwrap();
        let top = at("d");
        let top_at = At {
            root: fd.as_fd(),
            root_name: "r",
            rel: &top,
        };
        assert_eq!(delete(&top_at, false).unwrap_err().code, "NOT_EMPTY");
        let r = delete(&top_at, true).unwrap();
        assert_eq!(r.removed, 4);
        assert!(keep.path().join("precious").exists());
        assert!(!t.path().join("d").exists());
    }
}
