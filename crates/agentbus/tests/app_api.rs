//! The App API (`/ws`, JSON-RPC 2.0) against a client nobody here wrote:
//! Python's `websockets` package (installed by `scripts/test.sh`). The
//! script `tests/python/app_api.py` runs one scenario and reports; these
//! tests check the report and the daemon's side (audit, stats, memory).

mod common;

use common::{Cred, Daemon, eventually, run_python};
use serde_json::{Value, json};

fn args(d: &Daemon, scenario: &str, extra: &[&str]) -> Vec<String> {
    d.app_api_args(scenario, extra)
}

fn err_code(answer: &Value) -> &str {
    answer["error"]["data"]["code"].as_str().unwrap_or("")
}

async fn audit(d: &Daemon) -> Vec<Value> {
    let (_, b) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    b["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_websocket_client_drives_an_agent_end_to_end() {
    let d = Daemon::start();
    let r = run_python("app_api.py", args(&d, "e2e", &[])).await;
    // Idempotent open: the same block the second time.
    assert_eq!(r["open"]["created"], true, "{r}");
    assert_eq!(r["reopen"]["created"], false);
    assert_eq!(r["reopen"]["block_id"], r["open"]["block_id"]);
    assert_eq!(r["open"]["provider"], "shell");
    assert_eq!(r["send"]["outcome"], "delivered");
    // The follow streamed the typed line, tagged with its request id and
    // in sequence, and ended when the program did.
    let streamed: Vec<&str> = r["streamed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(streamed.contains(&"follow-42"), "{r}");
    assert_eq!(r["stream_ids"].as_array().unwrap().len(), 1, "{r}");
    let seqs: Vec<u64> = r["stream_seqs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(r["follow_end"]["reason"], "exited", "{r}");
    assert_eq!(r["stop"]["status"], "exited");
    assert_eq!(r["status"]["state"], "exited");
    // Events of the subscription, in order.
    let events: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        events.contains(&"jekt:delivered") && events.contains(&"block:exited"),
        "{events:?}"
    );
    assert_eq!(r["event_sub_ids"], json!([r["sub"]["sub_id"]]));
    // The tab filter finds the agent's block.
    assert_eq!(r["blocks"]["blocks"][0]["block_id"], r["open"]["block_id"]);
    // Every call is in the audit log, as the instance key.
    let entries = audit(&d).await;
    for m in [
        "agent.open",
        "eventsub",
        "agent.send",
        "agent.output",
        "controllerinput",
        "agent.stop",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["kind"] == "rpc" && e["target"] == m && e["actor"] == "admin"),
            "{m} not audited"
        );
    }
}

