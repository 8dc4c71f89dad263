"""Drives agentbus's App API (/ws, JSON-RPC 2.0) with the `websockets`
package, as any third-party client would. One scenario per run; prints a
JSON report as its last line for the Rust test to check.

    app_api.py <scenario> --url http://127.0.0.1:PORT --key KEY [...]
"""

import argparse
import asyncio
import base64
import json
import os

import websockets


class Rpc:
    """A JSON-RPC connection: calls by id, notifications kept in order."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.notes = []
        self.waiting = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                items = msg if isinstance(msg, list) else [msg]
                if isinstance(msg, list):
                    fut = self.waiting.pop("batch", None)
                    if fut:
                        fut.set_result(msg)
                        continue
                for m in items:
                    if "method" in m:
                        self.notes.append(m)
                    else:
                        fut = self.waiting.pop(m.get("id"), None)
                        if fut:
                            fut.set_result(m)
                        else:
                            self.notes.append(m)
        except websockets.ConnectionClosed:
            pass

    async def call(self, method, params=None, timeout=30):
        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        frame = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        await self.ws.send(json.dumps(frame))
        return await asyncio.wait_for(fut, timeout)

    async def raw(self, text, batch=False, timeout=10):
        """Sends text; the next answer that is not for a pending call."""
        before = len(self.notes)
        fut = None
        if batch:
            fut = asyncio.get_running_loop().create_future()
            self.waiting["batch"] = fut
        await self.ws.send(text)
        if fut:
            return await asyncio.wait_for(fut, timeout)
        for _ in range(timeout * 100):
            if len(self.notes) > before:
                return self.notes.pop(before)
            await asyncio.sleep(0.01)
        raise TimeoutError("no answer to " + text[:80])

    async def wait_note(self, pred, timeout=20):
        for _ in range(int(timeout * 100)):
            for n in self.notes:
                if pred(n):
                    return n
            await asyncio.sleep(0.01)
        raise TimeoutError("notification not seen; have " + json.dumps(self.notes)[:2000])


def ws_url(url):
    return url.replace("http://", "ws://", 1) + "/ws"


def code(answer):
    """The error's data.code, or its numeric code, or 'ok'."""
    e = answer.get("error")
    if not e:
        return "ok"
    return (e.get("data") or {}).get("code") or e["code"]


async def connect(args, token=None):
    headers = {"Authorization": "Bearer " + (token or args.key)}
    ws = await websockets.connect(ws_url(args.url), additional_headers=headers, max_size=None)
    return ws, Rpc(ws)


async def e2e(args):
    ws, rpc = await connect(args)
    report = {}
    first = await rpc.call("agent.open", {"agent_id": "worker", "command": ["sh"], "tab_id": "t1"})
    again = await rpc.call("agent.open", {"agent_id": "worker", "command": ["sh"]})
    report["open"] = first["result"]
    report["reopen"] = again["result"]
    block = first["result"]["block_id"]
    sub = await rpc.call("eventsub", {"event": "*", "scopes": ["agent:worker"]})
    report["sub"] = sub["result"]
    sent = await rpc.call("agent.send", {"agent_id": "worker", "message": "hello from a websocket"})
    report["send"] = sent["result"]
    await rpc.wait_note(lambda n: n["method"] == "eventrecv" and n["params"]["type"] == "jekt:delivered")
    # Follow the output while typing into the pane.
    follow = asyncio.ensure_future(
        rpc.call("agent.output", {"agent_id": "worker", "lines": 5, "follow": True, "follow_s": 30}, timeout=40)
    )
    await asyncio.sleep(0.3)
    typed = await rpc.call("controllerinput", {"block_id": block, "data": "echo follow-$((6*7))\r"})
    report["typed"] = typed["result"]["wrote"]
    await rpc.wait_note(
        lambda n: n["method"] == "stream" and any("follow-42" == l for l in n["params"]["data"]["lines"])
    )
    stopped = await rpc.call("agent.stop", {"agent_id": "worker"})
    report["stop"] = stopped["result"]
    ended = await follow
    report["follow_end"] = ended["result"]
    report["stream_ids"] = sorted({n["params"]["id"] for n in rpc.notes if n["method"] == "stream"})
    report["stream_seqs"] = [n["params"]["seq"] for n in rpc.notes if n["method"] == "stream"]
    report["streamed"] = [l for n in rpc.notes if n["method"] == "stream" for l in n["params"]["data"]["lines"]]
    await rpc.wait_note(lambda n: n["method"] == "eventrecv" and n["params"]["type"] == "block:exited")
    report["events"] = [n["params"]["type"] for n in rpc.notes if n["method"] == "eventrecv"]
    report["event_sub_ids"] = sorted({n["params"]["sub_id"] for n in rpc.notes if n["method"] == "eventrecv"})
    report["status"] = (await rpc.call("agent.status", {"agent_id": "worker"}))["result"]
    report["blocks"] = (await rpc.call("blockslist", {"tab_id": "t1"}))["result"]
    await ws.close()
    return report


