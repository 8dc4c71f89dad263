//! Directories only this user may write, and the files in them.
//!
//! The data dir and the registry dir hold what the daemon trusts (its own
//! keys; other instances' addresses and forward tokens). A directory that
//! another user could write is never trusted, whoever runs the daemon
//! (root too): it could hold entries they planted. So a [`PrivateDir`] is
//! opened without following a symbolic link, and refused unless it and
//! every directory above it belong to this user (or root), and none above
//! it may be written by others without the sticky bit (they could swap
//! it). Once open, everything in it is reached through the open
//! directory, never its path again, so renaming or replacing the path
//! later changes nothing. An entry is read only if it is a plain file of
//! this user that nobody else may read or write (mode 0600, one link);
//! anything else is ignored, and reported once.

use crate::DaemonError;
use agentbus_proto::sync::lock;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The largest entry read.
const MAX_ENTRY: u64 = 64 * 1024;

/// An open directory of this user's, checked.
#[derive(Debug)]
pub struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
    // Entries already reported as not trusted: (name, inode).
    reported: Mutex<HashSet<(String, u64)>>,
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn unsafe_dir(path: &Path, why: String, fix: &str) -> DaemonError {
    DaemonError::UnsafeDir {
        path: path.to_path_buf(),
        why,
        fix: fix.to_string(),
    }
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(rustix::io::Errno) -> DaemonError + 'a {
    move |e| DaemonError::Io {
        what,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

const FIX_OWN: &str = "use a directory of your own: remove it (agentbus creates it 0700) or choose another with --data-dir / --registry-dir";

/// Checks an opened directory's own status: a directory of this user.
/// One of ours that others may enter is tightened to 0700.
fn check_dir(fd: &OwnedFd, path: &Path) -> Result<(), DaemonError> {
    let st = rustix::fs::fstat(fd).map_err(io_err("inspect", path))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(unsafe_dir(path, "it is not a directory".into(), FIX_OWN));
    }
    if st.st_uid != euid() {
        return Err(unsafe_dir(
            path,
            format!(
                "it belongs to uid {}, not to this user (uid {}): another user could have put entries in it",
                st.st_uid,
                euid()
            ),
            FIX_OWN,
        ));
    }
    if st.st_mode & 0o077 != 0 {
        tracing::warn!(dir = %path.display(), mode = format!("{:o}", st.st_mode & 0o777), "tightening a private directory to 0700");
        rustix::fs::fchmod(fd, Mode::from_raw_mode(0o700))
            .map_err(io_err("set permissions of", path))?;
    }
    Ok(())
}

/// Checks the directories above `path`: each must belong to this user or
/// root, and none may be writable by others unless sticky.
fn check_ancestors(path: &Path) -> Result<(), DaemonError> {
    let real = std::fs::canonicalize(path).map_err(|source| DaemonError::Io {
        what: "resolve",
        path: path.to_path_buf(),
        source,
    })?;
    for dir in real.ancestors().skip(1) {
        let st = rustix::fs::stat(dir).map_err(io_err("inspect", dir))?;
        let sticky = st.st_mode & 0o1000 != 0;
        if st.st_uid != 0 && st.st_uid != euid() {
            return Err(unsafe_dir(
                path,
                format!(
                    "{} above it belongs to uid {}, who could replace it",
                    dir.display(),
                    st.st_uid
                ),
                "choose a directory under ones only you (or root) control",
            ));
        }
        if st.st_mode & 0o002 != 0 && !sticky {
            return Err(unsafe_dir(
                path,
                format!(
                    "{} above it may be written by anyone (mode {:o}, no sticky bit): another user could replace it",
                    dir.display(),
                    st.st_mode & 0o7777
                ),
                "choose a directory under ones only you (or root) control",
            ));
        }
    }
    Ok(())
}

/// Why an entry is not trusted, if it is not.
fn entry_problem(st: &Stat) -> Option<String> {
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Some("not a plain file".into());
    }
    if st.st_uid != euid() {
        return Some(format!("it belongs to uid {}", st.st_uid));
    }
    if st.st_mode & 0o077 != 0 {
        return Some(format!(
            "others may read or write it (mode {:o})",
            st.st_mode & 0o777
        ));
    }
    if st.st_nlink != 1 {
        return Some(format!("it has {} links", st.st_nlink));
    }
    None
}

impl PrivateDir {
    /// Opens `path` (creating it and its missing parents 0700), checked.
    pub fn open(path: &Path) -> Result<PrivateDir, DaemonError> {
        if let Err(e) = rustix::fs::lstat(path) {
            if e != rustix::io::Errno::NOENT {
                return Err(io_err("inspect", path)(e));
            }
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| DaemonError::Io {
                    what: "create",
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => unsafe_dir(
                path,
                "it is a symbolic link (or not a directory)".into(),
                "give the real directory, which must be your own",
            ),
            e => io_err("open", path)(e),
        })?;
        check_dir(&fd, path)?;
        check_ancestors(path)?;
        Ok(PrivateDir {
            fd,
            path: path.to_path_buf(),
            reported: Mutex::new(HashSet::new()),
        })
    }

    /// The directory `name` in this one (created 0700 if missing),
    /// checked as [`PrivateDir::open`] checks.
    pub fn sub(&self, name: &str) -> Result<PrivateDir, DaemonError> {
        let path = self.path.join(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io_err("create", &path)(e)),
        }
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => unsafe_dir(
                &path,
                "it is a symbolic link (or not a directory)".into(),
                FIX_OWN,
            ),
            e => io_err("open", &path)(e),
        })?;
        check_dir(&fd, &path)?;
        Ok(PrivateDir {
            fd,
            path,
            reported: Mutex::new(HashSet::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names in this directory.
    pub fn names(&self) -> Vec<String> {
        let Ok(dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let name = OsStr::from_bytes(e.file_name().to_bytes());
                name.to_str().map(String::from)
            })
            .filter(|n| n != "." && n != "..")
            .collect()
    }

    /// Reads entry `name` if it is trusted: `Ok(None)` if there is none,
    /// `Err` with why not if it is not trusted (reported once).
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                let why = "a symbolic link".to_string();
                self.report_once(name, 0, &why);
                return Err(why);
            }
            Err(e) => return Err(e.to_string()),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| e.to_string())?;
        if let Some(why) = entry_problem(&st) {
            self.report_once(name, st.st_ino, &why);
            return Err(why);
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_ENTRY)
            .read_to_end(&mut bytes)
            .map_err(|e| e.to_string())?;
        Ok(Some(bytes))
    }

    fn report_once(&self, name: &str, inode: u64, why: &str) {
        let first = lock(&self.reported).insert((name.to_string(), inode));
        if first {
            tracing::warn!(
                entry = %self.path.join(name).display(),
                why,
                "ignoring an entry another user could have written"
            );
        }
    }

    /// Writes entry `name` whole: a 0600 file under a temporary name,
    /// synced, renamed into place.
    pub fn write(&self, name: &str, contents: &[u8]) -> std::io::Result<()> {
        let tmp = format!(".{name}.tmp.{}", std::process::id());
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let written = (|| {
            let mut f = std::fs::File::from(fd);
            f.write_all(contents)?;
            f.sync_all()?;
            rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Removes entry `name` (whatever it is).
    pub fn remove(&self, name: &str) -> bool {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).is_ok()
    }

    /// How many entries were found untrusted (each counted once).
    pub fn untrusted(&self) -> usize {
        lock(&self.reported).len()
    }
}
