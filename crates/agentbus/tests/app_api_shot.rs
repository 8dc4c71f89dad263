//! `captureblockscreenshot` and `agent:output` events through `/ws`, with
//! Python's `websockets` as the client (`tests/python/app_api_shot.py`):
//! the screen of a hosted pane and of a tmux pane (a private tmux server)
//! as text with attributes and as a PNG decoded by the standard library;
//! the errors; a program's output as events, in order, without the
//! terminal queries the daemon answers; a subscriber that never reads;
//! agent tokens held to their scopes.

mod common;

use common::tmux::{SHELL, Tmux, ok, wait_screen};
use common::{Cred, Daemon, eventually, run_python};
use serde_json::{Value, json};

/// A screen with a bold red word, a word on green, a true-color word, a
/// second line, and the cursor moved to row 5, column 10 (from 1).
const PAINT: &str = r"printf '\033[1;31mRED\033[0m plain \033[42mGREEN\033[0m \033[38;2;10;20;250mTRUE\033[0m\r\nsecond line\033[5;10H'; exec sleep 600";

fn err_code(answer: &Value) -> &str {
    answer["error"]["data"]["code"].as_str().unwrap_or("")
}

fn run(attrs: Value, col: u64, len: u64) -> Value {
    let mut r = json!({"col": col, "len": len, "fg": "default", "bg": "default",
        "bold": false, "italic": false, "underline": false, "inverse": false});
    for (k, v) in attrs.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

/// What both kinds of pane must show for [`PAINT`].
fn assert_painted(r: &Value, rows: u64, cols: u64) {
    assert_eq!(r["rows"], rows, "{r}");
    assert_eq!(r["cols"], cols);
    assert_eq!(r["screen_rows"], rows);
    assert_eq!(r["format"], "both");
    assert_eq!(r["agent_id"], "painter");
    assert_eq!(r["row0"]["text"], "RED plain GREEN TRUE", "{r}");
    assert_eq!(
        r["row0"]["runs"],
        json!([
            run(json!({"fg": 1, "bold": true}), 0, 3),
            run(json!({}), 3, 7),
            run(json!({"bg": 2}), 10, 5),
            run(json!({}), 15, 1),
            run(json!({"fg": "#0a14fa"}), 16, 4),
            run(json!({}), 20, cols - 20),
        ]),
        "{r}"
    );
    assert_eq!(r["row1"]["text"], "second line");
    assert_eq!(r["row1"]["runs"], json!([run(json!({}), 0, cols)]));
    assert_eq!(
        r["cursor"],
        json!({"row": 4, "col": 9, "visible": true}),
        "{r}"
    );
    // The picture is cols x rows cells of the font's cell size, and that
    // is what a decoder finds.
    let (cw, ch) = (
        r["cell_width"].as_u64().unwrap(),
        r["cell_height"].as_u64().unwrap(),
    );
    assert!(cw >= 6 && ch >= 12, "{r}");
    assert_eq!(r["width"], cols * cw);
    assert_eq!(r["height"], rows * ch);
    let p = &r["picture"];
    assert_eq!(p["decoded_width"], r["width"], "{p}");
    assert_eq!(p["decoded_height"], r["height"]);
    // The red word: red glyph pixels on the default (black) background,
    // nothing of another hue.
    assert!(p["red_lit"].as_u64().unwrap() > 20, "{p}");
    assert_eq!(p["red_other"], 0, "{p}");
    // Most of the green word's cells are the green background.
    assert!(
        p["green_bg"].as_u64().unwrap() * 2 > p["green_cells_px"].as_u64().unwrap(),
        "{p}"
    );
    assert!(p["true_lit"].as_u64().unwrap() > 10, "{p}");
    assert!(p["plain_lit"].as_u64().unwrap() > 10, "{p}");
    assert_eq!(p["bottom_right"], json!([0, 0, 0]), "{p}");
    assert_eq!(p["top_right"], json!([0, 0, 0]), "{p}");
    // The cursor is a block of the default foreground.
    assert_eq!(p["cursor_center"], json!([229, 229, 229]), "{p}");
    assert_eq!(r["font"]["px"], 16.0);
    assert!(r["font"]["file"].as_str().unwrap().ends_with(".ttf"), "{r}");
    // Each format carries what it says.
    assert_eq!(r["png_only"]["has_screen"], false);
    assert_eq!(r["png_only"]["has_png"], true);
    assert_eq!(r["png_only"]["picture"], r["picture"]);
    assert_eq!(r["text_only"]["has_png"], false);
    assert_eq!(r["text_only"]["row0"], r["row0"]);
    assert_eq!(r["by_block_row0"], r["row0"]);
}

#[tokio::test]
async fn a_hosted_panes_screen_comes_as_text_with_attributes_and_as_a_png() {
    let d = Daemon::start();
    d.open("painter", "raw", &["sh", "-c", PAINT]).await;
    let r = run_python("app_api_shot.py", d.app_api_args("shot", &[])).await;
    assert_painted(&r, 24, 80);
}

#[tokio::test]
async fn a_tmux_panes_screen_is_read_from_tmux() {
    let d = Daemon::start();
    let t = Tmux::start(SHELL);
    let pane = t.window(PAINT);
    wait_screen(&t, &pane, "RED plain GREEN TRUE").await;
    ok(d.cli_env(
        &["open", "painter", "--tmux", &pane, "--provider", "generic"],
        &[("TMUX_BRIDGE_SOCKET", t.sock())],
    ));
    let size = t.tmux(&[
        "display-message",
        "-p",
        "-t",
        &pane,
        "#{pane_height} #{pane_width}",
    ]);
    let (rows, cols) = size.trim().split_once(' ').unwrap();
    let r = run_python("app_api_shot.py", d.app_api_args("shot", &[])).await;
    assert_painted(&r, rows.parse().unwrap(), cols.parse().unwrap());
    // tmux gives no byte stream: a change of its screen (the terminal
    // echoing what is typed) comes as an empty `resync` chunk.
    let r = run_python("app_api_shot.py", d.app_api_args("tmux_output", &[])).await;
    assert_eq!(r["event"]["data"]["resync"], true, "{r}");
    assert_eq!(r["event"]["data"]["data"], "");
    assert_eq!(r["event"]["data"]["bytes"], 0);
    assert_eq!(r["event"]["data"]["agent_id"], "painter");
    assert_eq!(r["pull"]["events"].as_array().map(Vec::len), Some(1), "{r}");
}

#[tokio::test]
async fn bad_requests_are_named_and_a_missing_font_fails_only_the_picture() {
    let d = Daemon::start_with("[screenshot]\nfont = \"/nonexistent/NoSuchMono.ttf\"\n");
    d.open("painter", "raw", &["sh", "-c", PAINT]).await;
    let r = run_python("app_api_shot.py", d.app_api_args("errors", &[])).await;
    assert_eq!(err_code(&r["unknown_block"]), "BLOCK_NOT_FOUND", "{r}");
    assert!(
        r["unknown_block"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0190a0a0-0000-7000-8000-000000000000")
    );
    assert_eq!(r["unknown_agent"], "AGENT_NOT_FOUND");
    assert_eq!(r["bad_format"]["error"]["code"], -32602, "{r}");
    let msg = r["bad_format"]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("captureblockscreenshot") && msg.contains("jpeg"),
        "{msg}"
    );
    for k in [
        "format_number",
        "bad_block_id",
        "unknown_field",
        "positional",
    ] {
        assert_eq!(r[k], -32602, "{k}: {r}");
    }
    assert_eq!(r["neither"], "MISSING_ARG");
    assert_eq!(r["not_a_terminal"], "NO_CONTROLLER");
    // The configured font cannot be read: the picture says so and what to
    // do; the text does not need it.
    assert_eq!(err_code(&r["png"]), "BAD_FONT", "{r}");
    let msg = r["png"]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("/nonexistent/NoSuchMono.ttf") && msg.contains("[screenshot] font"),
        "{msg}"
    );
    assert_eq!(err_code(&r["both"]), "BAD_FONT");
    assert_eq!(r["text"], "ok");
    assert_eq!(r["after"], "ok");
    // A picture larger than allowed is refused with what to do instead.
    let small = Daemon::start_with("[screenshot]\nmax_pixels = 1000\n");
    small.open("painter", "raw", &["sh", "-c", PAINT]).await;
    let out = small.cli(&["rpc", "captureblockscreenshot", r#"{"agent_id":"painter"}"#]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SCREENSHOT_TOO_LARGE") && err.contains("format"),
        "{out:?}"
    );
    let out = small.cli(&[
        "rpc",
        "captureblockscreenshot",
        r#"{"agent_id":"painter","format":"text"}"#,
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 24, "{v}");
    let (_, a) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    assert!(
        a["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "rpc"
                && e["target"] == "captureblockscreenshot"
                && e["outcome"] == "block_not_found"),
        "{a}"
    );
}

#[tokio::test]
async fn a_subscriber_gets_a_programs_output_in_order_and_only_while_it_wants_it() {
    let d = Daemon::start();
    let r = run_python("app_api_shot.py", d.app_api_args("output", &[])).await;
    // Nothing is tapped before a subscription, one pane while two
    // subscriptions want it, nothing after.
    assert_eq!(r["taps_before"], 0, "{r}");
    assert_eq!(r["taps_during"], 1);
    assert_eq!(r["taps_one_left"], 1);
    assert_eq!(r["taps_after"], 0);
    assert_eq!(r["taps_for_local"], 0);
    assert_eq!(r["numbers_in_order"], true, "{r}");
    assert_eq!(r["numbers_seen"], 3000);
    assert_eq!(r["after_query"], true);
    assert_eq!(
        r["query_seen"], false,
        "a terminal query reached the events"
    );
    assert_eq!(r["unicode"], true);
    assert_eq!(r["resync"], false);
    assert!(r["max_bytes"].as_u64().unwrap() <= 16 * 1024, "{r}");
    // Coalesced: far fewer events than lines.
    assert!(r["events"].as_u64().unwrap() < 1000, "{r}");
    assert_eq!(r["types"], json!(["agent:output"]));
    let block = r["event_block"].as_str().unwrap();
    assert_eq!(
        r["scopes"],
        json!(["agent:talker", format!("block:{block}")])
    );
    assert_eq!(r["event_agent"], "talker");
    assert!(r["block_sub_bytes"].as_u64().unwrap() > 0);
    assert_eq!(r["star_saw_output"], false);
    assert_ne!(r["forged"]["error"], Value::Null, "{r}");
    assert!(
        r["forged"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("published by agentbus itself"),
        "{r}"
    );
    assert_eq!(r["history"]["events"], json!([]));
    assert_eq!(r["history"]["live_only"], true);
    assert_eq!(r["after_restart"], true);
    assert_eq!(r["local_events"], 0);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_neither_slows_the_pane_nor_grows_the_daemon() {
    let d = Daemon::start_with("[app_api]\nout_queue = 16\n");
    let pid = d.pid().to_string();
    let size = 40_000_000u64;
    let r = run_python(
        "app_api_shot.py",
        d.app_api_args("lag", &["--pid", &pid, "--size", &size.to_string()]),
    )
    .await;
    let finished = r["finished_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("the flood never finished: {r}"));
    assert!(finished < 60.0, "{r}");
    let growth_kb = r["rss_peak_kb"].as_i64().unwrap() - r["rss_before_kb"].as_i64().unwrap();
    assert!(growth_kb < 24_000, "the daemon grew by {growth_kb} KB: {r}");
    assert!(r["lagged_notices"].as_i64().unwrap() >= 1, "{r}");
    assert!(r["missed"].as_i64().unwrap() > 0, "{r}");
    assert!(r["received_bytes"].as_u64().unwrap() < size, "{r}");
    eventually("the subscription and its tap freed", 10, async || {
        let (_, s) = d.get("/v1/stats", &Cred::Key).await;
        (s["app_api_subscriptions"] == 0 && s["output_taps"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn agent_tokens_read_output_and_screens_only_where_their_scopes_say() {
    let d = Daemon::start();
    let worker = d.open("worker", "shell", &["sh"]).await;
    let other = d.open("other", "shell", &["sh"]).await;
    let own = d.own_token("worker", &worker).await;
    let extra = d.mint_token(
        "worker",
        &[
            "eventsub@self",
            "agent.output@self",
            "captureblockscreenshot@self",
        ],
    );
    let subonly = d.mint_token("worker", &["eventsub"]);
    let own_block = worker["block_id"].as_str().unwrap();
    let other_block = other["block_id"].as_str().unwrap();
    let r = run_python(
        "app_api_shot.py",
        d.app_api_args(
            "scopes",
            &[
                "--token",
                &own,
                "--extra",
                &extra,
                "--subonly",
                &subonly,
                "--own-block",
                own_block,
                "--other-block",
                other_block,
            ],
        ),
    )
    .await;
    // The agent's own token: eventsub anywhere, agent.output on itself.
    let o = &r["own"];
    assert_eq!(o["output self"], "ok", "{r}");
    assert_eq!(err_code(&o["output other"]), "FORBIDDEN");
    let msg = o["output other"]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("agent.output@other"), "{msg}");
    assert_eq!(o["output other block"], "FORBIDDEN");
    assert_eq!(o["output all"], "FORBIDDEN");
    assert_eq!(err_code(&o["shot self"]), "FORBIDDEN", "{r}");
    assert!(
        o["shot self"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("captureblockscreenshot@block:")
    );
    assert_eq!(o["received"], true);
    // A token scoped to itself.
    let x = &r["extra"];
    assert_eq!(x["output self"], "ok", "{r}");
    assert_eq!(x["output own block"], "ok");
    let msg = x["output other"]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("eventsub@other"), "{msg}");
    assert_eq!(x["shot self"], "ok");
    assert_eq!(x["shot own block"], "ok");
    assert_eq!(err_code(&x["shot other"]), "FORBIDDEN");
    assert!(
        x["shot other"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("captureblockscreenshot@block:{other_block}"))
    );
    assert_eq!(x["shot other agent"], "FORBIDDEN");
    // eventsub alone does not open a pane's output.
    let s = &r["subonly"];
    assert_eq!(err_code(&s["output self"]), "FORBIDDEN", "{r}");
    let msg = s["output self"]["error"]["message"].as_str().unwrap();
    assert!(msg.contains("agent.output@"), "{msg}");
    assert_eq!(s["other events"], "ok");
}