async def protocol(args):
    ws = await websockets.connect(ws_url(args.url), max_size=None)
    rpc = Rpc(ws)
    r = {}
    r["before_auth"] = code(await rpc.call("agent.list"))
    r["bad_token"] = code(await rpc.call("authenticate", {"token": "abt_wrong"}))
    r["auth"] = (await rpc.call("authenticate", {"token": args.key}))["result"]
    r["parse"] = await rpc.raw("{not json")
    r["not_2_0"] = await rpc.raw(json.dumps({"jsonrpc": "1.0", "id": 1, "method": "agent.list"}))
    r["no_method"] = await rpc.call("no.such.method")
    r["bad_params"] = await rpc.call("agent.kill-process", {"pid": "x"})
    r["unknown_field"] = await rpc.call("agent.list", {"surprise": 1})
    r["bad_agent"] = await rpc.call("agent.status", {"agent_id": "no such"})
    r["missing_agent"] = await rpc.call("agent.status", {"agent_id": "ghost"})
    r["empty_batch"] = await rpc.raw("[]")
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "agent.list"},
        {"jsonrpc": "2.0", "method": "eventpublish", "params": {"event": "note", "scopes": ["x"]}},
        {"jsonrpc": "2.0", "id": "c", "method": "nope"},
        42,
        {"jsonrpc": "2.0", "id": "e", "method": "pane.open", "params": {"view": "browser"}},
    ]
    r["batch"] = await rpc.raw(json.dumps(batch), batch=True)
    # A notification gets no answer: the next answer is for the next call.
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "agent.list"}))
    after = await rpc.call("eventsub", {"event": "x", "scopes": ["y"]})
    r["after_notification"] = after["id"] == rpc.next_id and "result" in after
    r["views"] = {
        v: code(await rpc.call("pane.open", p))
        for v, p in {
            "editor_missing": {"view": "editor"},
            "editor": {"view": "editor", "file": __file__},
            "browser_bad": {"view": "browser", "url": "javascript:alert(1)"},
            "browser": {"view": "browser", "url": "http://127.0.0.1:9/"},
            "help": {"view": "help"},
            "nope": {"view": "spreadsheet"},
        }.items()
    }
    await ws.close()
    return r


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def lag(args):
    """One connection subscribes and never reads; another floods events."""
    slow_ws, slow = await connect(args)
    sub = await slow.call("eventsub", {"event": "flood", "scopes": ["flood"]})
    slow.reader.cancel()  # from here on nothing reads this socket
    pub_ws, pub = await connect(args)
    data = {"blob": "x" * args.size}
    before = rss_kb(args.pid)
    peak = before
    for i in range(args.count):
        await pub.call("eventpublish", {"event": "flood", "scopes": ["flood"], "data": dict(data, i=i)})
        if i % 200 == 0:
            peak = max(peak, rss_kb(args.pid))
    peak = max(peak, rss_kb(args.pid))
    # Now read what the slow socket was given.
    got, lagged, missed = 0, 0, 0
    try:
        while True:
            raw = await asyncio.wait_for(slow_ws.recv(), 3)
            m = json.loads(raw)
            if m.get("method") == "eventrecv":
                got += 1
            elif m.get("method") == "lagged":
                lagged += 1
                missed += m["params"]["missed"]
    except (asyncio.TimeoutError, websockets.ConnectionClosed):
        pass
    await slow_ws.close()
    await pub_ws.close()
    return {"sub": sub["result"], "published": args.count, "received": got, "lagged_notices": lagged,
            "missed": missed, "rss_before_kb": before, "rss_peak_kb": peak}


async def hold_open(args):
    """Subscribes three times, reports, then drops the connection."""
    ws, rpc = await connect(args)
    ids = [(await rpc.call("eventsub", {"event": "*", "allscopes": True}))["result"]["sub_id"] for _ in range(3)]
    print(json.dumps({"subscribed": ids}), flush=True)
    await asyncio.sleep(args.hold)
    await ws.close()
    return {"closed": True}


