//! The real agent CLIs — Claude Code, Codex CLI and Gemini CLI, installed
//! from npm at pinned versions by `scripts/install_clis.sh` — in agentbus
//! panes, run offline against `tests/python/model_endpoint.py`, a scripted
//! model on loopback that records every turn it is sent. Each test runs
//! once per CLI:
//! - jekts sent the moment a pane opens are each their own turn;
//! - a jekt while the CLI works is submitted after the turn, as its own;
//! - a jekt into the sign-in screen is held, never typed, and `status`
//!   says why;
//! - a held jekt is replayed after the CLI restarts;
//! - the model's tool call of `send_message` acts as the pane's agent
//!   (two panes of one CLI at once, each itself);
//! - `stop` quits through the CLI, 10 times of 10 idle and 10 of 10 busy.
//!
//! The other CLIs the test command installs — GitHub Copilot CLI, OpenCode,
//! Pi, Qwen Code, Kimi Code, OpenClaw and Aider — each get the first two
//! and ten idle stops (`other_clis`).

mod common;

use common::{Cred, Daemon, bin, eventually, python};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CLIs that need a newer Node.js than the machine's; installed
/// apart, in target/clis24, and run with the Node.js 24 that
/// `cli_offline.py` puts first on their PATH.
const NODE24: [&str; 3] = ["qwen", "kimi", "openclaw"];

