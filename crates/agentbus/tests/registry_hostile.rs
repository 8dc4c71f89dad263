//! A registry that another user could write is never trusted, whoever
//! runs the daemon (root here): a registry dir of another user's, a
//! symbolic link, or one under a directory anyone may write is refused at
//! start with an error that names it and the fix; an entry another user
//! could have written (theirs, writable by others, a link, not a plain
//! file) is ignored and reported — nothing is forwarded to it. The
//! hostile side runs as `nobody`.

mod common;

use common::{Cred, Daemon, NOBODY, bin, chown_to_nobody, is_root};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `agentbus daemon` with `args`; it must refuse to start. Its stderr.
fn refused(data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("daemon")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("AGENTBUS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started: {out:?}");
    assert!(out.stdout.is_empty(), "it printed a URL: {out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_registry_dir_another_user_could_write_is_refused_at_start() {
    if !is_root() {
        eprintln!("skipped: needs root to act as nobody");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");

    // Made by nobody.
    let open = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let theirs = open.path().join("theirs");
    let made = Command::new("mkdir")
        .arg(&theirs)
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(made.success());
    let err = refused(&data, &["--registry-dir", theirs.to_str().unwrap()]);
    assert!(err.contains(theirs.to_str().unwrap()), "{err}");
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert!(err.contains("--registry-dir"), "the fix is named: {err}");
    // Its agents/ subdir planted by nobody inside a dir of ours.
    let ours = tmp.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    std::fs::create_dir(ours.join("agents")).unwrap();
    chown_to_nobody(&ours.join("agents"));
    let err = refused(&data, &["--registry-dir", ours.to_str().unwrap()]);
    assert!(err.contains("agents") && err.contains("uid 65534"), "{err}");

    // A symbolic link, even to a dir of ours.
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = refused(&data, &["--registry-dir", link.to_str().unwrap()]);
    assert!(err.contains("symbolic link"), "{err}");

    // Under a directory anyone may write, without the sticky bit.
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let under = shared.join("registry");
    std::fs::create_dir(&under).unwrap();
    let err = refused(&data, &["--registry-dir", under.to_str().unwrap()]);
    assert!(err.contains("may be written by anyone"), "{err}");

    // The data dir is held to the same rule.
    let err = refused(&theirs, &[]);
    assert!(err.contains("belongs to uid 65534"), "{err}");
}

/// A loopback port that counts the connections made to it.
async fn trap() -> (String, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

#[tokio::test]
async fn entries_another_user_could_have_written_are_ignored_and_never_forwarded_to() {
    if !is_root() {
        eprintln!("skipped: needs root to act as nobody");
        return;
    }
    let reg = tempfile::tempdir().unwrap();
    let r = reg.path().display().to_string();
    let d = Daemon::start_args(&["--registry-dir", &r]);
    let agents = reg.path().join("agents");
    let (url, hits) = trap().await;
    let entry = |name: &str| {
        json!({
            "agent_id": name, "local_url": url, "pid": std::process::id(),
            "updated_at": agentbus_proto::now_ms(), "forward_token": "planted",
        })
        .to_string()
    };
    // Written by nobody (when the dir was open to them, say).
    std::fs::write(agents.join("v-theirs.json"), entry("v-theirs")).unwrap();
    chown_to_nobody(&agents.join("v-theirs.json"));
    // Ours, but writable by anyone.
    std::fs::write(agents.join("v-open.json"), entry("v-open")).unwrap();
    std::fs::set_permissions(
        agents.join("v-open.json"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    // A link to a file outside.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("x.json");
    std::fs::write(&target, entry("v-link")).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&target, agents.join("v-link.json")).unwrap();
    // A hard link: the same file under two names.
    std::fs::write(outside.path().join("y.json"), entry("v-hard")).unwrap();
    std::fs::set_permissions(
        outside.path().join("y.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::hard_link(outside.path().join("y.json"), agents.join("v-hard.json")).unwrap();
    // A named pipe (a reader would hang on it).
    nix::unistd::mkfifo(
        &agents.join("v-fifo.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // And one it may trust: ours, 0600 (the trap stands in for a peer).
    std::fs::write(agents.join("v-good.json"), entry("v-good")).unwrap();
    std::fs::set_permissions(
        agents.join("v-good.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    for name in ["v-theirs", "v-open", "v-link", "v-hard", "v-fifo"] {
        let (status, body) = d.jekt(name, "hello", &Cred::Key).await;
        assert_eq!(status, 404, "{name}: {body}");
        let (status, _) = d.msg(name, "hello", &Cred::Key).await;
        assert_eq!(
            status, 201,
            "{name}: stored here for later, not sent to the planted entry"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "something was sent to a planted entry"
    );
    let (_, dir) = d.get("/v1/directory", &Cred::Key).await;
    let listed: Vec<&str> = dir["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["agent_id"].as_str())
        .collect();
    assert!(listed.contains(&"v-good"), "{dir}");
    for name in ["v-theirs", "v-open", "v-link", "v-hard", "v-fifo"] {
        assert!(!listed.contains(&name), "{name} listed: {dir}");
    }
    let (_, stats) = d.get("/v1/stats", &Cred::Key).await;
    assert!(
        stats["registry_untrusted"].as_u64().unwrap() >= 5,
        "{stats}"
    );
    // The trusted one is used: the forward reaches the trap.
    let _ = d.jekt("v-good", "hello", &Cred::Key).await;
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "the trusted entry was not used"
    );
    // The sweeper leaves what it does not trust alone, and the daemon
    // serves on.
    assert!(agents.join("v-theirs.json").exists());
    assert_eq!(d.get("/v1/agents", &Cred::Key).await.0, 200);
}
