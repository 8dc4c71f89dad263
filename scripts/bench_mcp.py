"""Tool-call latency of agentbus's MCP server, seen from the official MCP
Python SDK: a fresh daemon, one agent, N calls of `send_message` and of
`read_messages` (acting as that agent with the instance key, which is not
rate limited; an agent token allows 10 sends a second) over stdio (`agentbus mcp`) and over streamable HTTP
(`/mcp`), in the handshake era and the stateless revision. Prints a table
of medians and p99.

    bash scripts/test.sh                    # once: installs target/pyenv
    cargo build --release -p agentbus
    target/pyenv/bin/python scripts/bench_mcp.py [--bin target/release/agentbus] [-n 300]
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request

import httpx2
from benchlib import p99, start_daemon
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def register(url, key, name):
    req = urllib.request.Request(f"{url}/agentmux/reactive/register", method="POST",
                                 data=json.dumps({"agent_id": name}).encode(),
                                 headers={"X-AuthKey": key, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["token"]


async def timed(c, n, tool, args):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = await c.call_tool(tool, args)
        out.append((time.perf_counter() - t) * 1000)
        assert not r.is_error, r.content
    return out


async def run(client, n):
    async with client as c:
        await timed(c, 20, "list_agents", {})  # warm up
        send = await timed(c, n, "send_message", {"to": "bench", "body": "x" * 200})
        read = await timed(c, n, "read_messages", {"peek": True, "limit": 10})
        return c.protocol_version, send, read


def row(name, proto, ms):
    return f"| {name} | {proto} | {statistics.median(ms):.2f} | {p99(ms):.2f} |"


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default="target/release/agentbus")
    p.add_argument("-n", type=int, default=300)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, url, key = start_daemon(a.bin, d)
        try:
            register(url, key, "bench")
            rows = []
            for mode in ["legacy", "auto"]:
                stdio = Client(StdioServerParameters(command=a.bin, args=["--data-dir", d, "mcp", "--as", "bench"]), mode=mode)
                proto, send, read = await run(stdio, a.n)
                rows += [row("stdio send_message", proto, send), row("stdio read_messages", proto, read)]
                async with httpx2.AsyncClient(headers={"X-AuthKey": key}) as h:
                    http = Client(streamable_http_client(f"{url}/mcp?as=bench", http_client=h), mode=mode)
                    proto, send, read = await run(http, a.n)
                rows += [row("HTTP send_message", proto, send), row("HTTP read_messages", proto, read)]
        finally:
            proc.terminate()
            proc.wait()
    print(f"MCP tool calls from the Python SDK, {a.n} each, ms")
    print("| call | protocol | median | p99 |")
    print("|---|---|---|---|")
    print("\n".join(rows))


asyncio.run(main())
