//! The agent-bus client trio against the real relay, used as the agent-bus README
//! documents: `send` with the body on stdin, `recv <name>` printing one
//! block per message and keeping its cursor across restarts and errors,
//! `listen` logging to files in the background without duplicates; plus
//! a stdlib Python client written to the agent-bus protocol's description.

mod common;
use common::{Relay, bin, eventually};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `agentbus <args>` with the agent-bus clients' environment.
fn client(relay_url: &str, state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env("AGENT_BUS_URL", relay_url)
        .env("AGENT_BUS_STATE_DIR", state)
        .env_remove("AGENT_NAME")
        .env_remove("AGENT_BUS_CHANNEL")
        .env_remove("AGENT_BUS_TOKEN")
        .env_remove("AGENT_BUS_UA");
    cmd
}

fn send(relay_url: &str, state: &Path, from: &str, to: &str, body: &str) {
    let mut child = client(relay_url, state, &["send", to])
        .env("AGENT_NAME", from)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("sent to {to}")));
}

/// A running `agentbus recv`, its stdout read line by line.
struct Recv {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Recv {
    fn start(relay_url: &str, state: &Path, name: &str) -> Recv {
        let mut child = client(relay_url, state, &["recv", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Recv { child, lines }
    }

    /// The next block (lines up to `---`), within 30 s.
    fn block(&self) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no complete block; got {got:?}"));
            if line == "---" {
                return got;
            }
            got.push(line);
        }
    }

    fn nothing_more(&self, wait: Duration) {
        if let Ok(l) = self.lines.recv_timeout(wait) {
            panic!("unexpected output: {l:?}");
        }
    }
}

impl Drop for Recv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header_ok(line: &str, from: &str) {
    // [HH:MM:SSZ] from <sender>:
    let b = line.as_bytes();
    assert!(
        b.len() > 12 && b[0] == b'[' && b[3] == b':' && b[6] == b':' && &line[9..11] == "Z]",
        "{line:?}"
    );
    assert_eq!(&line[11..], format!(" from {from}:"), "{line:?}");
}

#[tokio::test]
async fn send_and_recv_work_as_the_agent_bus_clients_document() {
    let mut relay = Relay::start(&[]);
    let state = tempfile::tempdir().unwrap();
    let url = relay.url.clone();

    let recv = Recv::start(&url, state.path(), "dell");
    send(
        &url,
        state.path(),
        "spark",
        "dell",
        "T1 verify done — 4/4 hits are honeypots.\nStanding down A100.\n",
    );
    let b = recv.block();
    header_ok(&b[0], "spark");
    assert_eq!(
        &b[1..],
        [
            "  T1 verify done — 4/4 hits are honeypots.",
            "  Standing down A100."
        ]
    );

    // A restart neither loses nor repeats: the cursor is on disk (it is
    // written right after each block is printed).
    eventually("the cursor file", 10, async || {
        std::fs::read_dir(state.path())
            .ok()?
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("recv-dell-default-")
            })
            .then_some(())
    })
    .await;
    drop(recv);
    send(&url, state.path(), "spark", "dell", "while recv was down");
    let recv = Recv::start(&url, state.path(), "dell");
    assert_eq!(recv.block()[1..], ["  while recv was down"]);
    recv.nothing_more(Duration::from_millis(500));

    // An error (the relay gone) is retried with the same cursor.
    relay.kill9();
    std::thread::sleep(Duration::from_millis(300));
    relay.restart();
    send(&url, state.path(), "cube", "dell", "after the outage");
    let b = recv.block();
    header_ok(&b[0], "cube");
    assert_eq!(b[1..], ["  after the outage"]);

    // Channels are kept apart, from the environment as well.
    let mut chan = client(&url, state.path(), &["send", "dell"])
        .env("AGENT_NAME", "spark")
        .env("AGENT_BUS_CHANNEL", "ops")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    chan.stdin.take().unwrap().write_all(b"on ops").unwrap();
    assert!(chan.wait().unwrap().success());
    recv.nothing_more(Duration::from_millis(500));
    let out = client(&url, state.path(), &["recv", "dell", "--once"])
        .env("AGENT_BUS_CHANNEL", "ops")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("] from spark:\n  on ops\n---\n"), "{text:?}");

    // Clear errors for what is missing.
    let out = client(&url, state.path(), &["send", "dell"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENT_NAME is not set"));
    let out = Command::new(bin())
        .args(["recv", "dell", "--once"])
        .env_remove("AGENT_BUS_URL")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("AGENT_BUS_URL is not set"));
}