#[tokio::test]
async fn json_rpc_errors_use_the_standard_codes_and_batches_work() {
    let d = Daemon::start();
    let r = run_python("app_api.py", args(&d, "protocol", &[])).await;
    assert_eq!(r["before_auth"], "UNAUTHORIZED", "{r}");
    assert_eq!(r["bad_token"], "UNAUTHORIZED");
    assert_eq!(r["auth"]["actor"], "admin");
    assert_eq!(r["parse"]["error"]["code"], -32700);
    assert_eq!(r["parse"]["id"], Value::Null);
    assert_eq!(r["not_2_0"]["error"]["code"], -32600);
    assert_eq!(r["not_2_0"]["id"], 1);
    assert_eq!(r["no_method"]["error"]["code"], -32601);
    assert_eq!(r["bad_params"]["error"]["code"], -32602);
    assert!(
        r["bad_params"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agent.kill-process"),
        "{r}"
    );
    assert_eq!(r["unknown_field"]["error"]["code"], -32602);
    assert_eq!(r["bad_agent"]["error"]["code"], -32602);
    assert_eq!(r["missing_agent"]["error"]["code"], -32000);
    assert_eq!(err_code(&r["missing_agent"]), "AGENT_NOT_FOUND");
    assert_eq!(r["empty_batch"]["error"]["code"], -32600);
    // Batch: answers for the calls with ids and the invalid element; none
    // for the notification.
    let batch = r["batch"].as_array().unwrap();
    assert_eq!(batch.len(), 4, "{batch:?}");
    let by_id = |id: Value| batch.iter().find(|a| a["id"] == id).unwrap();
    assert!(by_id(json!("a"))["result"]["agents"].is_array());
    assert_eq!(by_id(json!("c"))["error"]["code"], -32601);
    assert_eq!(by_id(Value::Null)["error"]["code"], -32600);
    assert_eq!(err_code(by_id(json!("e"))), "MISSING_ARG");
    assert_eq!(r["after_notification"], true);
    let views = &r["views"];
    assert_eq!(views["editor_missing"], "MISSING_ARG");
    assert_eq!(views["editor"], "ok");
    assert_eq!(views["browser_bad"], "INVALID_ARG");
    assert_eq!(views["browser"], "ok");
    assert_eq!(views["help"], "ok");
    assert_eq!(views["nope"], "INVALID_VIEW");
    // The process is still serving.
    let (status, _) = d.get("/v1/agents", &Cred::Key).await;
    assert_eq!(status, 200);
    // Refusals before authentication are audited too.
    assert!(
        audit(&d)
            .await
            .iter()
            .any(|e| e["actor"] == "anonymous" && e["outcome"] == "unauthorized")
    );
}

async fn stats(d: &Daemon) -> Value {
    d.get("/v1/stats", &Cred::Key).await.1
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_bounded_and_told_it_lagged() {
    let d = Daemon::start_with("[events]\nchannel_capacity = 64\n[app_api]\nout_queue = 16\n");
    let pid = d.pid().to_string();
    // 2,500 events of 16 KB: 40 MB the daemon would hold for the slow
    // socket if it buffered without bound.
    let r = run_python(
        "app_api.py",
        args(
            &d,
            "lag",
            &["--pid", &pid, "--count", "2500", "--size", "16000"],
        ),
    )
    .await;
    let growth_kb = r["rss_peak_kb"].as_i64().unwrap() - r["rss_before_kb"].as_i64().unwrap();
    assert!(growth_kb < 16_000, "the daemon grew by {growth_kb} KB: {r}");
    assert!(r["lagged_notices"].as_i64().unwrap() >= 1, "{r}");
    let received = r["received"].as_i64().unwrap();
    let missed = r["missed"].as_i64().unwrap();
    assert!(received < 2500 && missed > 0, "{r}");
    // Closing frees the subscription.
    eventually("subscriptions freed", 10, async || {
        (stats(&d).await["app_api_subscriptions"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_disconnect_frees_its_subscriptions() {
    let d = Daemon::start();
    let base = stats(&d).await;
    let base_bus = base["event_subscribers"].as_u64().unwrap();
    // The script subscribes three times, holds the socket open, then
    // closes it; watch the counts while it is open and after.
    let run = tokio::spawn(run_python(
        "app_api.py",
        args(&d, "hold_open", &["--hold", "3"]),
    ));
    let open = eventually("three subscriptions", 20, async || {
        let s = stats(&d).await;
        (s["app_api_subscriptions"] == 3).then_some(s)
    })
    .await;
    assert_eq!(open["event_subscribers"].as_u64().unwrap(), base_bus + 3);
    assert_eq!(open["app_api_connections"], 1);
    run.await.unwrap();
    eventually("subscriptions freed after the disconnect", 10, async || {
        let s = stats(&d).await;
        (s["app_api_subscriptions"] == 0
            && s["app_api_connections"] == 0
            && s["event_subscribers"].as_u64() == Some(base_bus))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn agent_tokens_are_held_to_their_scopes_and_rate() {
    let d = Daemon::start_with("[app_api]\ncalls_per_s = 1.0\ncalls_burst = 20.0\n");
    let worker = d.open("worker", "shell", &["sh"]).await;
    let other = d.open("other", "shell", &["sh"]).await;
    let own_token = d.own_token("worker", &worker).await;
    let minted = d.cli(&[
        "token",
        "create",
        "--agent",
        "worker",
        "--scope",
        "controller.*@self",
        "--scope",
        "block.*",
        "--scope",
        "event.*@scope:team-*",
        "--label",
        "ci",
    ]);
    assert!(minted.status.success(), "{minted:?}");
    let extra = String::from_utf8(minted.stdout).unwrap().trim().to_string();
    assert!(extra.starts_with("abt_"));
    // An App API token opens no HTTP route.
    let (status, body) = d.get("/v1/agents", &Cred::Token(extra.clone())).await;
    assert_eq!(status, 403, "{body}");
    // A scope that names no method is refused at creation.
    let bad = d.cli(&[
        "token",
        "create",
        "--agent",
        "worker",
        "--scope",
        "agent.sned",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no method named agent.sned"));
    let r = run_python(
        "app_api.py",
        args(
            &d,
            "scopes",
            &[
                "--token",
                &own_token,
                "--extra",
                &extra,
                "--own-block",
                worker["block_id"].as_str().unwrap(),
                "--other-block",
                other["block_id"].as_str().unwrap(),
                "--burst",
                "40",
            ],
        ),
    )
    .await;
    // The agent's own token: the default policy.
    let own = &r["own"];
    assert_eq!(own["agent.list"], "ok", "{r}");
    assert_eq!(own["agent.output self"], "ok");
    assert_eq!(err_code(&own["agent.output other"]), "FORBIDDEN");
    let msg = own["agent.stop other"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(msg.contains("lacks scope agent.stop@other"), "{msg}");
    assert!(
        own["pane.open"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pane.open@self")
    );
    assert_eq!(own["createblock"], "FORBIDDEN");
    assert_eq!(own["controllerinput"], "FORBIDDEN");
    assert_eq!(own["eventsub"], "ok");
    assert_eq!(own["eventpublish"], "ok");
    // The extra token: controllers of its own blocks, blocks, team events.
    let ex = &r["extra"];
    assert_eq!(ex["controllerinput own"], "ok", "{r}");
    let msg = ex["controllerinput other"]["error"]["message"]
        .as_str()
        .unwrap();
    assert!(
        msg.contains(&format!(
            "controllerinput@block:{}",
            other["block_id"].as_str().unwrap()
        )),
        "{msg}"
    );
    assert_eq!(ex["createblock"], "ok");
    assert_eq!(ex["eventsub team"], "ok");
    assert_eq!(ex["eventsub other agent"], "FORBIDDEN");
    assert_eq!(ex["eventsub all"], "FORBIDDEN");
    assert_eq!(ex["agent.list"], "FORBIDDEN");
    assert_eq!(ex["pane.open"], "FORBIDDEN");
    assert!(r["burst"]["limited"].as_i64().unwrap() >= 1, "{r}");
    assert!(r["burst"]["retry_after_s"].as_i64().unwrap() >= 1);
    // Refusals are audited under the agent, with the missing scope.
    let entries = audit(&d).await;
    assert!(entries.iter().any(|e| e["actor"] == "agent:worker"
        && e["kind"] == "rpc"
        && e["outcome"] == "forbidden"
        && e["target"] == "agent.stop"));
    assert!(
        entries
            .iter()
            .any(|e| e["actor"] == "agent:worker" && e["outcome"] == "rate_limited")
    );
    // Listing shows the token without its secret; revoking ends it.
    let listed = d.cli(&["token", "list", "--json"]);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = list["tokens"][0]["token_id"].as_str().unwrap().to_string();
    assert_eq!(list["tokens"][0]["label"], "ci");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&extra));
    assert!(d.cli(&["token", "revoke", &id]).status.success());
    let (status, _) = d.get("/v1/agents", &Cred::Token(extra)).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_tracker_refuses_strangers_and_reused_pids_and_kills_whole_trees() {
    let d = Daemon::start();
    let tree = d.open("tree", "shell", &["sh"]).await;
    let block = tree["block_id"].as_str().unwrap();
    let r = run_python("app_api.py", args(&d, "procs", &["--block", block])).await;
    assert_eq!(r["confidence"], "high", "{r}");
    assert_eq!(r["grandchild_parent"], "sh -c sleep 300; :");
    assert_eq!(err_code(&r["outside"]), "PROCESS_NOT_TRACKED", "{r}");
    assert_eq!(err_code(&r["stale_start_time"]), "PROCESS_REUSED", "{r}");
    assert_eq!(r["killed"]["result"]["sent"], true, "{r}");
    // With root, the script made the kernel reuse the pid inside the
    // block; without, the pid is simply gone.
    let want = if r["real_reuse"] == true {
        "PROCESS_REUSED"
    } else {
        "PROCESS_NOT_TRACKED"
    };
    assert_eq!(err_code(&r["reused"]), want, "{r}");
    assert!(r["tracked"][0]["processes"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(r["kill_tree"]["remaining"], json!([]), "{r}");
    assert!(
        matches!(r["grandchild_after"].as_str(), Some("gone" | "Z")),
        "the grandchild survived: {r}"
    );
    // The pane's program was part of the tree.
    eventually("tree's pane exits", 10, async || {
        let (_, s) = d.get("/v1/agents/tree", &Cred::Key).await;
        (s["state"] == "exited").then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_cli_calls_methods_and_lists_processes() {
    let d = Daemon::start();
    d.open("solo", "shell", &["sh"]).await;
    let out = d.cli(&["rpc", "agent.status", r#"{"agent_id":"solo"}"#]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agent_id"], "solo");
    let out = d.cli(&["rpc", "no.such"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("METHOD_NOT_FOUND"));
    let out = d.cli(&["ps", "solo"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("confidence high") && text.lines().any(|l| l.ends_with(" sh")),
        "{text}"
    );
    // A sysinfo block publishes the machine's load, scoped to the block.
    let out = d.cli(&["rpc", "pane.open", r#"{"view":"sysinfo"}"#]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let block = v["block_id"].as_str().unwrap().to_string();
    let path = format!("/v1/events/history?type=sysinfo&scope=block:{block}");
    let ev = eventually("a sysinfo event", 15, async || {
        let (_, h) = d.get(&path, &Cred::Key).await;
        h["events"].as_array()?.first().cloned()
    })
    .await;
    assert!(ev["data"]["mem_total_kb"].as_u64().unwrap() > 0, "{ev}");
    assert_eq!(stats(&d).await["block_tasks"], 1);
    let out = d.cli(&[
        "rpc",
        "deleteblock",
        &json!({"block_id": block}).to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stats(&d).await["block_tasks"], 0);
}

#[tokio::test]
async fn blocks_controllers_and_event_methods_do_what_they_say() {
    let d = Daemon::start();
    let r = run_python("app_api.py", args(&d, "blocks", &[])).await;
    assert_eq!(r["sub_parent"], true, "{r}");
    assert_eq!(r["info_subblocks"], true);
    assert_eq!(r["info_running"], true);
    assert_eq!(r["not_sub"], "NOT_A_SUBBLOCK");
    assert_eq!(r["resync_lines"], true);
    assert_eq!(r["restart_new_pid"], true, "{r}");
    assert_eq!(r["stop"]["running"], false);
    assert_eq!(r["input_after_stop"], "NOT_RUNNING");
    assert_eq!(r["resync_restart"], true);
    assert_eq!(r["del_sub"]["deleted"].as_array().unwrap().len(), 1);
    assert_eq!(r["del"]["deleted"].as_array().unwrap().len(), 1);
    assert_eq!(r["after_delete"], "BLOCK_NOT_FOUND");
    assert_eq!(r["listed_after"], json!([]));
    assert_eq!(r["pulled"], json!([0, 1, 2]));
    assert_eq!(r["recv_push"], "NOT_PULL");
    assert_eq!(r["history"], json!([1, 2]));
    assert_eq!(r["unsub"], true);
    assert_eq!(r["unsub_again"], "SUBSCRIPTION_NOT_FOUND");
    assert_eq!(r["unsuball"], 1);
    // The deleted terminal's program is gone.
    let s = stats(&d).await;
    assert_eq!(s["panes_running"], 0, "{s}");
}
