"""Drives the App API's conn* methods (ssh connections, panes on a host,
AWS profiles) over /ws with the `websockets` package, against a real sshd
the Rust test started. One scenario per run; the JSON report is the last
line printed.

    app_api_conn.py <scenario> --url URL --key KEY [--host H] [--data-dir D] ...
"""

import asyncio
import json
import os
import time

from app_api import code, connect, run_scenarios


def err(answer):
    """The error's numeric code and data.code, or None for a result."""
    e = answer.get("error")
    if not e:
        return None
    return {"code": e["code"], "name": (e.get("data") or {}).get("code"), "message": e["message"]}


def masters(data_dir):
    """Pids of ssh masters whose control socket is in this daemon's data
    dir: `ssh -M ... -S <socket>`, or as some builds retitle it, "ssh:
    <socket> [mux]"."""
    found = []
    conn_dir = os.path.join(data_dir, "conn") + "/"
    # ssh is given the path with each % doubled (it expands % tokens).
    written = conn_dir.replace("%", "%%")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (conn_dir in cmd or written in cmd) and ("[mux]" in cmd or " -M " in " " + cmd + " "):
            found.append(int(pid))
    return sorted(found)


async def output_until(rpc, params, needle, timeout=20):
    """The pane's last lines, once one of them holds `needle`."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        out = await rpc.call("agent.output", dict(params, lines=200))
        lines = out.get("result", {}).get("lines", [])
        if any(needle in line for line in lines):
            return lines
        await asyncio.sleep(0.1)
    return lines


HOSTILE_WORDS = [
    "it's", "'", "$(touch {marker})", "`touch {marker}`", "; touch {marker}",
    "&& touch {marker}", "$HOME", "*", "\\", '"', "", "-n", "caf\u00e9 \u00fc",
]


async def lifecycle(args):
    ws, rpc = await connect(args)
    r = {}
    host = args.host
    r["list_before"] = (await rpc.call("connlist"))["result"]
    t = time.monotonic()
    r["connect"] = await rpc.call("connconnect", {"host": host})
    r["connect_s"] = time.monotonic() - t
    r["status"] = await rpc.call("connstatus", {"host": host})
    r["masters_after_connect"] = masters(args.data_dir)
    r["ensure1"] = await rpc.call("connensure", {"host": host})
    r["ensure2"] = await rpc.call("connensure", {"host": host})
    r["masters_after_ensure"] = masters(args.data_dir)
    r["connect_again"] = err(await rpc.call("connconnect", {"host": host}))
    r["list"] = (await rpc.call("connlist"))["result"]
    r["status_all"] = (await rpc.call("connstatus"))["result"]

    # An agent on the host: it prints what only the remote side has, and
    # whether anything of the daemon's reached it, then echoes its input.
    script = (
        'echo "conn=[$SSH_CONNECTION]"; '
        'echo "daemon_vars=$(env | grep -c \'^AGENTBUS_\')"; '
        'echo "given=[$GIVEN_VAR]"; echo "cwd=[$(pwd)]"; exec cat'
    )
    opened = await rpc.call("agent.open", {
        "agent_id": "remote-worker", "conn": host, "provider": "generic",
        "command": ["sh", "-c", script], "env": {"GIVEN_VAR": "it's $(x)"}, "cwd": "/tmp",
    })
    r["open"] = opened
    lines = await output_until(rpc, {"agent_id": "remote-worker"}, "cwd=[")
    r["remote_lines"] = lines
    r["info"] = (await rpc.call("blockinfo", {"block_id": opened["result"]["block_id"]})).get("result")
    sent = await rpc.call("agent.send", {"agent_id": "remote-worker", "message": "jekt-over-ssh-7731"})
    r["send"] = sent
    r["after_send"] = await output_until(rpc, {"agent_id": "remote-worker"}, "jekt-over-ssh-7731")
    # What reads that terminal on the far side cannot be seen from here: an
    # agent token may not jekt it (it may be a shell), the admin may.
    if args.token:
        ws2, rpc2 = await connect(args, args.token)
        peer = await rpc2.call("agent.send", {"agent_id": "remote-worker", "message": "touch /tmp/x"})
        r["peer_send"] = {"code": code(peer), "message": peer.get("error", {}).get("message", "")}
        await ws2.close()

    # A term block on the host: hostile words reach the program unchanged.
    words = [w.replace("{marker}", args.marker) for w in HOSTILE_WORDS]
    term = await rpc.call("pane.open", {
        "view": "term", "conn": host,
        "command": ["sh", "-c", 'for w in "$@"; do printf "<%s>\\n" "$w"; done; echo words-done; exec sleep 60', "sh"] + words,
    })
    r["term"] = term
    block = term["result"]["block_id"]
    r["term_lines"] = await output_until(rpc, {"block_id": block}, "words-done")
    r["words"] = words
    # A restart runs the same command on the host again, in a new screen.
    r["restart"] = await rpc.call("controllerrestart", {"block_id": block})
    r["restart_lines"] = await output_until(rpc, {"block_id": block}, "words-done")
    # The pane's program runs through the master: no second master.
    r["masters_with_panes"] = masters(args.data_dir)

    r["disconnect"] = await rpc.call("conndisconnect", {"host": host})
    master = r["status"]["result"]["connections"][0]["master_pid"]
    r["master_alive_after"] = os.path.exists(f"/proc/{master}")
    r["masters_after_disconnect"] = masters(args.data_dir)
    r["status_after"] = await rpc.call("connstatus", {"host": host})
    r["disconnect_again"] = await rpc.call("conndisconnect", {"host": host})
    r["open_disconnected"] = err(await rpc.call("agent.open", {
        "agent_id": "late", "conn": host, "command": ["true"]}))
    r["pane_disconnected"] = err(await rpc.call("pane.open", {"view": "term", "conn": host}))
    r["restart_disconnected"] = err(await rpc.call("controllerrestart", {"block_id": block}))
    # The pane that ran through the master ended with it.
    for _ in range(100):
        st = await rpc.call("agent.status", {"agent_id": "remote-worker"})
        if st["result"]["state"] != "running":
            break
        await asyncio.sleep(0.1)
    r["worker_after"] = st["result"]["state"]
    await ws.close()
    return r


async def refused(args):
    ws, rpc = await connect(args)
    r = {}
    t = time.monotonic()
    r["connect"] = err(await rpc.call("connconnect", {"host": args.host}))
    r["connect_s"] = time.monotonic() - t
    r["ensure"] = err(await rpc.call("connensure", {"host": args.host, "port": args.port}))
    r["status"] = (await rpc.call("connstatus", {"host": args.host}))["result"]
    r["list"] = (await rpc.call("connlist"))["result"]
    for h in ["strangerhost", "nokeyhost"]:
        t = time.monotonic()
        e = err(await rpc.call("connconnect", {"host": h}))
        r[h] = {"error": e, "s": time.monotonic() - t}
    await ws.close()
    return r


def hostile_hosts(marker):
    return [
        f"-oProxyCommand=touch {marker}",
        f"-oProxyCommand=sh -c 'touch {marker}'",
        "-oLocalCommand=id",
        f"testhost -oProxyCommand=touch {marker}",
        f"user@-oProxyCommand=touch {marker}",
        "-l root", "-F/etc/passwd", "a b", " testhost", "testhost\n", "tab\there",
        f"host;touch {marker}", f"$(touch {marker})", f"`touch {marker}`", "host|id", "host&",
        "%h", "a%rb", "%%", "h\u00e9te", "\uff54esthost", "test\u200bhost", "host\u0000x",
        "\u202etsohtset", "", "@", "user@", "@host", "a@b@c", "a" * 300,
        ("a" * 70) + ".b", "::1", "[::1", "[::1]:22", "[fe80::1%lo]", "testhost:22",
        "ho/st", "../x", "host.", ".host", "-host", "ssh://testhost",
        5, True, ["testhost"], {"host": "testhost"},
    ]


async def hostile(args):
    ws, rpc = await connect(args)
    r = {"answers": [], "ports": [], "extra": []}
    calls = [
        ("connconnect", lambda h: {"host": h}),
        ("connensure", lambda h: {"host": h}),
        ("conndisconnect", lambda h: {"host": h}),
        ("connstatus", lambda h: {"host": h}),
        ("agent.open", lambda h: {"agent_id": "h1", "conn": h, "command": ["true"]}),
        ("pane.open", lambda h: {"view": "term", "conn": h, "command": ["true"]}),
    ]
    for h in hostile_hosts(args.marker):
        for method, params in calls:
            a = await rpc.call(method, params(h))
            r["answers"].append({"method": method, "host": repr(h), "error": err(a)})
    for port in [0, -1, 65536, 70000, "22", 22.5, True, [22], {"p": 22}]:
        a = await rpc.call("connconnect", {"host": "testhost", "port": port})
        r["ports"].append({"port": repr(port), "error": err(a)})
    for params in [
        {"host": "testhost", "options": f"-oProxyCommand=touch {args.marker}"},
        {"host": "testhost", "ssh_args": ["-oProxyCommand=x"]},
        {"port": 22},
        {"host": None},
        {},
    ]:
        a = await rpc.call("connconnect", params)
        r["extra"].append({"params": params, "error": err(a)})
    a = await rpc.call("connstatus", {"port": 22})
    r["extra"].append({"params": {"port": 22}, "method": "connstatus", "error": err(a)})
    a = await rpc.call("pane.open", {"view": "editor", "file": "/tmp/x", "conn": "testhost"})
    r["editor_conn"] = err(a)
    a = await rpc.call("agent.open", {"agent_id": "h2", "conn_port": 22, "command": ["true"]})
    r["port_without_conn"] = err(a)
    a = await rpc.call("connconnect", ["testhost"])
    r["positional"] = err(a)
    # The daemon is still there and knows no connection from any of it.
    r["list"] = (await rpc.call("connlist"))["result"]
    await ws.close()
    return r


async def scopes(args):
    """An agent token: with the default scopes every conn method is
    refused; with `conn.*@host:testhost` only that host."""
    ws, rpc = await connect(args, token=args.token)
    r = {"default": {}}
    for method, params in [
        ("connconnect", {"host": "testhost"}),
        ("connensure", {"host": "testhost"}),
        ("conndisconnect", {"host": "testhost"}),
        ("connstatus", {"host": "testhost"}),
        ("connstatus", {}),
        ("connlist", {}),
        ("connlistaws", {}),
        ("pane.open", {"view": "term", "conn": "testhost", "command": ["true"]}),
    ]:
        a = await rpc.call(method, params)
        r["default"][method + json.dumps(params)] = err(a)
    await ws.close()
    if args.extra:
        ws, rpc = await connect(args, token=args.extra)
        r["scoped"] = {
            "status_own": code(await rpc.call("connstatus", {"host": "testhost"})),
            "status_user_at_own": code(await rpc.call("connstatus", {"host": "root@testhost"})),
            "status_other": err(await rpc.call("connstatus", {"host": "otherhost"})),
            "status_all": err(await rpc.call("connstatus", {})),
            "list": err(await rpc.call("connlist")),
            "aws": err(await rpc.call("connlistaws")),
            "open_other": err(await rpc.call("pane.open", {"view": "term", "conn": "otherhost"})),
        }
        await ws.close()
    return r


async def nossh(args):
    ws, rpc = await connect(args)
    r = {"connect": err(await rpc.call("connconnect", {"host": "testhost"}))}
    r["status"] = (await rpc.call("connstatus", {"host": "testhost"}))["result"]
    await ws.close()
    return r


async def aws(args):
    ws, rpc = await connect(args)
    r = {"aws": await rpc.call("connlistaws")}
    r["again"] = await rpc.call("connlistaws", {})
    r["bad"] = err(await rpc.call("connlistaws", {"file": "/etc/shadow"}))
    await ws.close()
    return r


if __name__ == "__main__":
    run_scenarios(
        {"lifecycle": lifecycle, "refused": refused, "hostile": hostile,
         "scopes": scopes, "aws": aws, "nossh": nossh},
        ("--host", {"default": "testhost"}), ("--port", {"type": int}), ("--data-dir", {}),
        ("--marker", {"default": "/nonexistent/marker"}),
    )