async def scopes(args):
    ws, own = await connect(args, args.token)
    r = {}
    other_block = args.other_block
    r["own"] = {
        "agent.list": code(await own.call("agent.list")),
        "agent.output self": code(await own.call("agent.output", {"lines": 3})),
        "agent.output other": await own.call("agent.output", {"agent_id": "other"}),
        "agent.stop other": await own.call("agent.stop", {"agent_id": "other"}),
        "pane.open": await own.call("pane.open", {"view": "help"}),
        "createblock": code(await own.call("createblock", {"view": "help"})),
        "controllerinput": code(await own.call("controllerinput", {"block_id": args.own_block, "data": "x"})),
        "eventsub": code(await own.call("eventsub", {"event": "*", "scopes": ["agent:worker"]})),
        "eventpublish": code(await own.call("eventpublish", {"event": "ping", "scopes": ["team-a"]})),
    }
    await ws.close()
    ws, extra = await connect(args, args.extra)
    r["extra"] = {
        "controllerinput own": code(await extra.call("controllerinput", {"block_id": args.own_block, "data": "\r"})),
        "controllerinput other": await extra.call("controllerinput", {"block_id": other_block, "data": "\r"}),
        "createblock": code(await extra.call("createblock", {"view": "help"})),
        "eventsub team": code(await extra.call("eventsub", {"event": "*", "scopes": ["team-a"]})),
        "eventsub other agent": code(await extra.call("eventsub", {"event": "*", "scopes": ["agent:other"]})),
        "eventsub all": code(await extra.call("eventsub", {"event": "*", "allscopes": True})),
        "agent.list": code(await extra.call("agent.list")),
        "pane.open": code(await extra.call("pane.open", {"view": "help"})),
    }
    # Burst past the rate limit.
    answers = await asyncio.gather(*[extra.call("blockslist") for _ in range(args.burst)])
    limited = [a for a in answers if code(a) == "RATE_LIMITED"]
    r["burst"] = {"calls": len(answers), "limited": len(limited),
                  "retry_after_s": limited[0]["error"]["data"].get("retry_after_s") if limited else None}
    await ws.close()
    return r


async def blocks(args):
    ws, rpc = await connect(args)
    r = {}
    term = (await rpc.call("createblock", {"view": "term", "command": ["cat"], "tab_id": "t9"}))["result"]
    sub = (await rpc.call("createsubblock", {"block_id": term["block_id"], "view": "help"}))["result"]
    r["sub_parent"] = sub["parent_id"] == term["block_id"]
    info = (await rpc.call("blockinfo", {"block_id": term["block_id"]}))["result"]
    r["info_subblocks"] = info["subblocks"] == [sub["block_id"]]
    r["info_running"] = info["controller"]["running"]
    r["not_sub"] = code(await rpc.call("deletesubblock", {"block_id": term["block_id"]}))
    await rpc.call("controllerinput", {"block_id": term["block_id"], "data": "line-one\r"})
    for _ in range(100):
        res = (await rpc.call("controllerresync", {"block_id": term["block_id"]}))["result"]
        if "line-one" in res["lines"]:
            break
        await asyncio.sleep(0.02)
    r["resync_lines"] = "line-one" in res["lines"]
    before = term["pid"]
    r["restart"] = (await rpc.call("controllerrestart", {"block_id": term["block_id"]}))["result"]
    r["restart_new_pid"] = r["restart"]["pid"] not in (None, before)
    r["stop"] = (await rpc.call("controllerstop", {"block_id": term["block_id"]}))["result"]
    r["input_after_stop"] = code(await rpc.call("controllerinput", {"block_id": term["block_id"], "data": "x"}))
    r["resync_restart"] = (await rpc.call("controllerresync", {"block_id": term["block_id"], "restart": True}))["result"]["running"]
    r["del_sub"] = (await rpc.call("deletesubblock", {"block_id": sub["block_id"]}))["result"]
    r["del"] = (await rpc.call("deleteblock", {"block_id": term["block_id"]}))["result"]
    r["after_delete"] = code(await rpc.call("blockinfo", {"block_id": term["block_id"]}))
    r["listed_after"] = (await rpc.call("blockslist", {"tab_id": "t9"}))["result"]["blocks"]
    # Pull subscription, history, unsubscribe.
    pull = (await rpc.call("eventsub", {"event": "tick", "scopes": ["lab"], "mode": "pull"}))["result"]["sub_id"]
    push = (await rpc.call("eventsub", {"event": "tick", "scopes": ["lab"]}))["result"]["sub_id"]
    for i in range(3):
        await rpc.call("eventpublish", {"event": "tick", "scopes": ["lab"], "data": {"i": i}, "persist": 10})
    got = (await rpc.call("eventrecv", {"sub_id": pull, "max": 10, "wait_ms": 2000}))["result"]
    r["pulled"] = [e["data"]["i"] for e in got["events"]]
    r["recv_push"] = code(await rpc.call("eventrecv", {"sub_id": push}))
    hist = (await rpc.call("eventreadhistory", {"event": "tick", "scope": "lab", "maxitems": 2}))["result"]
    r["history"] = [e["data"]["i"] for e in hist["events"]]
    r["unsub"] = (await rpc.call("eventunsub", {"sub_id": push}))["result"]["removed"]
    r["unsub_again"] = code(await rpc.call("eventunsub", {"sub_id": push}))
    r["unsuball"] = (await rpc.call("eventunsuball", {}))["result"]["removed"]
    await ws.close()
    return r