#[tokio::test]
async fn listen_logs_every_message_once_across_restarts() {
    let relay = Relay::start(&[]);
    let state = tempfile::tempdir().unwrap();
    let url = relay.url.clone();
    let listen = |extra: &[&str]| {
        let mut args = vec!["listen"];
        args.extend_from_slice(extra);
        client(&url, state.path(), &args)
            .env("AGENT_NAME", "spark")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = listen(&["--detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = |ext: &str| state.path().join(format!("listen-spark-default.{ext}"));
    let _reaper = StopListener(f("pid"));
    let pid = eventually("the pid file", 10, async || {
        std::fs::read_to_string(f("pid"))
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    })
    .await;
    // One listener per name and channel.
    let second = listen(&[]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    for i in 0..3 {
        send(&url, state.path(), "dell", "spark", &format!("m{i}"));
    }
    let jsonl = |n: usize| {
        let path = f("jsonl");
        async move {
            eventually(&format!("{n} JSONL lines"), 30, async || {
                let text = std::fs::read_to_string(&path).ok()?;
                let lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                (lines.len() >= n).then_some(lines)
            })
            .await
        }
    };
    let lines = jsonl(3).await;
    assert_eq!(lines[0]["from"], "dell");
    assert_eq!(lines[2]["msg"], "m2");
    assert!(lines[0]["ts"].as_f64().unwrap() < lines[1]["ts"].as_f64().unwrap());
    let log = std::fs::read_to_string(f("log")).unwrap();
    assert_eq!(log.matches("---\n").count(), 3, "{log}");
    assert!(log.contains("] from dell:\n  m1\n---\n"), "{log}");
    let beat: f64 = std::fs::read_to_string(f("heartbeat"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(beat > 1.7e9);

    // Stopped (SIGTERM) and started again: nothing twice, nothing lost.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually("the pid file gone", 10, async || {
        (!f("pid").exists()).then_some(())
    })
    .await;
    send(&url, state.path(), "dell", "spark", "m3 while stopped");
    assert!(listen(&["--detach"]).status.success());
    send(&url, state.path(), "dell", "spark", "m4");
    let lines = jsonl(5).await;
    let msgs: Vec<&str> = lines.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["m0", "m1", "m2", "m3 while stopped", "m4"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jsonl(5).await.len(), 5, "no duplicates");
}

/// Stops a detached listener when the test ends, however it ends.
struct StopListener(std::path::PathBuf);

impl Drop for StopListener {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_send_the_user_agent_and_token_they_are_given() {
    // A one-shot HTTP server that records the request head.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let mut heads = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                n += s.read(&mut buf[n..]).await.unwrap();
            }
            heads.push(String::from_utf8_lossy(&buf[..n]).to_lowercase());
            let body = r#"{"ok":true,"ts":1.5,"channel":"default"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        }
        heads
    });
    let state = tempfile::tempdir().unwrap();
    for (ua, token) in [(None, None), (Some("agent-bus-test/1"), Some("abr_t0ken"))] {
        let mut cmd = client(&url, state.path(), &["send", "bob"]);
        cmd.env("AGENT_NAME", "alice").stdin(Stdio::piped());
        if let Some(ua) = ua {
            cmd.env("AGENT_BUS_UA", ua);
        }
        if let Some(t) = token {
            cmd.env("AGENT_BUS_TOKEN", t);
        }
        let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"hi").unwrap();
        assert!(child.wait().unwrap().success());
    }
    let heads = server.await.unwrap();
    assert!(
        heads[0].contains("user-agent: mozilla/5.0\r\n"),
        "{}",
        heads[0]
    );
    assert!(!heads[0].contains("authorization"));
    assert!(
        heads[1].contains("user-agent: agent-bus-test/1\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].contains("authorization: bearer abr_t0ken\r\n"));
}

/// A client written in stdlib Python from the agent-bus protocol's description alone:
/// urllib, a browser user agent, a JSON body sent without a JSON content
/// type, and the reference cursor rule `since = max(max ts, now)`.
const SEED_CLIENT: &str = r#"
import json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
UA = {"User-Agent": "Mozilla/5.0"}
for i in range(n):
    body = json.dumps({"from": "py", "to": "dell", "msg": "p%d" % i}).encode()
    req = urllib.request.Request(url + "/send", data=body, headers=UA)
    with urllib.request.urlopen(req, timeout=35) as r:
        assert json.load(r)["ok"] is True
since, got = 0.0, []
while len(got) < n:
    q = "%s/recv?to=dell&since=%r&block=true&max=7" % (url, since)
    with urllib.request.urlopen(urllib.request.Request(q, headers=UA), timeout=35) as r:
        data = json.load(r)
    for m in data["messages"]:
        got.append(m["msg"])
        since = max(since, m["ts"])
    since = max(since, data["now"])
print(json.dumps(got))
"#;

#[tokio::test]
async fn a_stdlib_python_client_of_the_agent_bus_protocol_gets_everything() {
    let relay = Relay::start(&[]);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", SEED_CLIENT, &relay.url, "40"])
        .output()
        .unwrap_or_else(|e| panic!("{python} is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
    assert_eq!(got, want, "all 40, in order, pages of 7 cut short");
}
