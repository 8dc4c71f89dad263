//! The App API's `conn*` methods against a real OpenSSH server: each test
//! starts its own `sshd` on a free loopback port with a host key and a
//! user key made here (`ssh-keygen`), and gives the daemon an ssh config
//! naming it (`conn.ssh_config`). The Python client
//! (`tests/python/app_api_conn.py`) drives `/ws`; these tests check its
//! report and what happened on the machine (masters, marker files, the
//! audit log).

mod common;

use common::{Cred, Daemon, free_port, run_python};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private sshd, killed on drop.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "agentbus-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(ok.success());
}

fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("the test user has a name")
}

impl Sshd {
    /// Starts sshd (`-D -e`, its own config) and waits until it accepts
    /// connections.
    fn start() -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: install openssh-server (scripts/test.sh does)"
        );
        // sshd run as root wants its privilege separation directory.
        if common::is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
             StrictModes no\nUsePAM no\nPidFile none\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             AcceptEnv *\nLogLevel VERBOSE\n",
            hk = d.join("host_key").display(),
            ak = d.join("authorized_keys").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new(sshd)
            .arg("-f")
            .arg(d.join("sshd_config"))
            .args(["-D", "-e"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .expect("start sshd");
        let s = Sshd { child, dir, port };
        // Waits for its word rather than knocking (a knock is logged as a
        // connection, and a test checks that none came).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = s.log();
            if log.contains("Server listening on") {
                break;
            }
            assert!(Instant::now() < deadline, "sshd did not listen: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// An ssh config for the daemon: `testhost` is this sshd (its host
    /// key the only one known, checked strictly), `refusedhost` a port
    /// nobody listens on. It asks ssh to send every `AGENTBUS_*` variable
    /// (and sshd accepts any): none must be there to send.
    fn client_config(&self) -> PathBuf {
        let d = self.dir.path();
        let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")),
        )
        .unwrap();
        let common = format!(
            "  HostName 127.0.0.1\n  User {user}\n  IdentityFile {id}\n  IdentitiesOnly yes\n\
             \x20 UserKnownHostsFile {kh}\n  StrictHostKeyChecking yes\n  SendEnv AGENTBUS_*\n",
            user = user_name(),
            id = d.join("user_key").display(),
            kh = d.join("known_hosts").display(),
        );
        // strangerhost: this sshd, its host key unknown; nokeyhost: this
        // sshd, with a key it does not know.
        keygen(&d.join("stranger_key"));
        std::fs::write(d.join("no_known_hosts"), "").unwrap();
        let unknown_key = common.replace("/known_hosts", "/no_known_hosts");
        let no_key = common.replace("/user_key", "/stranger_key");
        let text = format!(
            "Host testhost otherhost\n  Port {p}\n{common}\nHost refusedhost\n  Port {}\n{common}\n\
             Host strangerhost\n  Port {p}\n{unknown_key}\nHost nokeyhost\n  Port {p}\n{no_key}",
            free_port(),
            p = self.port,
        );
        let path = d.join("ssh_config");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Kills, on drop, every ssh master whose control socket is in `dir`
/// (a test that fails half-way leaves none running).
struct Masters(String);

impl Drop for Masters {
    fn drop(&mut self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            // ssh is given the path with each % doubled.
            if cmdline.contains(&self.0) || cmdline.contains(&self.0.replace('%', "%%")) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A daemon whose ssh config is `sshd`'s. Its data dir's name holds a
/// `%` (ssh expands `%` tokens in a control socket's path: it must stay
/// a `%`).
fn daemon_for(sshd: &Sshd, extra: &str) -> Daemon {
    let dir = tempfile::Builder::new()
        .prefix("conn%h-")
        .tempdir()
        .unwrap();
    let toml = format!(
        "[conn]\nssh_config = {:?}\nconnect_timeout_s = 5\n{extra}",
        sshd.client_config().display().to_string()
    );
    Daemon::start_in(dir, Some(toml))
}

fn error_code(e: &Value) -> (i64, String) {
    (
        e["code"].as_i64().unwrap_or(0),
        e["name"].as_str().unwrap_or("").to_string(),
    )
}

async fn audit_text(d: &Daemon) -> String {
    let (_, b) = d.get("/v1/audit?limit=2000", &Cred::Key).await;
    b.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_carries_panes_to_the_host_and_ends_cleanly() {
    let sshd = Sshd::start();
    let d = daemon_for(&sshd, "");
    let _masters = Masters(format!("{}/conn/", d.data_dir().display()));
    let marker = d.data_dir().join("words-marker");
    let data_dir = d.data_dir().display().to_string();
    let marker_arg = marker.display().to_string();
    let peer = d.open("peer", "shell", &["sh"]).await;
    let peer_token = d.own_token("peer", &peer).await;
    let r = run_python(
        "app_api_conn.py",
        d.app_api_args(
            "lifecycle",
            &[
                "--data-dir",
                &data_dir,
                "--marker",
                &marker_arg,
                "--token",
                &peer_token,
            ],
        ),
    )
    .await;
    // A generic pane on a host is a shell pane to an agent token.
    assert_eq!(r["peer_send"]["code"], "FORBIDDEN", "{r}");
    assert!(
        r["peer_send"]["message"]
            .as_str()
            .unwrap()
            .contains("shell"),
        "{r}"
    );
    assert_eq!(r["list_before"], json!({"connections": []}), "{r}");
    // connconnect → connected, as `ssh -O check` says, with its master.
    let c = &r["connect"]["result"];
    assert_eq!(c["status"], "connected", "{r}");
    assert_eq!(c["host"], "testhost");
    let status = &r["status"]["result"]["connections"][0];
    assert_eq!(status["status"], "connected", "{r}");
    let master = status["master_pid"].as_u64().expect("a master pid");
    assert_eq!(r["masters_after_connect"], json!([master]), "{r}");
    assert!(r["connect_s"].as_f64().unwrap() < 10.0);
    // connensure: nothing new, the same one master.
    assert_eq!(r["ensure1"]["result"]["connected_now"], false, "{r}");
    assert_eq!(r["ensure2"]["result"]["master_pid"], json!(master));
    assert_eq!(r["masters_after_ensure"], json!([master]));
    assert_eq!(
        error_code(&r["connect_again"]),
        (-32000, "ALREADY_CONNECTED".into())
    );
    assert_eq!(r["list"]["connections"][0]["host"], "testhost");
    assert_eq!(
        r["status_all"]["connections"][0]["status"], "connected",
        "{r}"
    );
    // The agent's program ran on the host: it has SSH_CONNECTION (from
    // 127.0.0.1 to sshd's port), nothing of the daemon's, the env given,
    // the cwd given.
    assert_eq!(r["open"]["result"]["created"], true, "{r}");
    let lines: Vec<&str> = r["remote_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let conn_line = lines
        .iter()
        .find(|l| l.starts_with("conn=["))
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        conn_line.starts_with("conn=[127.0.0.1 ")
            && conn_line.ends_with(&format!(" 127.0.0.1 {}]", sshd.port)),
        "{conn_line}"
    );
    assert!(lines.contains(&"daemon_vars=0"), "{lines:?}");
    assert!(lines.contains(&"given=[it's $(x)]"), "{lines:?}");
    assert!(lines.contains(&"cwd=[/tmp]"), "{lines:?}");
    assert_eq!(r["info"]["controller"]["conn"], "testhost", "{r}");
    // A jekt into it arrives (cat on the host echoes it).
    assert_eq!(r["send"]["result"]["outcome"], "delivered", "{r}");
    assert!(
        r["after_send"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("jekt-over-ssh-7731")),
        "{r}"
    );
    // Hostile words reached the remote program as they were, one each.
    let term_lines: Vec<&str> = r["term_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let got: Vec<String> = term_lines
        .iter()
        .filter(|l| l.starts_with('<'))
        .map(|l| l.trim_end().to_string())
        .collect();
    let want: Vec<String> = r["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| format!("<{}>", w.as_str().unwrap()).trim_end().to_string())
        .collect();
    assert_eq!(got, want, "{r}");
    assert!(!marker.exists(), "a quoted word ran a command on the host");
    // controllerrestart ran the same words on the host again.
    assert_eq!(r["restart"]["result"]["restarted"], true, "{r}");
    let again: Vec<String> = r["restart_lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|l| l.starts_with('<'))
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(again, want, "{r}");
    assert_eq!(r["masters_with_panes"], json!([master]), "{r}");
    // conndisconnect: the master is gone, the status says so, the panes
    // through it ended, and a pane on it is refused.
    assert_eq!(r["disconnect"]["result"]["was_connected"], true, "{r}");
    assert_eq!(r["disconnect"]["result"]["status"], "disconnected");
    assert_eq!(r["master_alive_after"], false, "{r}");
    assert_eq!(r["masters_after_disconnect"], json!([]));
    assert_eq!(
        r["status_after"]["result"]["connections"][0]["status"],
        "disconnected"
    );
    assert_eq!(r["disconnect_again"]["result"]["was_connected"], false);
    assert_eq!(
        error_code(&r["open_disconnected"]),
        (-32000, "NOT_CONNECTED".into())
    );
    assert_eq!(
        error_code(&r["pane_disconnected"]),
        (-32000, "NOT_CONNECTED".into())
    );
    assert_eq!(r["worker_after"], "exited", "{r}");
    assert_eq!(
        error_code(&r["restart_disconnected"]),
        (-32000, "NOT_CONNECTED".into())
    );
    // No token of this daemon's is in the audit log; the connection is.
    let audit = audit_text(&d).await;
    assert!(audit.contains("connconnect") && audit.contains("conn=testhost"));
    assert!(!audit.contains(&d.key));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_refuses_is_a_clear_error_fast() {
    let sshd = Sshd::start();
    let d = daemon_for(&sshd, "");
    let r = run_python(
        "app_api_conn.py",
        d.app_api_args(
            "refused",
            &["--host", "refusedhost", "--port", &free_port().to_string()],
        ),
    )
    .await;
    assert_eq!(
        error_code(&r["connect"]),
        (-32000, "CONNECT_FAILED".into()),
        "{r}"
    );
    let m = r["connect"]["message"].as_str().unwrap();
    assert!(
        m.contains("refusedhost") && m.contains("Connection refused"),
        "{m}"
    );
    assert!(r["connect_s"].as_f64().unwrap() < 5.0, "{r}");
    assert_eq!(
        error_code(&r["ensure"]),
        (-32000, "CONNECT_FAILED".into()),
        "{r}"
    );
    assert_eq!(
        r["status"]["connections"][0]["status"], "disconnected",
        "{r}"
    );
    // No prompt waits: an unknown host key, a key the host refuses.
    for (h, said) in [
        ("strangerhost", "Host key verification failed"),
        ("nokeyhost", "Permission denied"),
    ] {
        assert_eq!(error_code(&r[h]["error"]).1, "CONNECT_FAILED", "{r}");
        let m = r[h]["error"]["message"].as_str().unwrap();
        assert!(m.contains(said), "{h}: {m}");
        assert!(r[h]["s"].as_f64().unwrap() < 5.0, "{r}");
    }
    // connlist keeps the last failure.
    let list = r["list"]["connections"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|c| c["status"] == "error" && c["message"].as_str().is_some()),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_hosts_are_refused_and_run_nothing() {
    let sshd = Sshd::start();
    let d = daemon_for(&sshd, "");
    let marker = d.data_dir().join("proxy-marker");
    let marker_arg = marker.display().to_string();
    let r = run_python(
        "app_api_conn.py",
        d.app_api_args("hostile", &["--marker", &marker_arg]),
    )
    .await;
    let answers = r["answers"].as_array().unwrap();
    assert!(answers.len() > 200, "{r}");
    for a in answers {
        let (code, _) = error_code(&a["error"]);
        assert_eq!(code, -32602, "not refused as invalid params: {a}");
        let m = a["error"]["message"].as_str().unwrap();
        assert!(!m.chars().any(char::is_control), "{m:?}");
    }
    // What is wrong is named.
    let proxy = &answers[0]["error"]["message"];
    assert!(
        proxy
            .as_str()
            .unwrap()
            .contains("is not an ssh destination"),
        "{proxy}"
    );
    for p in r["ports"].as_array().unwrap() {
        assert_eq!(error_code(&p["error"]).0, -32602, "{p}");
    }
    for e in r["extra"].as_array().unwrap() {
        assert_eq!(error_code(&e["error"]).0, -32602, "{e}");
    }
    assert_eq!(error_code(&r["editor_conn"]).0, -32602);
    assert_eq!(error_code(&r["port_without_conn"]).0, -32602);
    assert_eq!(error_code(&r["positional"]).0, -32602);
    assert_eq!(r["list"], json!({"connections": []}));
    assert!(!marker.exists(), "a hostile host ran a command");
    // No ssh was run for any of it: no control socket, sshd saw nobody.
    let sockets = std::fs::read_dir(d.data_dir().join("conn"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(sockets, 0);
    let log = sshd.log();
    assert!(!log.contains("Connection from"), "{log}");
    // The daemon is still serving.
    let (status, _) = d.get("/v1/agents", &Cred::Key).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_tokens_need_a_conn_scope_for_the_host() {
    let sshd = Sshd::start();
    let d = daemon_for(
        &sshd,
        "[[policy.app_agents]]\nagent = \"ops\"\nscopes = [\"conn.*@host:testhost\", \"pane.*@host:testhost\"]\n",
    );
    let plain = d.register("plain").await;
    let ops = d.register("ops").await;
    let r = run_python(
        "app_api_conn.py",
        d.app_api_args("scopes", &["--token", &plain, "--extra", &ops]),
    )
    .await;
    let default = r["default"].as_object().unwrap();
    assert_eq!(default.len(), 8, "{r}");
    for (call, e) in default {
        assert_eq!(
            error_code(e),
            (-32000, "FORBIDDEN".into()),
            "{call} with the default scopes"
        );
    }
    let s = &r["scoped"];
    assert_eq!(s["status_own"], "ok", "{r}");
    assert_eq!(s["status_user_at_own"], "ok", "{r}");
    for k in ["status_other", "status_all", "list", "aws", "open_other"] {
        assert_eq!(error_code(&s[k]), (-32000, "FORBIDDEN".into()), "{k}: {r}");
    }
    assert!(
        s["status_other"]["message"]
            .as_str()
            .unwrap()
            .contains("host:otherhost"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_ssh_client_is_named() {
    let d = Daemon::start_with("[conn]\nssh = \"/nonexistent/bin/ssh\"\n");
    let r = run_python("app_api_conn.py", d.app_api_args("nossh", &[])).await;
    assert_eq!(
        error_code(&r["connect"]),
        (-32000, "SSH_UNAVAILABLE".into()),
        "{r}"
    );
    let m = r["connect"]["message"].as_str().unwrap();
    assert!(
        m.contains("/nonexistent/bin/ssh") && m.contains("conn.ssh"),
        "{m}"
    );
    assert_eq!(r["status"]["connections"][0]["status"], "disconnected");
}

#[test]
fn default_agent_scopes_grant_no_conn_method() {
    let scopes = agentbus_daemon::rpc::scope::parse_all(
        &agentbus_daemon::config::DEFAULT_APP_SCOPES.map(String::from),
    )
    .unwrap();
    let me = agentbus_proto::AgentId::parse("me").unwrap();
    let host = agentbus_daemon::rpc::scope::Target::Host {
        host: "testhost".into(),
        user: None,
    };
    for m in agentbus_daemon::rpc::methods::TABLE
        .iter()
        .filter(|m| m.name.starts_with("conn"))
    {
        for targets in [vec![], vec![host.clone()]] {
            assert!(
                agentbus_daemon::rpc::scope::check(&scopes, &me, m.name, m.family, &targets)
                    .is_err(),
                "{} is granted by default",
                m.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_profiles_are_listed_without_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let creds = dir.path().join("credentials");
    std::fs::write(
        &config,
        "[default]\nregion = eu-west-1\n\n[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\n\
         sso_role_name = Dev\nregion = us-east-1\n\n[profile prod]\nrole_arn = arn:aws:iam::123456789012:role/Admin\n\
         source_profile = dev\n\n[sso-session corp]\nsso_start_url = https://corp.example/start\n",
    )
    .unwrap();
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzFAKESECRET";
    let key_id = "AKIAZZFAKEKEYID00001";
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n\n\
             [ci]\naws_access_key_id={key_id}\naws_secret_access_key={secret}\naws_session_token = {secret}TOKEN\n"
        ),
    )
    .unwrap();
    let d = Daemon::start_env(&[
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
    ]);
    let r = run_python("app_api_conn.py", d.app_api_args("aws", &[])).await;
    let text = r.to_string();
    assert!(
        !text.contains(secret) && !text.contains("FAKESECRET"),
        "{text}"
    );
    assert!(!text.contains(key_id) && !text.contains("AKIAZZ"), "{text}");
    let l = &r["aws"]["result"];
    let names: Vec<&str> = l["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci", "default", "dev", "prod"], "{r}");
    let by = |n: &str| {
        l["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by("default")["region"], "eu-west-1");
    assert_eq!(by("default")["sources"], json!(["config", "credentials"]));
    assert_eq!(by("default")["kinds"], json!(["static-keys"]));
    assert_eq!(by("dev")["kinds"], json!(["sso"]));
    assert_eq!(by("dev")["settings"]["sso_role_name"], "Dev");
    assert_eq!(by("prod")["kinds"], json!(["role"]));
    assert_eq!(
        by("prod")["settings"]["role_arn"],
        "arn:aws:iam::123456789012:role/Admin"
    );
    assert_eq!(by("ci")["sources"], json!(["credentials"]));
    assert_eq!(l["config_file"]["path"], config.to_str().unwrap());
    assert_eq!(l["credentials_file"]["found"], true);
    assert_eq!(r["again"]["result"], *l);
    assert_eq!(error_code(&r["bad"]).0, -32602);
    // Nor in the audit log.
    let audit = audit_text(&d).await;
    assert!(audit.contains("connlistaws"));
    assert!(!audit.contains(secret) && !audit.contains(key_id));
}
