"""Screen shots (`captureblockscreenshot`) and live output (`agent:output`
events) through the App API, driven with the `websockets` package as any
third-party client would. One scenario per run; prints a JSON report as
its last line for the Rust test (tests/app_api_shot.rs) to check.

The PNG is read here with the standard library alone (zlib and a small
chunk reader), so what the daemon drew is checked by a decoder it did not
write.

    app_api_shot.py <scenario> --url http://127.0.0.1:PORT --key KEY [...]
"""

import asyncio
import base64
import json
import re
import struct
import time
import urllib.request
import zlib

import websockets

from app_api import code, connect, rss_kb, run_scenarios


def read_png(data):
    """(width, height, rows of (r, g, b) pixels) of an 8-bit RGB PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, width, height = 8, b"", None, None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind}"
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, color, interlace) == (8, 2, 0), "expected 8-bit RGB, not interlaced"
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
            else:
                assert f == 0, f"unknown filter {f}"
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def pixel(rows, x, y):
    i = x * 3
    return list(rows[y][i:i + 3])


def cells(rows, cw, ch, row, cols):
    """Every pixel of the cells `cols` of screen row `row`."""
    return [pixel(rows, x, y)
            for y in range(row * ch, (row + 1) * ch)
            for c in cols
            for x in range(c * cw, (c + 1) * cw)]


def analyse(shot):
    """What the picture shows where the test screen put things."""
    png = base64.b64decode(shot["png"])
    w, h, rows = read_png(png)
    cw, ch = shot["cell_width"], shot["cell_height"]
    red = cells(rows, cw, ch, 0, range(0, 3))            # "RED", bold red
    green = cells(rows, cw, ch, 0, range(10, 15))        # "GREEN" on green
    true = cells(rows, cw, ch, 0, range(16, 20))         # "TRUE", #0a14fa
    plain = cells(rows, cw, ch, 0, range(4, 9))          # "plain", default
    cur = shot["cursor"]
    return {
        "decoded_width": w,
        "decoded_height": h,
        "red_lit": sum(1 for r, g, b in red if r > 150 and g < 40 and b < 40),
        "red_other": sum(1 for r, g, b in red if g > 10 or b > 10),
        "green_bg": sum(1 for p in green if p == [0, 205, 0]),
        "green_cells_px": len(green),
        "true_lit": sum(1 for r, g, b in true if b > 200 and r < 30 and g < 40),
        "plain_lit": sum(1 for r, g, b in plain if r > 150 and abs(r - g) < 10 and abs(g - b) < 10),
        "bottom_right": pixel(rows, w - 1, h - 1),
        "top_right": pixel(rows, w - 1, 0),
        "cursor_center": pixel(rows, cur["col"] * cw + cw // 2, cur["row"] * ch + ch // 2),
    }


async def wait_screen(rpc, params, needle, timeout=20):
    """Polls the screen until a row holds `needle`."""
    deadline = time.monotonic() + timeout
    while True:
        r = await rpc.call("captureblockscreenshot", dict(params, format="text"))
        if "result" in r and any(needle in row["text"] for row in r["result"]["screen"]):
            return r["result"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} never showed: {json.dumps(r)[:2000]}")
        await asyncio.sleep(0.05)


async def shot(args):
    """The screen of one pane (hosted or tmux) in every format."""
    ws, rpc = await connect(args)
    target = {"agent_id": args.agent}
    await wait_screen(rpc, target, "TRUE")
    both = (await rpc.call("captureblockscreenshot", target))["result"]
    text = (await rpc.call("captureblockscreenshot", dict(target, format="text")))["result"]
    png = (await rpc.call("captureblockscreenshot", dict(target, format="png")))["result"]
    by_block = (await rpc.call("captureblockscreenshot", {"block_id": both["block_id"], "format": "text"}))["result"]
    r = {k: both[k] for k in ("block_id", "agent_id", "format", "rows", "cols", "cursor", "width", "height",
                              "cell_width", "cell_height", "font")}
    r["row0"] = both["screen"][0]
    r["row1"] = both["screen"][1]
    r["screen_rows"] = len(both["screen"])
    r["picture"] = analyse(both)
    r["png_only"] = {"has_screen": "screen" in png, "has_png": "png" in png, "format": png["format"],
                     "picture": analyse(png)}
    r["text_only"] = {"has_png": "png" in text, "format": text["format"], "row0": text["screen"][0]}
    r["by_block_row0"] = by_block["screen"][0]
    await ws.close()
    return r


async def tmux_output(args):
    """A tmux pane's screen changing, as output events (push and pull)."""
    ws, rpc = await connect(args)
    sub = (await rpc.call("eventsub", {"event": "agent:output", "scopes": ["agent:painter"]}))["result"]["sub_id"]
    pull = (await rpc.call("eventsub", {"event": "agent:output", "scopes": ["agent:painter"], "mode": "pull"}))["result"]["sub_id"]
    block = (await rpc.call("agent.status", {"agent_id": "painter"}))["result"]["block_id"]
    await rpc.call("controllerinput", {"block_id": block, "data": "zz"})
    await wait_for(lambda: output_of(rpc.notes, sub), 20)
    got = (await rpc.call("eventrecv", {"sub_id": pull, "max": 1, "wait_ms": 5000}))["result"]
    await ws.close()
    return {"event": output_of(rpc.notes, sub)[0], "pull": got}