# Methods that act on an agent or a block, with the named params that
# complete a call to them.
TARGETED = {
    "agent.send": {"message": "pwned"},
    "agent.stop": {"force": True},
    "agent.status": {},
    "agent.output": {"lines": 5},
    "agent.process-list": {},
    "agent.kill-tree": {"grace_ms": 0},
    "agent.kill-process": {"pid": 1},
    "controllerinput": {"data": "pwned\r"},
    "controllerresync": {},
    "controllerrestart": {},
    "controllerstop": {"force": True},
    "blockinfo": {},
    "deleteblock": {},
    "eventreadhistory": {"event": "*"},
}


def case_variants(name):
    """Every upper/lower spelling of `name` (at most 64)."""
    out = {""}
    for ch in name:
        out = {v + c for v in out for c in {ch.lower(), ch.upper()}}
        if len(out) > 64:
            break
    return sorted(out)


async def hostile(args):
    """An agent token tries to reach another agent through every shape of
    params: positional arrays of every order, and every case spelling of
    the victim's name. Reports each call that was not refused."""
    import itertools
    ws, rpc = await connect(args, args.token)
    candidates = [args.victim, args.victim_block, "pwned\r", True, 0,
                  {"rows": 5, "cols": 5}, None, "agent:" + args.victim]
    succeeded, codes, calls = [], {}, 0

    async def attempt(method, params):
        nonlocal calls
        calls += 1
        a = await rpc.call(method, params)
        c = code(a)
        codes[str(c)] = codes.get(str(c), 0) + 1
        if c == "ok":
            succeeded.append({"method": method, "params": params, "answer": a})
        return c

    positional = {}
    for method in TARGETED:
        for n in (1, 2, 3):
            for combo in itertools.product(candidates, repeat=n):
                c = await attempt(method, list(combo))
                positional[str(c)] = positional.get(str(c), 0) + 1
    named = {}
    for method, extra in TARGETED.items():
        keys = ["block_id"] if method.startswith(("controller", "block", "delete")) else ["agent_id"]
        if method == "eventreadhistory":
            keys = ["scope"]
        for variant in case_variants(args.victim) + [args.victim_block]:
            for key in keys:
                # Event scopes match as written: only the exact one is bob's.
                value = "agent:" + args.victim.lower() if key == "scope" else variant
                c = await attempt(method, dict(extra, **{key: value}))
                named[str(c)] = named.get(str(c), 0) + 1
    # Params in other JSON shapes: a nested object, a string, a number
    # (the framing refuses these), and duplicate keys (the last wins in
    # both the check and the call: they are one parsed value).
    raw = []
    for body in ['"bob"', '7', 'null', 'true', '{"agent_id":"%s","agent_id":"%s"}' % (args.victim, args.victim)]:
        a = await rpc.raw('{"jsonrpc":"2.0","id":"r%d","method":"agent.output","params":%s}' % (len(raw), body))
        raw.append(code(a))
        if code(a) == "ok":
            succeeded.append({"method": "agent.output", "params": body, "answer": a})
    await ws.close()
    return {"calls": calls, "succeeded": succeeded, "codes": codes,
            "positional": positional, "named": named, "raw": raw}


async def batches(args):
    """Batch frames: the size cap, and an agent token's rate counted per
    frame as a whole."""
    r = {}

    def frame(n, method="agent.list"):
        return json.dumps([{"jsonrpc": "2.0", "id": i, "method": method} for i in range(n)])

    ws, admin = await connect(args)
    r["admin_too_large"] = await admin.raw(frame(args.burst + 1))
    big = await admin.raw(frame(args.burst), batch=True)
    r["admin_at_cap"] = sorted({code(a) for a in big})
    await ws.close()
    ws, agent = await connect(args, args.token)
    first = await agent.raw(frame(args.burst), batch=True)
    r["agent_first"] = sorted({code(a) for a in first})
    second = await agent.raw(frame(args.burst), batch=True)
    r["agent_second"] = sorted({code(a) for a in second})
    await ws.close()
    return r

