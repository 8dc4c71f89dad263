//! HTTPS across machines: `agentbus relay --tls-cert --tls-key` serves
//! HTTPS; two daemons reach each other through it trusting its private CA
//! (`--ca-file`), and so do `agentbus send/recv` (`AGENTBUS_CA_FILE`); a
//! certificate from another CA is refused with an error that says what to
//! do; plain `http://` to a host that is not loopback is refused unless
//! `--insecure-http`. Certificates are made here, with rcgen.

mod common;
use common::pki::Pki;
use common::{Cred, Daemon, bin, eventually};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `agentbus <args>` with `env`, stdin from `input`.
fn agentbus(args: &[&str], env: &[(&str, &str)], input: &str, home: &Path) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(home)
        .env_remove("AGENTBUS_CA_FILE")
        .env_remove("AGENTBUS_INSECURE_HTTP")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn two_daemons_reach_each_other_through_an_https_relay() {
    let pki = Pki::new();
    let relay = pki.relay();
    assert!(relay.url.starts_with("https://127.0.0.1:"), "{}", relay.url);
    let ca = pki.path("ca.pem");
    let machine = || Daemon::start_args(&["--relay-url", &relay.url, "--ca-file", &ca]);
    let (a, b) = (machine(), machine());
    let sink = b.open_sink("bob", "generic", true).await;
    eventually("b's poller connected over TLS", 30, async || {
        let (_, s) = b.get("/agentmux/reactive/poller/status", &Cred::Key).await;
        (s["connected"] == true && s["agents"].as_array()?.iter().any(|x| x == "bob")).then_some(())
    })
    .await;
    let (s, resp) = a.jekt("bob", "over https", &Cred::Key).await;
    assert_eq!(
        (s, resp["outcome"].as_str()),
        (200, Some("queued")),
        "{resp}"
    );
    let typed = String::from_utf8(sink.wait_submits(1).await).unwrap();
    assert!(typed.contains("over https"), "{typed}");
    assert!(typed.contains("DELIVERY=wan"), "{typed}");
}

#[tokio::test]
async fn a_daemon_that_does_not_trust_the_relays_ca_says_why() {
    let pki = Pki::new();
    let relay = pki.relay();
    // No CA file (the system's roots only), then the wrong CA.
    for extra in [
        vec![],
        vec!["--ca-file".to_string(), pki.path("other-ca.pem")],
    ] {
        let mut args = vec!["--relay-url", relay.url.as_str()];
        args.extend(extra.iter().map(String::as_str));
        let d = Daemon::start_args(&args);
        d.register("carol").await;
        let status = eventually("the poller's error", 30, async || {
            let (_, s) = d.get("/agentmux/reactive/poller/status", &Cred::Key).await;
            s["last_error"].as_str().map(String::from)
        })
        .await;
        assert!(
            status.contains("not trusted") && status.contains("--ca-file"),
            "{args:?}: {status}"
        );
        let (_, s) = d.get("/agentmux/reactive/poller/status", &Cred::Key).await;
        assert_eq!(s["connected"], false, "{s}");
    }
    // The relay is unharmed and still serves a client that trusts it.
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("AGENT_BUS_URL", relay.url.as_str()),
        ("AGENT_NAME", "carol"),
    ];
    let mut trusting = env.to_vec();
    let ca = pki.path("ca.pem");
    trusting.push(("AGENTBUS_CA_FILE", &ca));
    let sent = agentbus(&["send", "dave"], &trusting, "hi dave", home.path());
    assert!(sent.status.success(), "{}", text(&sent));
}

#[tokio::test]
async fn send_and_recv_speak_https_and_refuse_a_certificate_they_do_not_trust() {
    let pki = Pki::new();
    let relay = pki.relay();
    let home = tempfile::tempdir().unwrap();
    let base = [
        ("AGENT_BUS_URL", relay.url.as_str()),
        ("AGENT_NAME", "erin"),
    ];

    let untrusted = agentbus(&["send", "frank"], &base, "hello", home.path());
    assert!(!untrusted.status.success());
    let why = text(&untrusted);
    assert!(
        why.contains("not trusted") && why.contains("--ca-file"),
        "{why}"
    );
    let other = pki.path("other-ca.pem");
    let wrong = agentbus(
        &["send", "frank", "--ca-file", &other],
        &base,
        "hello",
        home.path(),
    );
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("not trusted"), "{}", text(&wrong));

    let ca = pki.path("ca.pem");
    let sent = agentbus(
        &["send", "frank", "--ca-file", &ca],
        &base,
        "hello frank",
        home.path(),
    );
    assert!(sent.status.success(), "{}", text(&sent));
    let mut env = base.to_vec();
    env.push(("AGENTBUS_CA_FILE", &ca));
    let got = agentbus(&["recv", "frank", "--once"], &env, "", home.path());
    assert!(got.status.success(), "{}", text(&got));
    assert!(text(&got).contains("hello frank"), "{}", text(&got));
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_unless_the_user_says_so() {
    let home = tempfile::tempdir().unwrap();
    // Nothing listens there: a refusal comes before any connection.
    let far = "http://192.0.2.7:8787";
    let env = [("AGENT_BUS_URL", far), ("AGENT_NAME", "gina")];
    let out = agentbus(&["send", "hank"], &env, "secret", home.path());
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refusing plain http://") && text(&out).contains("--insecure-http"),
        "{}",
        text(&out)
    );
    // Said so: it tries (and cannot reach the address, a different error).
    let out = agentbus(&["send", "hank", "--insecure-http"], &env, "x", home.path());
    assert!(
        !text(&out).contains("refusing plain http://"),
        "{}",
        text(&out)
    );

    // The daemon: at start, and at run time through the poller config.
    let dir = tempfile::tempdir().unwrap();
    let refused = Command::new(bin())
        .args(["daemon", "--listen", "127.0.0.1:0", "--relay-url", far])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("AGENTBUS_INSECURE_HTTP")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("--insecure-http"),
        "{}",
        text(&refused)
    );
    let d = Daemon::start();
    let (s, body) = d
        .post(
            "/agentmux/reactive/poller/config",
            &serde_json::json!({"agentmux_url": far, "agentmux_token": "t"}),
            &Cred::Key,
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--insecure-http"),
        "{body}"
    );
    let allowed = Daemon::start_args(&["--relay-url", far, "--insecure-http"]);
    let (_, st) = allowed
        .get("/agentmux/reactive/poller/status", &Cred::Key)
        .await;
    assert_eq!(st["url"], far, "{st}");
}

#[tokio::test]
async fn plain_http_to_the_https_relay_gets_nothing_and_the_relay_goes_on() {
    let pki = Pki::new();
    let relay = pki.relay();
    let plain = relay.url.replace("https://", "http://");
    let http = agentbus_daemon::tls::default_client();
    for _ in 0..20 {
        assert!(http.get(format!("{plain}/healthz")).send().await.is_err());
    }
    let trusting = agentbus_daemon::tls::ClientTls {
        ca_file: Some(PathBuf::from(pki.path("ca.pem"))),
        ..Default::default()
    }
    .client()
    .unwrap();
    let resp = trusting
        .get(format!("{}/healthz", relay.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
