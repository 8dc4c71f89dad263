//! The App API's file methods (`file*`) through `/ws`, driven by Python's
//! `websockets` client (`tests/python/app_api_files.py`) against real
//! files: every method, every error code, escapes (`..`, absolute paths,
//! symlinks out, a symlink swapped in during reads, a symlink root), a
//! FIFO, the caps, scopes, streams checked against the files, and the
//! daemon's memory under a slow reader.

mod common;

use common::{Cred, Daemon, run_python};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A directory for one test's files, under the target dir (not /tmp).
fn base() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("files-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// The config with the four roots of `app_api_files.py`, plus `extra`.
fn config(base: &Path, extra: &str) -> String {
    let root = |name: &str, dir: &str| {
        format!(
            "[[files.roots]]\nname = \"{name}\"\npath = \"{}\"\n",
            base.join(dir).display()
        )
    };
    format!(
        "{extra}\n{}{}{}{}",
        root("docs", "docs"),
        root("work", "work"),
        root("linked", "linkroot"),
        root("gone", "missing")
    )
}

fn args(d: &Daemon, scenario: &str, base: &Path, extra: &[&str]) -> Vec<String> {
    let b = base.display().to_string();
    let mut all = vec!["--base", b.as_str()];
    all.extend_from_slice(extra);
    d.app_api_args(scenario, &all)
}

async fn files(d: &Daemon, scenario: &str, base: &Path, extra: &[&str]) -> Value {
    run_python("app_api_files.py", args(d, scenario, base, extra)).await
}

async fn audit(d: &Daemon) -> Vec<Value> {
    let (_, b) = d.get("/v1/audit?limit=1000", &Cred::Key).await;
    b["entries"].as_array().cloned().unwrap_or_default()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[tokio::test]
async fn every_method_works_and_each_error_has_its_code() {
    let b = base();
    let d = Daemon::start_with(&config(b.path(), ""));
    let r = files(&d, "tour", b.path(), &[]).await;
    // fileread: UTF-8 as text, other bytes as base64, forced either way.
    assert_eq!(r["read_text"]["encoding"], "utf8", "{r}");
    assert_eq!(r["read_text"]["data"], "hello, files\n");
    assert_eq!(r["read_text"]["size"], 13);
    assert_eq!(r["read_bin"]["encoding"], "base64");
    assert_eq!(r["read_bin_ok"], true);
    assert_eq!(r["read_forced64"]["data64"], "aGVsbG8sIGZpbGVzCg==");
    assert_eq!(r["read_forced_utf8_bin"], "NOT_UTF8");
    assert_eq!(r["read_range"]["data"], "files");
    assert_eq!(r["read_abs"]["root"], "docs");
    assert_eq!(r["read_abs"]["path"], "sub/b.txt");
    // Writes: atomic, new files get the mode asked for, an overwrite
    // keeps the file's own; create refuses an existing file.
    assert_eq!(r["write"]["created"], true);
    assert_eq!(r["write_disk"], "première\n");
    assert_eq!(r["write_mode"], 0o600);
    assert_eq!(r["overwrite"]["created"], false);
    assert_eq!(r["overwrite_disk_ok"], true);
    assert_eq!(r["overwrite_mode"], 0o640);
    assert_eq!(r["create"]["created"], true);
    assert_eq!(r["create_again"], "EXISTS");
    assert_eq!(r["create_kept"], "fresh");
    assert_eq!(r["append"]["size"], 10);
    assert_eq!(r["append_disk"], "fresh+more");
    assert_eq!(r["append_missing"], "NOT_FOUND");
    assert_eq!(r["append_create"]["size"], 1);
    assert_eq!(r["no_data"], "MISSING_ARG");
    assert_eq!(r["both_data"], "INVALID_ARG");
    assert_eq!(r["bad_base64"], "INVALID_BASE64");
    assert_eq!(r["bad_mode"], "INVALID_ARG");
    // No set-id file or directory is ever made.
    assert_eq!(r["setuid_mode"], "INVALID_ARG");
    assert_eq!(r["setgid_dir"], "INVALID_ARG");
    assert_eq!(r["copy_strips_setuid"], 0o755);
    assert_eq!(r["overwrite_strips_setuid"], 0o755);
    assert_eq!(r["write_dir"], "IS_A_DIRECTORY");
    assert_eq!(r["write_trailing_slash"], "INVALID_PATH");
    assert_eq!(r["write_through_file"], "NOT_A_DIRECTORY");
    assert_eq!(r["write_missing_dir"], "NOT_FOUND");
    assert_eq!(r["write_root_itself"], "INVALID_PATH");
    assert_eq!(r["leftover_temps"], serde_json::json!([]));
    // Directories.
    assert_eq!(r["mkdir"]["created"], true);
    assert_eq!(r["mkdir_again"], "EXISTS");
    assert_eq!(r["mkdir_no_parents"], "NOT_FOUND");
    assert_eq!(r["mkdir_parents"]["created"], true);
    assert_eq!(r["mkdir_parents_again"]["created"], false);
    assert_eq!(r["mkdir_parents_isdir"], true);
    assert_eq!(r["mkdir_parents_through_link"], "SYMLINK");
    assert_eq!(r["mkdir_through_link_made"], false);
    // Copy and move, within a root and across roots.
    assert_eq!(r["copy"]["size"], 13);
    assert_eq!(r["copy_disk"], "hello, files\n");
    assert_eq!(r["copy_exists"], "EXISTS");
    assert_eq!(r["copy_overwrite"], "ok");
    assert_eq!(r["copy_to_work"]["to"]["root"], "work");
    assert_eq!(r["copy_to_work_disk"], "hello, files\n");
    assert_eq!(r["copy_dir"], "IS_A_DIRECTORY");
    assert_eq!(r["copy_fifo"], "NOT_A_FILE");
    assert_eq!(r["copy_link"], "SYMLINK");
    assert_eq!(r["copy_to_outside"], "OUTSIDE_ROOT");
    assert_eq!(r["move"]["moved"], true);
    assert_eq!(r["move_disk"], true);
    assert_eq!(r["move_exists"], "EXISTS");
    assert_eq!(r["move_dir"]["type"], "dir");
    assert_eq!(r["move_into_itself"], "INVALID_ARG");
    assert_eq!(r["move_to_work"]["to"]["root"], "work");
    assert_eq!(r["move_missing"], "NOT_FOUND");
    // fileinfo, a symlink not followed.
    assert_eq!(r["info_file"]["type"], "file");
    assert_eq!(r["info_file"]["size"], 13);
    assert_eq!(r["info_file"]["is_symlink"], false);
    assert!(r["info_file"]["mtime_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(r["info_dir"]["type"], "dir");
    assert_eq!(r["info_root"]["path"], ".");
    assert_eq!(r["info_link"]["type"], "symlink");
    assert_eq!(r["info_link"]["is_symlink"], true);
    assert!(s(&r["info_link"]["target"]).ends_with("outside/secret.txt"));
    assert_eq!(r["info_fifo"]["type"], "fifo");
    assert_eq!(r["info_missing"], "NOT_FOUND");
    assert_eq!(r["info_file_as_dir"], "NOT_A_DIRECTORY");
    // filelist: sorted as the directory holds them, capped.
    let names: Vec<&str> = r["list"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["name"]))
        .collect();
    let disk: Vec<&str> = r["list_disk"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(names, disk);
    assert_eq!(r["list"]["truncated"], false);
    assert_eq!(r["list_capped"]["entries"].as_array().unwrap().len(), 3);
    assert_eq!(r["list_capped"]["truncated"], true);
    assert_eq!(r["list_capped"]["entries"][0]["name"], disk[0]);
    assert_eq!(r["list_bad_cap"], "INVALID_QUERY");
    assert_eq!(r["list_file"], "NOT_A_DIRECTORY");
    // filejoin.
    assert_eq!(r["join"]["path"], "sub/deep/c.txt");
    assert_eq!(r["join_climb"], "OUTSIDE_ROOT");
    assert_eq!(r["join_abs"], "INVALID_PATH");
    assert_eq!(r["join_ghost"]["path"], "no/such/file");
    // filedelete.
    assert_eq!(r["delete_file"]["type"], "file");
    assert_eq!(r["delete_link"]["type"], "symlink");
    assert_eq!(r["delete_link_kept_target"], true);
    assert_eq!(r["delete_nonempty"], "NOT_EMPTY");
    assert_eq!(r["delete_recursive"]["removed"], 3);
    assert_eq!(r["delete_empty_dir"]["deleted"], true);
    assert_eq!(r["delete_missing"], "NOT_FOUND");
    assert_eq!(r["delete_root"], "INVALID_PATH");
    assert_eq!(r["docs_still_there"], true);
    assert_eq!(r["deep_delete"], "TOO_DEEP");
    assert_eq!(r["deep_still_there"], true);
    assert_eq!(r["deep_tar"], "TOO_DEEP");
    // Which root.
    assert_eq!(r["no_root"], "MISSING_ARG");
    assert_eq!(r["unknown_root"], "ROOT_NOT_FOUND");
    assert_eq!(r["missing_root_dir"], "ROOT_UNAVAILABLE");
    // Params of the wrong shape.
    assert_eq!(r["no_path"]["error"]["code"], -32602);
    assert!(s(&r["no_path"]["error"]["message"]).contains("path"), "{r}");
    for k in [
        "path_number",
        "path_list",
        "unknown_field",
        "smuggled_loc",
        "positional",
        "negative_offset",
        "bad_encoding",
    ] {
        assert_eq!(r[k], -32602, "{k}: {r}");
    }
    assert_eq!(r["stream_no_id"]["error"]["code"], -32602);
    assert_eq!(r["agents_still_listed"], "ok");
    // Each call is audited with its root and path.
    let entries = audit(&d).await;
    let shown = |m: &str, t: &str| {
        entries
            .iter()
            .any(|e| e["kind"] == "rpc" && e["target"] == m && s(&e["detail"]).contains(t))
    };
    assert!(
        shown("fileread", "targets=root:docs:\"a.txt\""),
        "{entries:?}"
    );
    assert!(shown(
        "filecopy",
        "targets=root:docs:\"a.txt\",root:work:\"from-docs.txt\""
    ));
    assert!(shown("filedelete", "root:docs:\"p\""));
}

#[tokio::test]
async fn hostile_paths_are_refused_cleanly_and_nothing_outside_is_reached() {
    let b = base();
    let d = Daemon::start_with(&config(b.path(), ""));
    let r = files(&d, "paths", b.path(), &[]).await;
    let want = [
        ("dotdot", "INVALID_PATH"),
        ("dotdot_inner", "INVALID_PATH"),
        ("dotdot_only", "INVALID_PATH"),
        ("abs_outside", "OUTSIDE_ROOT"),
        ("abs_etc", "OUTSIDE_ROOT"),
        ("abs_prefix_trick", "OUTSIDE_ROOT"),
        ("abs_dotdot", "INVALID_PATH"),
        ("nul", "INVALID_PATH"),
        ("nul_only", "INVALID_PATH"),
        ("empty", "INVALID_PATH"),
        ("long", "INVALID_PATH"),
        ("long_name", "INVALID_PATH"),
        ("link_file", "SYMLINK"),
        ("link_dir", "SYMLINK"),
        ("link_inside", "SYMLINK"),
        ("fifo", "NOT_A_FILE"),
        ("through_file", "NOT_A_DIRECTORY"),
        ("dir", "IS_A_DIRECTORY"),
        ("trailing_slash_file", "NOT_A_DIRECTORY"),
        ("unicode_missing", "NOT_FOUND"),
        ("control", "NOT_FOUND"),
        ("dot", "IS_A_DIRECTORY"),
        ("dot_slash", "IS_A_DIRECTORY"),
        // Absolute: the file system's root, under no root.
        ("slashes", "OUTSIDE_ROOT"),
        ("double_slash_inside", "ok"),
    ];
    for (case, code) in want {
        assert_eq!(r[case], code, "{case}: {r}");
    }
    // A lone surrogate is not text: the client cannot even send it, or
    // the daemon refuses the frame; either way no file is read.
    assert_ne!(r["surrogate_like"], "ok");
    // The same class of path is refused the same way by every method.
    for (method, got) in r["methods"].as_object().unwrap() {
        match method.as_str() {
            "filecopy" | "filemove" => {
                assert_eq!(got["from_out"], "SYMLINK", "{method}: {got}");
                assert_eq!(got["to_out"], "SYMLINK", "{method}: {got}");
                assert_eq!(got["to_dotdot"], "INVALID_PATH", "{method}: {got}");
            }
            _ => {
                assert_eq!(got["dotdot"], "INVALID_PATH", "{method}: {got}");
                assert_eq!(got["abs_outside"], "OUTSIDE_ROOT", "{method}: {got}");
                assert_eq!(got["link_dir"], "SYMLINK", "{method}: {got}");
                assert_eq!(got["nul"], "INVALID_PATH", "{method}: {got}");
            }
        }
    }
    // The root that is a symlink is refused, saying why.
    assert_eq!(
        r["linked_root"]["error"]["data"]["code"], "ROOT_UNAVAILABLE",
        "{r}"
    );
    assert!(s(&r["linked_root"]["error"]["message"]).contains("symlink"));
    // The FIFO: refused at once, for reading and writing.
    assert_eq!(r["fifo_stream"], "NOT_A_FILE");
    assert_eq!(r["fifo_append"], "NOT_A_FILE");
    assert_eq!(r["fifo_write"], "NOT_A_FILE");
    assert!(r["fifo_secs"].as_f64().unwrap() < 5.0, "{r}");
    // Nothing was made or changed outside.
    assert_eq!(r["outside_untouched"], serde_json::json!(["secret.txt"]));
    assert_eq!(r["still_serving"], "ok");
    // The host paths of the roots never show in an error.
    let text = r.to_string();
    assert!(!text.contains(&format!("{}/docs\"", b.path().display())));
}

#[tokio::test]
async fn a_symlink_swapped_in_during_reads_never_leads_outside() {
    let b = base();
    let docs = b.path().join("docs");
    let outside = b.path().join("outside");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(docs.join("sub/f.txt"), "inside").unwrap();
    std::fs::write(outside.join("f.txt"), "OUTSIDE SECRET!!").unwrap();
    std::fs::write(outside.join("marker_outside"), "").unwrap();
    std::os::unix::fs::symlink(&outside, docs.join("alt")).unwrap();
    let d = Daemon::start_with(&config(b.path(), "[app_api]\ncalls_per_s = 100000\n"));
    // Swaps `sub` (a directory) and `alt` (a symlink to outside) as fast
    // as it can, atomically (RENAME_EXCHANGE), while the client reads.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, docs) = (stop.clone(), swaps.clone(), docs.clone());
        std::thread::spawn(move || {
            let (a, b) = (docs.join("sub"), docs.join("alt"));
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &a,
                    rustix::fs::CWD,
                    &b,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let r1 = files(&d, "race", b.path(), &["--count", "3000", "--secs", "2"]).await;
    let r2 = files(
        &d,
        "race",
        b.path(),
        &["--count", "2000", "--secs", "2", "--all-methods"],
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    eprintln!(
        "swaps: {}; reads: {r1}; all methods: {r2}",
        swaps.load(Ordering::Relaxed)
    );
    for r in [&r1, &r2] {
        assert_eq!(r["leaked"], 0, "the outside file was reached: {r}");
        assert!(r["calls"].as_u64().unwrap() >= 2000, "{r}");
        // Both states were seen: reads that went through the directory,
        // and refusals naming the symlink.
        assert!(r["inside"].as_u64().unwrap() > 0, "{r}");
        let errors = r["errors"].as_object().unwrap();
        assert!(errors.contains_key("SYMLINK"), "{r}");
        assert!(
            errors
                .keys()
                .all(|k| ["SYMLINK", "NOT_FOUND", "NOT_A_DIRECTORY"].contains(&k.as_str())),
            "{r}"
        );
    }
    assert!(swaps.load(Ordering::Relaxed) > 1000);
}

#[tokio::test]
async fn reads_and_writes_over_the_caps_are_refused_with_the_sizes() {
    let b = base();
    let d = Daemon::start_with(&config(
        b.path(),
        "[files]\nmax_read_bytes = 4096\nmax_write_bytes = 2048\nmax_entries = 5\n",
    ));
    let r = files(&d, "caps", b.path(), &[]).await;
    assert_eq!(r["read_big"]["data"]["code"], "TOO_LARGE", "{r}");
    let m = s(&r["read_big"]["message"]);
    assert!(m.contains("5000") && m.contains("4096"), "{m}");
    assert_eq!(r["read_piece"], 1000);
    assert_eq!(r["write_big"]["data"]["code"], "TOO_LARGE");
    let m = s(&r["write_big"]["message"]);
    assert!(m.contains("3000") && m.contains("2048"), "{m}");
    assert_eq!(r["append_big"], "TOO_LARGE");
    assert_eq!(r["copy_big"], "TOO_LARGE");
    assert_eq!(r["write_small"], "ok");
    // The stream is not capped.
    assert_eq!(r["stream"]["bytes"], 5000);
    assert_eq!(r["stream_bytes"], 5000);
    assert_eq!(r["list_capped"]["entries"].as_array().unwrap().len(), 5);
    assert_eq!(r["list_capped"]["truncated"], true);
    assert_eq!(r["list_over"], "INVALID_QUERY");
}

#[tokio::test]
async fn a_move_between_filesystems_says_cross_device_and_copy_then_delete_works() {
    use std::os::unix::fs::MetadataExt;
    let b = base();
    let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("no /dev/shm here: nothing to test");
        return;
    };
    std::fs::create_dir_all(b.path().join("docs")).unwrap();
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    if dev(&b.path().join("docs")) == dev(shm.path()) {
        eprintln!("/dev/shm is on the same filesystem here: nothing to test");
        return;
    }
    let extra = format!(
        "[[files.roots]]\nname = \"shm\"\npath = \"{}\"\n",
        shm.path().display()
    );
    let d = Daemon::start_with(&config(b.path(), &extra));
    let r = files(&d, "xdev", b.path(), &[]).await;
    assert_eq!(r["move"]["error"]["data"]["code"], "CROSS_DEVICE", "{r}");
    assert!(s(&r["move"]["error"]["message"]).contains("filecopy then filedelete"));
    assert_eq!(r["still_in_docs"], true);
    assert_eq!(r["copy"], "ok");
    assert_eq!(r["delete"], "ok");
    assert_eq!(r["read_copy"], "across");
}

#[tokio::test]
async fn streams_past_the_daemons_limit_are_busy_until_others_end() {
    let b = base();
    let d = Daemon::start_with(&config(b.path(), "[app_api]\nout_queue = 4\n"));
    // Connections of 32 streams nobody reads: 64 run (the limit), the
    // rest are BUSY, and so is one more. 17 sockets of 4 streams each (a socket runs at most 4) pass the
    // daemon's 64.
    let r = files(&d, "busy", b.path(), &["--count", "17"]).await;
    assert_eq!(r["over"]["data"]["code"], "BUSY", "{r}");
    assert!(s(&r["over"]["message"]).contains("64"), "{r}");
    assert_eq!(r["plain_read"], "ok");
    assert_eq!(r["after"], "ok", "{r}");
}

#[tokio::test]
async fn the_cli_calls_the_file_methods_and_prints_streams_as_json_lines() {
    let b = base();
    let docs = b.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let d = Daemon::start_with(&config(b.path(), ""));
    let json = |args: &[&str]| -> Vec<Value> {
        let out = d.cli(args);
        assert!(out.status.success(), "{out:?}");
        // JSON values one after the other (the answer pretty-printed).
        serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect()
    };
    let w = json(&[
        "rpc",
        "filewrite",
        r#"{"root":"docs","path":"n.txt","data":"0123456789"}"#,
    ]);
    assert_eq!(w[0]["created"], true);
    assert_eq!(
        std::fs::read_to_string(docs.join("n.txt")).unwrap(),
        "0123456789"
    );
    // A stream: each chunk a JSON line, then the answer.
    let lines = json(&[
        "rpc",
        "filereadstream",
        r#"{"root":"docs","path":"n.txt","chunk_bytes":4}"#,
    ]);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["data64"], "MDEyMw==");
    assert_eq!(lines[2]["offset"], 8);
    assert_eq!(lines[3]["bytes"], 10);
    let lines = json(&["rpc", "fileliststream", r#"{"root":"docs"}"#]);
    assert_eq!(lines[0]["entries"][0]["name"], "n.txt");
    assert_eq!(lines[1]["entries"], 1);
}

#[tokio::test]
async fn without_roots_every_file_method_says_how_to_set_them() {
    let b = base();
    let d = Daemon::start();
    let r = files(&d, "disabled", b.path(), &[]).await;
    let methods = r.as_object().unwrap();
    assert_eq!(methods.len(), 14);
    for (m, got) in methods {
        assert_eq!(got[0], "FILES_DISABLED", "{m}: {got}");
        assert!(s(&got[1]).contains("files.roots"), "{m}: {got}");
    }
}

#[tokio::test]
async fn agent_tokens_get_no_file_method_by_default_and_only_what_a_scope_grants() {
    let b = base();
    let d = Daemon::start_with(&config(b.path(), ""));
    let token = d.register("alice").await;
    let extra = d.mint_token("alice", &["fileread@root:docs"]);
    let r = files(
        &d,
        "scoped",
        b.path(),
        &["--token", &token, "--extra", &extra],
    )
    .await;
    let default = r["default"].as_object().unwrap();
    assert_eq!(default.len(), 14);
    for (m, code) in default {
        assert_eq!(code, "FORBIDDEN", "{m} with the default scopes: {r}");
    }
    assert_eq!(r["read_docs"], "ok");
    assert_eq!(r["read_docs_abs"], "ok");
    assert_eq!(r["read_work"], "FORBIDDEN");
    assert_eq!(r["read_no_root"], "FORBIDDEN");
    assert_eq!(r["write_docs"], "FORBIDDEN");
    assert!(
        s(&r["forbidden_message"]).contains("filewrite@root:docs"),
        "{r}"
    );
    assert_eq!(r["a_unchanged"], "hello, files\n");
    // The refusals are audited, with the file they named.
    let entries = audit(&d).await;
    assert!(entries.iter().any(|e| e["target"] == "filewrite"
        && e["outcome"] == "forbidden"
        && s(&e["detail"]).contains("root:docs:\"a.txt\"")));
}

#[tokio::test]
async fn streams_match_the_files_and_the_tar_unpacks_to_the_same_tree() {
    let b = base();
    let d = Daemon::start_with(&config(b.path(), ""));
    let r = files(&d, "streams", b.path(), &[]).await;
    assert_eq!(r["read_equal"], true, "{r}");
    let seqs: Vec<u64> = r["read_seqs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    assert_eq!(r["read_offsets_ok"], true);
    assert_eq!(r["read_answer"]["bytes"], 300_000);
    assert_eq!(r["read_answer"]["chunks"], 8);
    assert_eq!(r["read_sha_ok"], true);
    assert_eq!(r["read_range_ok"], true);
    assert_eq!(r["read_bad_chunk"], "INVALID_QUERY");
    assert_eq!(r["list_equal"], true, "{r}");
    assert_eq!(r["list_names_equal"], true);
    assert_eq!(
        r["list_batches"],
        serde_json::json!([100, 100, 100, 100, 100, 100, 100, 2])
    );
    assert_eq!(r["list_answer"]["entries"], 702);
    assert_eq!(r["list_link_type"], serde_json::json!(["symlink"]));
    assert_eq!(r["tar_bytes_ok"], true, "{r}");
    assert_eq!(r["tar_sha_ok"], true);
    assert_eq!(r["tar_tree_equal"], true, "{}", r["tar_tree_diff"]);
    assert_eq!(
        r["tar_link_members"],
        serde_json::json!(["in_link", "out_dir", "out_file", "sub/deep/up_link"])
    );
    assert_eq!(
        r["tar_answer"]["skipped"],
        serde_json::json!(["pipe: fifo"])
    );
    assert_eq!(r["tar_answer"]["symlinks"], 4);
    assert_eq!(r["tar_sub_top"], serde_json::json!(["deep"]));
    assert_eq!(r["tar_sub_count"], 703);
    assert_eq!(
        r["tar_file"],
        serde_json::json!([["a.txt"], "hello, files\n"])
    );
    assert_eq!(r["tar_missing"], "NOT_FOUND");
    assert_eq!(r["tar_through_link"], "SYMLINK");
    assert_eq!(r["tar_link"], serde_json::json!([["out_dir", true, true]]));
}

/// Where the sparse file of the memory test lives.
fn sparse_base() -> (tempfile::TempDir, PathBuf) {
    let b = base();
    let p = b.path().to_path_buf();
    (b, p)
}

#[tokio::test]
async fn a_slow_reader_of_a_large_stream_keeps_the_daemon_small() {
    let (_keep, b) = sparse_base();
    let d = Daemon::start_with(&config(&b, ""));
    let pid = d.pid().to_string();
    let r = files(&d, "slow", &b, &["--pid", &pid, "--secs", "4"]).await;
    eprintln!("slow reader: {r}");
    let before = r["rss_before_kb"].as_i64().unwrap();
    let growth = r["rss_peak_kb"].as_i64().unwrap() - before;
    assert!(growth < 40_000, "the daemon grew by {growth} KB: {r}");
    let stalled = r["rss_stalled_kb"].as_i64().unwrap() - before;
    assert!(
        stalled < 40_000,
        "a stalled reader grew the daemon by {stalled} KB: {r}"
    );
    assert_eq!(r["received"], 200 * 1024 * 1024, "{r}");
    assert_eq!(r["answer"]["bytes"], 200 * 1024 * 1024);
    assert_eq!(r["sha_ok"], true);
    assert_eq!(r["content_ok"], true);
    // The daemon still answers.
    let (status, _) = d.get("/v1/agents", &Cred::Key).await;
    assert_eq!(status, 200);
}