def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


async def procs(args):
    ws, rpc = await connect(args)
    r = {}
    block = args.block

    async def listing():
        res = await rpc.call("agent.process-list", {"block_id": block})
        return res["result"]

    async def type_line(line):
        await rpc.call("controllerinput", {"block_id": block, "data": line + "\r"})

    async def find(pred, timeout=10):
        for _ in range(timeout * 20):
            lst = await listing()
            hit = [p for p in lst["processes"] if pred(p)]
            if hit:
                return lst, hit[0]
            await asyncio.sleep(0.05)
        raise TimeoutError("process not found: " + json.dumps(lst))

    # A grandchild: the shell starts `sh -c "sleep 300; :"`, which starts sleep.
    await type_line("sh -c 'sleep 300; :' &")
    lst, grandchild = await find(lambda p: p["cmdline"] == "sleep 300")
    r["confidence"] = lst["confidence"]
    pids = {p["pid"]: p for p in lst["processes"]}
    parent = pids.get(grandchild["ppid"])
    r["grandchild_parent"] = parent["cmdline"] if parent else None
    r["outside"] = await rpc.call("agent.kill-process", {"block_id": block, "pid": os.getpid()})
    await type_line("sleep 301 &")
    _, victim = await find(lambda p: p["cmdline"] == "sleep 301")
    r["stale_start_time"] = await rpc.call(
        "agent.kill-process", {"block_id": block, "pid": victim["pid"], "start_time": victim["start_time"] + 1})
    r["killed"] = await rpc.call(
        "agent.kill-process", {"block_id": block, "pid": victim["pid"], "start_time": victim["start_time"], "signal": "KILL"})
    for _ in range(100):
        if proc_state(victim["pid"]) in ("gone", "Z"):
            break
        await asyncio.sleep(0.02)
    # Make the kernel hand the same pid to a new process in the block
    # (root can steer the next pid); the tracker saw the old one.
    r["real_reuse"] = False
    try:
        for _ in range(8):
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(victim["pid"] - 1))
            await type_line("sleep 302 &")
            _, newer = await find(lambda p: p["cmdline"] == "sleep 302")
            if newer["pid"] == victim["pid"]:
                r["real_reuse"] = True
                r["reused"] = await rpc.call("agent.kill-process", {"block_id": block, "pid": newer["pid"]})
                break
            await rpc.call("agent.kill-process", {"block_id": block, "pid": newer["pid"], "signal": "KILL"})
            await asyncio.sleep(0.05)
    except OSError:
        pass
    if not r["real_reuse"]:
        r["reused"] = await rpc.call("agent.kill-process", {"block_id": block, "pid": victim["pid"]})
    tracked = await rpc.call("agent.tracked-blocks")
    r["tracked"] = [b for b in tracked["result"]["blocks"] if b["block_id"] == block]
    r["kill_tree"] = (await rpc.call("agent.kill-tree", {"block_id": block, "grace_ms": 500}, timeout=30))["result"]
    r["grandchild_after"] = proc_state(grandchild["pid"])
    await ws.close()
    return r


def run_scenarios(scenarios, *options):
    """Runs the scenario named on the command line, with the options every
    scenario script takes (--url, --key, --token, --extra) and `options`
    ((flag, argparse keywords) pairs), and prints its report, if it returns
    one, as the last line."""
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(scenarios))
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--token")
    p.add_argument("--extra")
    for flag, kw in options:
        p.add_argument(flag, **kw)
    args = p.parse_args()
    report = asyncio.run(scenarios[args.scenario](args))
    if report is not None:
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    run_scenarios(
        {"e2e": e2e, "protocol": protocol, "lag": lag, "hold_open": hold_open,
         "scopes": scopes, "procs": procs, "blocks": blocks,
         "hostile": hostile, "batches": batches},
        ("--own-block", {}), ("--other-block", {}), ("--block", {}),
        ("--pid", {"type": int}), ("--count", {"type": int, "default": 2000}),
        ("--size", {"type": int, "default": 16000}), ("--burst", {"type": int, "default": 60}),
        ("--hold", {"type": float, "default": 1.0}), ("--victim", {}), ("--victim-block", {}),
    )