/// Where the pinned CLIs are installed (`scripts/install_clis.sh`):
/// target/clis/node_modules/.bin (or `AGENTBUS_TEST_CLIS`), and beside
/// target/clis, target/clis24 for the Node 24 ones and the venv
/// target/clis-aider for Aider.
fn cli_bin(cli: &str) -> PathBuf {
    let dir = std::env::var_os("AGENTBUS_TEST_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/clis/node_modules/.bin")
        });
    let dir = if NODE24.contains(&cli) {
        dir.join("../../../clis24/node_modules/.bin")
    } else if cli == "aider" {
        dir.join("../../../clis-aider/bin")
    } else {
        dir
    };
    let p = dir.join(cli);
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test.sh` (or scripts/install_clis.sh), which installs the agent CLIs",
        p.display()
    );
    p
}

fn script(name: &str) -> String {
    format!("{}/tests/python/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The scripted model: `model_endpoint.py` on a free loopback port.
struct Model {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Model {
    fn start() -> Model {
        let mut child = Command::new(python())
            .arg(script("model_endpoint.py"))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start model_endpoint.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("model_endpoint.py said {line:?}"))
            .to_string();
        Model {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: agentbus_daemon::tls::default_client(),
        }
    }

    fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    /// The user turns the model was sent, oldest first.
    async fn turns(&self) -> Vec<Value> {
        let all: Vec<Value> = self
            .http
            .get(format!("{}/turns", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.into_iter()
            .filter(|t| t["kind"].as_str().unwrap_or("turn") == "turn")
            .collect()
    }

    /// The turns whose text holds `needle`.
    async fn turns_with(&self, needle: &str) -> Vec<Value> {
        self.turns()
            .await
            .into_iter()
            .filter(|t| t["text"].as_str().unwrap_or("").contains(needle))
            .collect()
    }

    /// Waits for the model to be sent a turn holding `needle`; that turn.
    async fn wait_turn(&self, needle: &str, secs: u64) -> Value {
        eventually(&format!("a turn holding {needle:?}"), secs, async || {
            self.turns_with(needle).await.into_iter().next()
        })
        .await
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon, a model and one CLI's offline home, ready to open panes.
struct Rig {
    cli: &'static str,
    model: Model,
    daemon: Daemon,
    _home: tempfile::TempDir,
    cwd: PathBuf,
    /// What each pane of this CLI gets besides what the daemon passes.
    env: BTreeMap<String, String>,
    /// The command line: the CLI and its arguments (`openclaw chat`).
    argv: Vec<String>,
}

/// The environment a command needs to see the rig's home.
fn home_env(env: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    ["HOME", "CODEX_HOME"]
        .into_iter()
        .filter_map(|k| env.get(k).map(|v| (k, v.as_str())))
        .collect()
}

impl Rig {
    /// With `signed_in` false the CLI has no key: it shows its sign-in
    /// screen.
    async fn new(cli: &'static str, signed_in: bool) -> Rig {
        let model = Model::start();
        let home = tempfile::tempdir().unwrap();
        let cwd = home.path().join("project");
        std::fs::create_dir_all(&cwd).unwrap();
        let cwd = cwd.canonicalize().unwrap();
        let mut args = vec![
            script("cli_offline.py"),
            cli.into(),
            "--home".into(),
            home.path().display().to_string(),
            "--cwd".into(),
            cwd.display().to_string(),
            "--port".into(),
            model.port().into(),
        ];
        if !signed_in {
            args.push("--no-auth".into());
        }
        let out = Command::new(python()).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "cli_offline.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
        let argv: Vec<String> = spec["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let env: BTreeMap<String, String> = spec["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        // agentbus's own set-up, as a user runs it in the project (for
        // the CLIs it registers its MCP server with).
        if SETUP.contains(&cli) {
            let setup = Command::new(bin())
                .args(["setup", cli, "--write", "--trust-folder", "--allow-tools"])
                .current_dir(&cwd)
                .envs(home_env(&env))
                .output()
                .unwrap();
            assert!(
                setup.status.success(),
                "agentbus setup {cli}: {}{}",
                String::from_utf8_lossy(&setup.stdout),
                String::from_utf8_lossy(&setup.stderr)
            );
        }
        let daemon = Daemon::start_env(&home_env(&env));
        Rig {
            cli,
            model,
            daemon,
            _home: home,
            cwd,
            env,
            argv,
        }
    }

    /// The CLI's command line, its program as installed.
    fn command(&self) -> Vec<String> {
        let mut argv = self.argv.clone();
        argv[0] = cli_bin(&argv[0]).display().to_string();
        argv
    }

    /// Opens (or reopens) agent `name` running this CLI.
    async fn open(&self, name: &str) -> Value {
        let env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "HOME" | "CODEX_HOME"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = self
            .daemon
            .post(
                "/v1/agents",
                &json!({
                    "agent_id": name,
                    "provider": self.cli,
                    "command": self.command(),
                    "cwd": self.cwd,
                    "env": env,
                    "rows": 40,
                    "cols": 120,
                }),
                &Cred::Key,
            )
            .await;
        assert_eq!(status, 201, "open {name}: {body}");
        body
    }

    async fn status(&self, name: &str) -> Value {
        self.daemon
            .get(&format!("/v1/agents/{name}"), &Cred::Key)
            .await
            .1
    }

    /// Waits until `name`'s readiness reads as `want` (a prefix).
    async fn wait_input(&self, name: &str, want: &str, secs: u64) -> Value {
        eventually(&format!("{name} to be {want}"), secs, async || {
            let s = self.status(name).await;
            s["readiness"]
                .as_str()
                .is_some_and(|r| r.starts_with(want))
                .then_some(s)
        })
        .await
    }

    async fn jekt(&self, to: &str, text: &str) -> Value {
        let (status, body) = self.daemon.jekt(to, text, &Cred::Key).await;
        assert_eq!(status, 200, "jekt to {to}: {body}");
        body
    }

    async fn stop(&self, name: &str) -> Value {
        let (status, body) = self
            .daemon
            .post(&format!("/v1/agents/{name}/stop"), &json!({}), &Cred::Key)
            .await;
        assert_eq!(status, 200, "stop {name}: {body}");
        body
    }

    async fn screen(&self, name: &str) -> String {
        let (_, out) = self
            .daemon
            .get(&format!("/v1/agents/{name}/output?lines=200"), &Cred::Key)
            .await;
        out["lines"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
}

/// A word no other test's text holds.
fn unique(what: &str) -> String {
    format!(
        "{what}{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_007
    )
}

/// The CLIs `agentbus setup` registers its MCP server with.
const SETUP: [&str; 3] = ["claude", "codex", "gemini"];

/// The CLIs whose input box agentbus cannot find: a submission into
/// them cannot be confirmed.
const UNCONFIRMABLE: [&str; 1] = ["openclaw"];

/// A jekt delivered, or held (to be replayed); delivered into a CLI
/// whose prompt agentbus reads, only once seen to leave the input box.
fn assert_submitted(cli: &str, answer: &Value) {
    match answer["outcome"].as_str() {
        Some("delivered") if UNCONFIRMABLE.contains(&cli) => {
            assert_eq!(answer["submitted"], "unconfirmed", "{cli}: {answer}")
        }
        Some("delivered") => assert_eq!(answer["submitted"], "confirmed", "{cli}: {answer}"),
        Some("held") => {}
        _ => panic!("{cli}: unexpected answer {answer}"),
    }
}

async fn jekts_at_open_become_their_own_turns(cli: &'static str) {
    let rig = Rig::new(cli, true).await;
    let (one, two) = (unique("first"), unique("second"));
    rig.open("ag").await;
    let a = rig.jekt("ag", &one).await;
    let b = rig.jekt("ag", &two).await;
    assert_submitted(cli, &a);
    assert_submitted(cli, &b);
    let t1 = rig.model.wait_turn(&one, 90).await;
    let t2 = rig.model.wait_turn(&two, 90).await;
    for (t, other) in [(&t1, &two), (&t2, &one)] {
        let text = t["text"].as_str().unwrap();
        assert!(
            !text.contains(other.as_str()),
            "two jekts in one turn: {text}"
        );
        assert_eq!(text.matches("[JEKT:").count(), 1, "{text}");
    }
    assert!(t1["n"].as_u64() < t2["n"].as_u64(), "in order: {t1} {t2}");
    // The pane answers what a terminal answers (Aider warns otherwise).
    let screen = rig.screen("ag").await;
    assert!(
        !screen.contains("cursor position requests"),
        "{cli}: {screen}"
    );
}

async fn a_jekt_while_busy_waits_for_the_turn(cli: &'static str) {
    let rig = Rig::new(cli, true).await;
    rig.open("ag").await;
    rig.wait_input("ag", "ready", 90).await;
    let (slow, after) = (unique("slow"), unique("after"));
    assert_submitted(cli, &rig.jekt("ag", &format!("{slow} WAIT=4 SLOW=2")).await);
    rig.model.wait_turn(&slow, 30).await;
    rig.wait_input("ag", "busy", 10).await;
    assert_submitted(cli, &rig.jekt("ag", &after).await);
    let first = rig.model.wait_turn(&slow, 30).await;
    let second = rig.model.wait_turn(&after, 60).await;
    assert!(
        !second["text"].as_str().unwrap().contains(&slow),
        "merged: {second}"
    );
    let gap = second["at_ms"].as_i64().unwrap() - first["at_ms"].as_i64().unwrap();
    assert!(
        gap >= 5_000,
        "sent {gap} ms after the busy turn began, before it ended"
    );
}

async fn a_jekt_into_the_sign_in_screen_is_held(cli: &'static str) {
    let rig = Rig::new(cli, false).await;
    rig.open("ag").await;
    let status = rig.wait_input("ag", "blocked", 90).await;
    let text = unique("held");
    let answer = rig.jekt("ag", &text).await;
    assert_eq!(answer["outcome"], "held", "{answer}");
    let reason = answer["reason"].as_str().unwrap_or("");
    assert!(reason.starts_with("blocked: "), "{answer} ({status})");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let screen = rig.screen("ag").await;
    assert!(
        !screen.contains(&text),
        "typed into the sign-in screen:\n{screen}"
    );
    assert!(rig.model.turns().await.is_empty());
    let status = rig.status("ag").await;
    assert_eq!(status["held_jekts"], 1, "{status}");
    assert!(
        status["readiness"]
            .as_str()
            .unwrap()
            .starts_with("blocked: ")
    );
    // Nor is the quit typed there: signals end it.
    let stopped = rig.stop("ag").await;
    assert_ne!(stopped["stopped_by"], "quit", "{stopped}");
    let screen = rig.screen("ag").await;
    assert!(
        !screen.contains("/quit") && !screen.contains("/exit"),
        "{screen}"
    );
}

async fn a_held_jekt_is_replayed_after_a_restart(cli: &'static str) {
    let rig = Rig::new(cli, true).await;
    rig.open("ag").await;
    rig.wait_input("ag", "ready", 90).await;
    assert_eq!(rig.stop("ag").await["stopped_by"], "quit");
    let text = unique("replayed");
    let answer = rig.jekt("ag", &text).await;
    assert_eq!(answer["outcome"], "held", "{answer}");
    rig.open("ag").await;
    let turn = rig.model.wait_turn(&text, 90).await;
    assert!(
        turn["text"].as_str().unwrap().contains("HELD_FOR="),
        "{turn}"
    );
    eventually("the hold to be empty", 30, async || {
        (rig.status("ag").await["held_jekts"] == 0).then_some(())
    })
    .await;
}

async fn tool_calls_act_as_each_panes_agent(cli: &'static str) {
    let rig = Rig::new(cli, true).await;
    let names = ["left", "right"];
    for n in names {
        rig.open(n).await;
    }
    for n in names {
        rig.wait_input(n, "ready", 90).await;
    }
    // What list_agents shows: each one's readiness.
    let (_, dir) = rig.daemon.get("/v1/directory", &Cred::Key).await;
    for n in names {
        let entry = dir["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent_id"] == n)
            .unwrap();
        assert_eq!(entry["readiness"], "ready", "{dir}");
    }
    for n in names {
        let args = json!({"to": "collector", "body": format!("hello from {n}")});
        let answer = rig
            .jekt(n, &format!("call it: TOOL=send_message ARGS={args}"))
            .await;
        assert_submitted(cli, &answer);
    }
    let (_, inbox) = eventually("both messages in collector's inbox", 120, async || {
        let got = rig.daemon.inbox("collector", "", &Cred::Key).await;
        (got.1["messages"].as_array().map_or(0, Vec::len) >= 2).then_some(got)
    })
    .await;
    for m in inbox["messages"].as_array().unwrap() {
        let from = m["from"].as_str().unwrap();
        assert_eq!(m["body"], format!("hello from {from}"), "{m}");
        assert!(names.contains(&from), "{m}");
        assert_eq!(m["trust"], "host-verified", "{m}");
    }
    // Once the panes have ended, no `agentbus mcp` of theirs is left.
    for n in names {
        assert_eq!(rig.stop(n).await["stopped_by"], "quit");
    }
    let url = format!("AGENTBUS_URL={}", rig.daemon.url);
    eventually(
        "every agentbus mcp of these panes to exit",
        20,
        async || mcp_servers_of(&url).is_empty().then_some(()),
    )
    .await;
}

/// Pids of `agentbus mcp` processes whose environment points at `url_var`.
fn mcp_servers_of(url_var: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let is_mcp = args.len() >= 2
                && args[0].ends_with(b"agentbus")
                && args.iter().any(|a| *a == b"mcp");
            is_mcp
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .unwrap_or_default()
                    .split(|b| *b == 0)
                    .any(|kv| kv == url_var.as_bytes())
        })
        .collect()
}

async fn stop_quits_through_the_cli_ten_times(cli: &'static str) {
    stop_rounds(cli, &[false, true]).await
}

async fn stop_quits_idle_ten_times(cli: &'static str) {
    stop_rounds(cli, &[false]).await
}

/// Ten stops for each kind in `kinds` (busy or not), in turn; each must
/// end the CLI through its own quit.
async fn stop_rounds(cli: &'static str, kinds: &[bool]) {
    let rig = Rig::new(cli, true).await;
    let mut report = Vec::new();
    for i in 0..10 * kinds.len() {
        rig.open("ag").await;
        rig.wait_input("ag", "ready", 90).await;
        let busy = kinds[i % kinds.len()];
        if busy {
            let text = unique("busy");
            rig.jekt("ag", &format!("{text} WAIT=30")).await;
            rig.model.wait_turn(&text, 30).await;
            rig.wait_input("ag", "busy", 10).await;
        }
        let start = Instant::now();
        let stopped = rig.stop("ag").await;
        report.push((busy, stopped["stopped_by"].clone(), start.elapsed()));
    }
    for &busy in kinds {
        let clean = report
            .iter()
            .filter(|(b, by, _)| *b == busy && by == "quit")
            .count();
        assert_eq!(
            clean, 10,
            "{cli}: clean quits when busy={busy} (busy, step, time): {report:?}"
        );
    }
}

/// Runs `scenario` for each of the three CLIs, one test each.
macro_rules! each_cli {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn claude() {
                super::$scenario("claude").await
            }
            #[tokio::test]
            async fn codex() {
                super::$scenario("codex").await
            }
            #[tokio::test]
            async fn gemini() {
                super::$scenario("gemini").await
            }
        }
    )*};
}

/// Runs `scenario` for each of the other agent CLIs the test command
/// installs (no MCP setup, no sign-in screen of their own).
macro_rules! each_other_cli {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn copilot() {
                super::super::$scenario("copilot").await
            }
            #[tokio::test]
            async fn opencode() {
                super::super::$scenario("opencode").await
            }
            #[tokio::test]
            async fn pi() {
                super::super::$scenario("pi").await
            }
            #[tokio::test]
            async fn qwen() {
                super::super::$scenario("qwen").await
            }
            #[tokio::test]
            async fn kimi() {
                super::super::$scenario("kimi").await
            }
            #[tokio::test]
            async fn openclaw() {
                super::super::$scenario("openclaw").await
            }
            #[tokio::test]
            async fn aider() {
                super::super::$scenario("aider").await
            }
        }
    )*};
}

mod other_clis {
    each_other_cli!(
        jekts_at_open_become_their_own_turns,
        a_jekt_while_busy_waits_for_the_turn,
        stop_quits_idle_ten_times,
    );
}

each_cli!(
    jekts_at_open_become_their_own_turns,
    a_jekt_while_busy_waits_for_the_turn,
    a_jekt_into_the_sign_in_screen_is_held,
    a_held_jekt_is_replayed_after_a_restart,
    tool_calls_act_as_each_panes_agent,
    stop_quits_through_the_cli_ten_times,
);