async def errors(args):
    ws, rpc = await connect(args)
    help_block = (await rpc.call("pane.open", {"view": "help"}))["result"]["block_id"]
    r = {
        "unknown_block": await rpc.call("captureblockscreenshot", {"block_id": "0190a0a0-0000-7000-8000-000000000000"}),
        "unknown_agent": code(await rpc.call("captureblockscreenshot", {"agent_id": "ghost"})),
        "bad_format": await rpc.call("captureblockscreenshot", {"agent_id": args.agent, "format": "jpeg"}),
        "format_number": code(await rpc.call("captureblockscreenshot", {"agent_id": args.agent, "format": 5})),
        "bad_block_id": code(await rpc.call("captureblockscreenshot", {"block_id": "../../etc/passwd"})),
        "unknown_field": code(await rpc.call("captureblockscreenshot", {"agent_id": args.agent, "zoom": 2})),
        "positional": code(await rpc.call("captureblockscreenshot", [args.agent])),
        "neither": code(await rpc.call("captureblockscreenshot", {})),
        "not_a_terminal": code(await rpc.call("captureblockscreenshot", {"block_id": help_block})),
        "png": await rpc.call("captureblockscreenshot", {"agent_id": args.agent, "format": "png"}),
        "text": code(await rpc.call("captureblockscreenshot", {"agent_id": args.agent, "format": "text"})),
        "both": await rpc.call("captureblockscreenshot", {"agent_id": args.agent}),
    }
    # Still serving.
    r["after"] = code(await rpc.call("agent.list"))
    await ws.close()
    return r


