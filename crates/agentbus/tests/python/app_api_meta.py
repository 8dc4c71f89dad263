"""Metadata, views, config, live settings, raw input and sessions through
the App API (/ws), with the `websockets` package. One scenario per run;
the last line printed is a JSON report for the Rust test.

    app_api_meta.py <scenario> --url http://127.0.0.1:PORT --key KEY [...]
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app_api import code, connect, run_scenarios, ws_url  # noqa: E402
import websockets  # noqa: E402


async def ok(rpc, method, params=None):
    a = await rpc.call(method, params)
    if "error" in a:
        raise RuntimeError(f"{method} {params} failed: {a['error']}")
    return a["result"]


async def wait_output(rpc, agent, needle, timeout=15):
    for _ in range(timeout * 20):
        out = await ok(rpc, "agent.output", {"agent_id": agent, "lines": 50})
        if any(needle in line for line in out["lines"]):
            return out["lines"]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{needle!r} never showed in {agent}'s pane: {out['lines']}")


async def meta(args):
    ws, rpc = await connect(args)
    r = {}
    worker = await ok(rpc, "agent.open", {"agent_id": "worker", "command": ["sh"], "tab_id": "t1"})
    wb = worker["block_id"]
    editor = (await ok(rpc, "createblock", {"view": "editor", "file": args.file, "tab_id": "t1"}))["block_id"]
    browser = (await ok(rpc, "createblock", {"view": "browser", "url": "https://example.com/a"}))["block_id"]
    r["get_term"] = await ok(rpc, "getmeta", {"block_id": wb})
    r["set_block"] = await ok(rpc, "setmeta", {"block_id": editor, "meta": {
        "title": "Notes", "x:owner": "me", "tags": ["a", "b"], "x:nested/k": {"deep": [1, 2]}}})
    r["unset"] = await ok(rpc, "setmeta", {"block_id": editor, "meta": {"x:owner": None}})
    r["move_tab"] = await ok(rpc, "setmeta", {"block_id": editor, "meta": {"tab_id": "t2"}})
    r["tab_t2"] = [b["block_id"] for b in (await ok(rpc, "blockslist", {"tab_id": "t2"}))["blocks"]]
    r["editor"] = editor
    r["set_file"] = await rpc.call("setmeta", {"block_id": editor, "meta": {"file": "/nonexistent-dir/x/y"}})
    r["url_on_editor"] = await rpc.call("setmeta", {"block_id": editor, "meta": {"url": "https://x"}})
    r["set_url"] = await ok(rpc, "setmeta", {"block_id": browser, "meta": {"url": "https://example.com/b"}})
    bad = {
        "unknown_key": {"owner": 1},
        "read_only_view": {"view": "editor"},
        "long_title": {"title": "t" * 201},
        "control_title": {"title": "a\x1b[31mred"},
        "title_not_string": {"title": 5},
        "bad_free_key": {"x:": 1},
        "free_key_space": {"x:a b": 1},
        "too_big": {"x:big": "y" * 70000},
        "tags_not_list": {"tags": "a"},
        "too_many_tags": {"tags": [str(i) for i in range(40)]},
        "bad_tab": {"tab_id": ""},
        "unicode_key": {"tìtle": 1},
    }
    r["bad"] = {}
    for name, m in bad.items():
        a = await rpc.call("setmeta", {"block_id": editor, "meta": m})
        r["bad"][name] = {"code": code(a), "message": a.get("error", {}).get("message", "")}
    r["after_bad"] = await ok(rpc, "getmeta", {"block_id": editor})
    # Changes made at once all land: none is lost to another.
    await asyncio.gather(*[ok(rpc, "setmeta", {"block_id": browser, "meta": {f"x:n{i}": i}}) for i in range(30)])
    await asyncio.gather(*[ok(rpc, "setmeta", {"agent_id": "worker", "meta": {f"x:n{i}": i}}) for i in range(30)])
    r["concurrent_block"] = sorted(k for k in (await ok(rpc, "getmeta", {"block_id": browser}))["meta"] if k.startswith("x:n"))
    r["concurrent_agent"] = sorted(k for k in (await ok(rpc, "getmeta", {"agent_id": "worker"}))["meta"] if k.startswith("x:n"))
    r["set_agent"] = await ok(rpc, "setmeta", {"agent_id": "worker", "meta": {
        "description": "builds things", "x:k": {"a": 1}}})
    r["get_agent"] = await ok(rpc, "getmeta", {"agent_id": "Worker"})
    r["agent_read_only"] = code(await rpc.call("setmeta", {"agent_id": "worker", "meta": {"provider": "claude"}}))
    r["errors"] = {
        "unknown_agent": code(await rpc.call("getmeta", {"agent_id": "nobody"})),
        "unknown_block": code(await rpc.call("getmeta", {"block_id": "0190aaaa-0000-7000-8000-000000000000"})),
        "both": code(await rpc.call("getmeta", {"agent_id": "worker", "block_id": wb})),
        "neither": code(await rpc.call("getmeta", {})),
        "meta_not_object": code(await rpc.call("setmeta", {"block_id": wb, "meta": [1]})),
        "extra_field": code(await rpc.call("getmeta", {"block_id": wb, "x": 1})),
        "create_unknown_meta": code(await rpc.call("createblock", {"view": "help", "meta": {"owner": 1}})),
    }
    # Views.
    r["view_browser"] = await ok(rpc, "setview", {"block_id": editor, "view": "browser", "url": "http://127.0.0.1/x"})
    r["view_browser_meta"] = (await ok(rpc, "getmeta", {"block_id": editor}))["meta"]
    r["view_same"] = await ok(rpc, "setview", {"block_id": editor, "view": "browser", "url": "http://127.0.0.1/y"})
    r["view_errors"] = {
        "running_term": code(await rpc.call("setview", {"block_id": wb, "view": "editor", "file": args.file})),
        "bad_view": code(await rpc.call("setview", {"block_id": editor, "view": "Terminal"})),
        "editor_no_file": code(await rpc.call("setview", {"block_id": editor, "view": "editor"})),
        "to_term_without_program": code(await rpc.call("setview", {"block_id": browser, "view": "term"})),
        "url_with_editor": code(await rpc.call("setview", {"block_id": browser, "view": "editor", "file": args.file, "url": "http://x"})),
        "unknown_block": code(await rpc.call("setview", {"block_id": "0190aaaa-0000-7000-8000-000000000000", "view": "help"})),
    }
    sub = await ok(rpc, "eventsub", {"event": "sysinfo", "scopes": [f"block:{browser}"]})
    r["to_sysinfo"] = await ok(rpc, "setview", {"block_id": browser, "view": "sysinfo"})
    note = await rpc.wait_note(lambda n: n["method"] == "eventrecv" and n["params"]["type"] == "sysinfo", timeout=10)
    r["sysinfo_block"] = note["params"]["data"]["block_id"] if "data" in note["params"] else note["params"].get("block_id")
    r["to_help"] = await ok(rpc, "setview", {"block_id": browser, "view": "help"})
    r["help_meta"] = (await ok(rpc, "getmeta", {"block_id": browser}))["meta"]
    await ok(rpc, "eventunsub", {"sub_id": sub["sub_id"]})
    # Stopped, the terminal may show something else, and back.
    await ok(rpc, "agent.stop", {"agent_id": "worker", "force": True})
    r["stopped_to_editor"] = await ok(rpc, "setview", {"block_id": wb, "view": "editor", "file": args.file})
    r["back_to_term"] = await ok(rpc, "setview", {"block_id": wb, "view": "term"})
    await ws.close()
    # An agent token with the default scopes.
    ws, rpc = await connect(args, args.token)
    r["token"] = {
        "getmeta": code(await rpc.call("getmeta", {"block_id": wb})),
        "setmeta": code(await rpc.call("setmeta", {"block_id": wb, "meta": {"title": "x"}})),
        "setview": code(await rpc.call("setview", {"block_id": editor, "view": "help"})),
        "getfullconfig": code(await rpc.call("getfullconfig")),
        "getvar": code(await rpc.call("getvar", {"name": "mailbox.quota"})),
        "setvar": code(await rpc.call("setvar", {"name": "mailbox.quota", "value": 1})),
        "session:export": code(await rpc.call("session:export")),
        "session:digest": code(await rpc.call("session:digest")),
        "session:archive": code(await rpc.call("session:archive", {"name": "x"})),
        "session:restore": code(await rpc.call("session:restore", {"name": "x"})),
    }
    await ws.close()
    return r


async def config(args):
    ws, rpc = await connect(args)
    r = {}
    full = await ok(rpc, "getfullconfig")
    r["full_text"] = json.dumps(full)
    r["relay_token"] = full["config"]["relay"]["token"]
    r["all"] = await ok(rpc, "getvar")
    r["quota"] = await ok(rpc, "getvar", {"name": "mailbox.quota"})
    r["set"] = await ok(rpc, "setvar", {"name": "mailbox.max_body_bytes", "value": 64})
    r["after_set"] = await ok(rpc, "getvar", {"name": "mailbox.max_body_bytes"})
    r["set_quota"] = await ok(rpc, "setvar", {"name": "mailbox.quota", "value": 5})
    r["reset_quota"] = await ok(rpc, "setvar", {"name": "mailbox.quota", "value": None})
    r["full_live"] = (await ok(rpc, "getfullconfig"))["live_vars"]
    errs = {}
    for name, params in {
        "unknown": {"name": "daemon.listen", "value": "0.0.0.0:80"},
        "unknown_unicode": {"name": "mailbox.quotа", "value": 1},
        "not_number": {"name": "mailbox.quota", "value": "lots"},
        "negative": {"name": "mailbox.quota", "value": -1},
        "too_big": {"name": "jekt.idle_quiet_ms", "value": 10 ** 12},
        "float": {"name": "mailbox.quota", "value": 1.5},
        "object": {"name": "hold.ttl_s", "value": {"a": 1}},
        "no_value": {"name": "hold.ttl_s"},
        "getvar_unknown": None,
    }.items():
        if params is None:
            a = await rpc.call("getvar", {"name": "nope"})
        else:
            a = await rpc.call("setvar", params)
        errs[name] = {"code": code(a), "message": a.get("error", {}).get("message", "")}
    r["errors"] = errs
    await ws.close()
    return r


async def getvar(args):
    ws, rpc = await connect(args)
    r = await ok(rpc, "getvar", {"name": "mailbox.max_body_bytes"})
    await ws.close()
    return r


async def raw(args):
    ws, rpc = await connect(args)
    r = {}
    await ok(rpc, "agent.open", {"agent_id": "rawsh", "command": ["sh"]})
    r["typed"] = await ok(rpc, "agent.send", {"agent_id": "rawsh", "message": "echo raw-$((6*7))", "raw": True})
    r["lines"] = await wait_output(rpc, "rawsh", "raw-42")
    await ok(rpc, "agent.send", {"agent_id": "rawsh", "message": "echo part", "raw": True, "submit": False})
    await ok(rpc, "agent.send", {"agent_id": "rawsh", "message": "-two", "raw": True, "submit": False})
    await ok(rpc, "agent.send", {"agent_id": "rawsh", "message": "", "raw": True})
    r["lines2"] = await wait_output(rpc, "rawsh", "part-two")
    r["errors"] = {
        "raw_priority": code(await rpc.call("agent.send", {"agent_id": "rawsh", "message": "x", "raw": True, "priority": "urgent"})),
        "submit_without_raw": code(await rpc.call("agent.send", {"agent_id": "rawsh", "message": "x", "submit": True})),
        "raw_not_bool": code(await rpc.call("agent.send", {"agent_id": "rawsh", "message": "x", "raw": "yes"})),
        "raw_unknown": code(await rpc.call("agent.send", {"agent_id": "ghost", "message": "x", "raw": True})),
    }
    r["jekt"] = await ok(rpc, "agent.send", {"agent_id": "rawsh", "message": "a jekt still", "priority": "urgent"})
    await ws.close()
    for label, token in (("send_only", args.token), ("raw_scope", args.extra)):
        ws, rpc = await connect(args, token)
        a = await rpc.call("agent.send", {"agent_id": "rawsh", "message": f"echo {label}-$((2+3))", "raw": True})
        r[label] = {"code": code(a), "message": a.get("error", {}).get("message", "")}
        await ws.close()
    ws, rpc = await connect(args)
    r["raw_scope_lines"] = await wait_output(rpc, "rawsh", "raw_scope-5")
    r["final_lines"] = (await ok(rpc, "agent.output", {"agent_id": "rawsh", "lines": 100}))["lines"]
    await ws.close()
    return r


async def session_build(args):
    ws, rpc = await connect(args)
    r = {}
    a = await ok(rpc, "agent.open", {"agent_id": "alpha", "command": ["sh"], "tab_id": "main",
                                      "env": {"MY_VAR": args.secret}, "cwd": args.file})
    await ok(rpc, "agent.open", {"agent_id": "beta", "provider": "shell", "command": ["sh", "-c", "echo beta-up; exec sh"]})
    ed = (await ok(rpc, "createblock", {"view": "editor", "file": os.path.join(args.file, "notes.md"),
                                         "tab_id": "main", "meta": {"title": "Notes"}}))["block_id"]
    await ok(rpc, "createsubblock", {"block_id": ed, "view": "help", "meta": {"x:role": "docs"}})
    await ok(rpc, "createblock", {"view": "sysinfo", "tab_id": "ops"})
    await ok(rpc, "createblock", {"view": "term", "command": ["sh"], "tab_id": "ops", "rows": 30, "cols": 100})
    await ok(rpc, "setmeta", {"agent_id": "alpha", "meta": {"description": "the lead", "tags": ["x"]}})
    await ok(rpc, "setmeta", {"block_id": a["block_id"], "meta": {"title": "Alpha's pane"}})
    await wait_output(rpc, "beta", "beta-up")
    await ok(rpc, "agent.send", {"agent_id": "alpha", "message": "echo scrolled-$((40+2))", "raw": True})
    await wait_output(rpc, "alpha", "scrolled-42")
    r["export"] = await ok(rpc, "session:export")
    d1 = await ok(rpc, "session:digest", {"canonical": True})
    d2 = await ok(rpc, "session:digest")
    r["digest"] = d1["digest"]
    r["canonical"] = d1["canonical"]
    r["digest_again"] = d2["digest"]
    # A change changes the digest; undoing it brings the digest back.
    await ok(rpc, "setmeta", {"agent_id": "beta", "meta": {"x:temp": 1}})
    r["digest_changed"] = (await ok(rpc, "session:digest"))["digest"]
    await ok(rpc, "setmeta", {"agent_id": "beta", "meta": {"x:temp": None}})
    r["digest_back"] = (await ok(rpc, "session:digest"))["digest"]
    r["archive"] = await ok(rpc, "session:archive", {"name": "snap", "include_mail": True, "scrollback_lines": 200,
                                                     "return_bundle": True})
    r["errors"] = {
        "exists": code(await rpc.call("session:archive", {"name": "snap"})),
        "bad_name": code(await rpc.call("session:archive", {"name": "../escape"})),
        "dot_name": code(await rpc.call("session:archive", {"name": ".hidden"})),
        "too_much_scrollback": code(await rpc.call("session:archive", {"name": "s2", "scrollback_lines": 10 ** 7})),
        "restore_not_fresh": code(await rpc.call("session:restore", {"name": "snap"})),
    }
    r["overwrite"] = await ok(rpc, "session:archive", {"name": "snap", "include_mail": True, "overwrite": True})
    await ws.close()
    return r


async def session_restore(args):
    ws, rpc = await connect(args)
    r = {}
    r["errors"] = {
        "missing": code(await rpc.call("session:restore", {"name": "nothing-here"})),
        "bad_format": code(await rpc.call("session:restore", {"bundle": {"format": "x", "version": 1}})),
        "bad_version": code(await rpc.call("session:restore", {"bundle": {"format": "agentbus.session.archive", "version": 99}})),
        "malformed": code(await rpc.call("session:restore", {"bundle": {"format": "agentbus.session.archive", "version": 1, "export": 5}})),
        "both": code(await rpc.call("session:restore", {"name": "snap", "bundle": {}})),
        "neither": code(await rpc.call("session:restore", {})),
        "bad_name": code(await rpc.call("session:restore", {"name": "../../etc/passwd"})),
    }
    r["restored"] = await ok(rpc, "session:restore", {"name": "snap", "env": {"alpha": {"MY_VAR": args.secret}}})
    r["digest"] = (await ok(rpc, "session:digest", {"canonical": True}))
    r["again"] = code(await rpc.call("session:restore", {"name": "snap"}))
    r["agents"] = (await ok(rpc, "agent.list"))["agents"]
    await ok(rpc, "agent.send", {"agent_id": "alpha", "message": "echo restored-$MY_VAR-ok", "raw": True})
    r["alpha_lines"] = await wait_output(rpc, "alpha", f"restored-{args.secret}-ok")
    r["alpha_meta"] = await ok(rpc, "getmeta", {"agent_id": "alpha"})
    await ws.close()
    return r


async def stalled(args):
    """A client that asks for big answers and then never reads: at most one
    frame is buffered on this side, so the daemon's writes stall."""
    headers = {"Authorization": "Bearer " + args.key}
    ws = await websockets.connect(ws_url(args.url), additional_headers=headers, max_size=None, max_queue=1)
    for i in range(40):
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "fileread",
                                  "params": {"root": "big", "path": "big.bin", "encoding": "base64"}}))
    print(json.dumps({"sent": 40}), flush=True)
    await asyncio.sleep(args.hold)
    return {"held_s": args.hold}


async def limits(args):
    ws, rpc = await connect(args)
    r = {}
    codes = []
    for _ in range(260):
        codes.append(code(await rpc.call("eventsub", {"event": "x", "scopes": ["team"]})))
    r["subs_ok"] = codes.count("ok")
    r["subs_refused"] = sorted(set(c for c in codes if c != "ok"))
    await ok(rpc, "eventunsuball")
    r["after_unsub"] = code(await rpc.call("eventsub", {"event": "x", "scopes": ["team"]}))
    # Settings that do not fit together are refused, and nothing changes.
    a = await rpc.call("setvar", {"name": "mailbox.default_ttl_s", "value": 3000000})
    r["ttl_over_max"] = {"code": code(a), "message": a.get("error", {}).get("message", "")}
    r["ttl_after"] = (await ok(rpc, "getvar", {"name": "mailbox.default_ttl_s"}))["set"]
    await ws.close()
    return r


if __name__ == "__main__":
    run_scenarios(
        {"meta": meta, "config": config, "getvar": getvar, "raw": raw,
         "session_build": session_build, "session_restore": session_restore,
         "stalled": stalled, "limits": limits},
        ("--file", {}), ("--secret", {"default": ""}), ("--hold", {"type": float, "default": 20}),
    )