def stats(args):
    req = urllib.request.Request(args.url + "/v1/stats", headers={"X-AuthKey": args.key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def wait_for(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


def output_of(notes, sub_id):
    return [n["params"] for n in notes
            if n["method"] == "eventrecv" and n["params"]["sub_id"] == sub_id]


async def output(args):
    """A subscriber sees a program's output, in order, without the
    terminal queries the daemon answers; the tap lives only while wanted."""
    ws, rpc = await connect(args)
    r = {}
    # The program waits for a line, then writes 3,000 numbered lines, asks
    # its terminal where the cursor is, and says it is done.
    script = ("stty -echo; read go; i=1; while [ $i -le 3000 ]; do echo \"line $i\"; i=$((i+1)); done; "
              "printf '\\033[6n'; printf 'after-query\\n'; printf 'caf\\303\\251 \\342\\202\\254\\n'; read rest; sleep 600")
    opened = (await rpc.call("agent.open", {"agent_id": "talker", "command": ["sh", "-c", script]}))["result"]
    block = opened["block_id"]
    r["taps_before"] = stats(args)["output_taps"]
    star = (await rpc.call("eventsub", {"event": "*", "allscopes": True}))["result"]["sub_id"]
    sub = (await rpc.call("eventsub", {"event": "agent:output", "scopes": ["agent:talker"]}))["result"]
    r["sub"] = sub
    by_block = (await rpc.call("eventsub", {"event": "agent:output", "scopes": [f"block:{block}"]}))["result"]["sub_id"]
    r["taps_during"] = stats(args)["output_taps"]
    await rpc.call("controllerinput", {"block_id": block, "data": "go\r"})
    events = []

    def done():
        events[:] = output_of(rpc.notes, sub["sub_id"])
        return "€" in "".join(e["data"]["data"] for e in events)

    await wait_for(done, 30)
    data = "".join(e["data"]["data"] for e in events)
    numbers = [int(n) for n in re.findall(r"line (\d+)", data)]
    r["numbers_in_order"] = numbers == list(range(1, 3001))
    r["numbers_seen"] = len(numbers)
    r["query_seen"] = "\x1b[6n" in data
    r["after_query"] = "after-query" in data
    r["unicode"] = "café €" in data
    r["events"] = len(events)
    r["max_bytes"] = max(e["data"]["bytes"] for e in events)
    r["types"] = sorted({e["type"] for e in events})
    r["scopes"] = events[0]["scopes"]
    r["event_agent"] = events[0]["data"]["agent_id"]
    r["event_block"] = events[0]["data"]["block_id"]
    r["block_sub_bytes"] = sum(e["data"]["bytes"] for e in output_of(rpc.notes, by_block))
    r["sub_bytes"] = sum(e["data"]["bytes"] for e in events)
    r["resync"] = any(e["data"].get("resync") for e in events)
    r["star_saw_output"] = any(e["type"] == "agent:output" for e in output_of(rpc.notes, star))
    # Nobody can forge a pane's output.
    r["forged"] = await rpc.call("eventpublish", {"event": "agent:output", "scopes": ["agent:talker"],
                                                  "data": {"data": "rm -rf /"}})
    hist = await rpc.call("eventreadhistory", {"event": "agent:output", "scope": "agent:talker"})
    r["history"] = hist["result"]
    # Only the subscriptions' own: gone with them.
    await rpc.call("eventunsub", {"sub_id": sub["sub_id"]})
    r["taps_one_left"] = stats(args)["output_taps"]
    await rpc.call("eventunsub", {"sub_id": by_block})
    await wait_for(lambda: stats(args)["output_taps"] == 0, 10)
    r["taps_after"] = stats(args)["output_taps"]
    # A new program in the same block (a restart) is followed by a new
    # subscription, and `local` carries no output.
    local = (await rpc.call("eventsub", {"event": "agent:output", "scopes": ["local"]}))["result"]["sub_id"]
    r["taps_for_local"] = stats(args)["output_taps"]
    again = (await rpc.call("eventsub", {"event": "agent:output", "scopes": ["agent:talker"]}))["result"]["sub_id"]
    await rpc.call("controllerrestart", {"block_id": block})
    await asyncio.sleep(0.5)
    await rpc.call("controllerinput", {"block_id": block, "data": "go\r"})
    await wait_for(lambda: "after-query" in "".join(e["data"]["data"] for e in output_of(rpc.notes, again)), 30)
    r["after_restart"] = True
    r["local_events"] = len(output_of(rpc.notes, local))
    await rpc.call("agent.stop", {"agent_id": "talker", "force": True})
    await ws.close()
    return r


async def lag(args):
    """One socket subscribes to a flooding pane's output and never reads;
    the pane is not slowed and the daemon's memory stays bounded."""
    slow_ws, slow = await connect(args)
    ws, rpc = await connect(args)
    script = ("read go; yes '0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ' | head -c %d; "
              "echo; echo flood-done; sleep 600") % args.size
    opened = (await rpc.call("agent.open", {"agent_id": "flood", "command": ["sh", "-c", script]}))["result"]
    sub = (await slow.call("eventsub", {"event": "agent:output", "scopes": ["agent:flood"]}))["result"]
    slow.reader.cancel()  # from here on nothing reads this socket
    before = rss_kb(args.pid)
    peak = before
    start = time.monotonic()
    await rpc.call("controllerinput", {"block_id": opened["block_id"], "data": "\r"})
    finished = None
    while time.monotonic() - start < 120:
        peak = max(peak, rss_kb(args.pid))
        out = (await rpc.call("agent.output", {"agent_id": "flood", "lines": 3}))["result"]
        if "flood-done" in out["lines"]:
            finished = time.monotonic() - start
            break
        await asyncio.sleep(0.1)
    absorbed = (await rpc.call("agent.status", {"agent_id": "flood"}))["result"]
    # Now read what the slow socket was given.
    got, got_bytes, lagged, missed = 0, 0, 0, 0
    try:
        while True:
            m = json.loads(await asyncio.wait_for(slow_ws.recv(), 3))
            if m.get("method") == "eventrecv":
                got += 1
                got_bytes += m["params"]["data"]["bytes"]
            elif m.get("method") == "lagged":
                lagged += 1
                missed += m["params"]["missed"]
    except (asyncio.TimeoutError, websockets.ConnectionClosed):
        pass
    await slow_ws.close()
    await rpc.call("agent.stop", {"agent_id": "flood", "force": True})
    await ws.close()
    return {"sub": sub, "finished_s": finished, "rss_before_kb": before, "rss_peak_kb": peak,
            "received": got, "received_bytes": got_bytes, "lagged_notices": lagged, "missed": missed,
            "status": absorbed}


async def scopes(args):
    """Agent tokens: output events need agent.output as well as eventsub;
    the screen shot needs a controller scope."""
    r = {}
    ws, admin = await connect(args)
    ws_own, own = await connect(args, args.token)
    other = "block:" + args.other_block
    mine = "block:" + args.own_block
    r["own"] = {
        "output self": code(await own.call("eventsub", {"event": "agent:output", "scopes": ["agent:worker"]})),
        "output other": await own.call("eventsub", {"event": "agent:output", "scopes": ["agent:other"]}),
        "output other block": code(await own.call("eventsub", {"event": "agent:output", "scopes": [other]})),
        "output all": code(await own.call("eventsub", {"event": "agent:output", "allscopes": True})),
        "shot self": await own.call("captureblockscreenshot", {"block_id": args.own_block, "format": "text"}),
    }
    # What the own token was allowed, it gets: the worker's output.
    await admin.call("controllerinput", {"block_id": args.own_block, "data": "echo own-$((20+3))\r"})
    await wait_for(lambda: any("own-23" in n["params"]["data"]["data"] for n in own.notes
                               if n["method"] == "eventrecv"), 20)
    r["own"]["received"] = True
    ws_x, extra = await connect(args, args.extra)
    r["extra"] = {
        "output self": code(await extra.call("eventsub", {"event": "agent:output", "scopes": ["agent:worker"]})),
        "output own block": code(await extra.call("eventsub", {"event": "agent:output", "scopes": [mine]})),
        "output other": await extra.call("eventsub", {"event": "agent:output", "scopes": ["agent:other"]}),
        "shot self": code(await extra.call("captureblockscreenshot", {"format": "text"})),
        "shot own block": code(await extra.call("captureblockscreenshot", {"block_id": args.own_block, "format": "text"})),
        "shot other": await extra.call("captureblockscreenshot", {"block_id": args.other_block}),
        "shot other agent": code(await extra.call("captureblockscreenshot", {"agent_id": "other"})),
    }
    ws_s, subonly = await connect(args, args.subonly)
    r["subonly"] = {
        "output self": await subonly.call("eventsub", {"event": "agent:output", "scopes": ["agent:worker"]}),
        "other events": code(await subonly.call("eventsub", {"event": "*", "scopes": ["agent:worker"]})),
    }
    for w in (ws, ws_own, ws_x, ws_s):
        await w.close()
    return r


if __name__ == "__main__":
    run_scenarios(
        {"shot": shot, "tmux_output": tmux_output, "errors": errors, "output": output,
         "lag": lag, "scopes": scopes},
        ("--agent", {"default": "painter"}), ("--subonly", {}), ("--own-block", {}),
        ("--other-block", {}), ("--pid", {"type": int}),
        ("--size", {"type": int, "default": 40_000_000}),
    )
