"""Drives agentbus's MCP server with the official MCP Python SDK.

Run by crates/agentbus/tests/mcp_python.rs. Connects over stdio (spawning
`agentbus mcp`) or streamable HTTP (the daemon's /mcp), in the handshake
era (`--mode legacy`, initialize) or the stateless revision (`--mode auto`
negotiates 2026-07-28), calls every tool with good and with bad arguments,
and prints one JSON object of what it saw. The Rust test checks the
effects in the daemon.
"""

import argparse
import asyncio
import json
import os
import sys

import httpx2
from pydantic import BaseModel
from mcp import Client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

EXPECTED_TOOLS = {
    "inject_terminal", "send_message", "read_messages", "ack_messages",
    "wait_for_messages", "list_agents", "agent_status", "agent_output",
    "publish_event", "read_events",
}


class ChannelParams(BaseModel):
    content: str
    meta: dict[str, str] = {}


class ClaudeChannel(ClientExtension):
    """Collects `notifications/claude/channel`, as Claude Code would show them."""

    identifier = "com.example/claude-channel-probe"

    def __init__(self):
        self.received = asyncio.Queue()

    def notifications(self):
        async def on(params):
            await self.received.put(params)
        return [NotificationBinding(method="notifications/claude/channel", params_type=ChannelParams, handler=on)]


CHANNEL = ClaudeChannel()


def connect(a):
    if a.transport == "stdio":
        env = dict(os.environ)
        env.update(json.loads(a.env or "{}"))
        params = StdioServerParameters(command=a.bin, args=["mcp", *a.server_arg], env=env)
        return Client(params, mode=a.mode, extensions=[CHANNEL]), None
    headers = json.loads(a.headers or "{}")
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    return Client(streamable_http_client(a.url, http_client=http), mode=a.mode), http


def outcome(r):
    """(is_error, parsed JSON or text) of a tool result."""
    text = r.content[0].text if r.content else ""
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    return bool(r.is_error), body


async def call(c, name, args):
    return outcome(await c.call_tool(name, args))


async def full(c, a, seen):
    me, peer, tag = a.agent, a.peer, a.tag
    seen["inject"] = await call(c, "inject_terminal", {"target": peer, "message": f"jekt {tag}"})
    seen["inject_unknown"] = await call(c, "inject_terminal", {"target": "nobody-here", "message": "x"})
    seen["send"] = await call(c, "send_message", {"to": peer, "body": f"mail {tag}", "thread_id": f"t-{tag}"})
    seen["list_agents"] = await call(c, "list_agents", {})
    seen["status"] = await call(c, "agent_status", {"agent": a.status_of})
    seen["output"] = await call(c, "agent_output", {"agent": a.status_of, "lines": 20})
    seen["publish"] = await call(c, "publish_event", {"type": f"mcp:{tag}", "data": {"n": 1}, "persist": 5})
    # History is written just after publishing: look a few times.
    for _ in range(40):
        seen["events"] = await call(c, "read_events", {"type": f"mcp:{tag}"})
        if seen["events"][0] or seen["events"][1]["events"]:
            break
        await asyncio.sleep(0.05)
    seen["read"] = await call(c, "read_messages", {"peek": True})
    ids = [m["id"] for m in seen["read"][1]["messages"]] if not seen["read"][0] else []
    seen["ack"] = await call(c, "ack_messages", {"ids": ids or ["01a1fe32-57b0-71b9-bf3b-34fc4ab5c309"]})

    # A wait that is woken by mail arriving while it waits.
    async def later():
        await asyncio.sleep(0.5)
        return await call(c, "send_message", {"to": me, "body": f"wake {tag}"})
    waited, sent = await asyncio.gather(
        call(c, "wait_for_messages", {"timeout_s": 20}), later())
    seen["wait"], seen["wake_send"] = waited, sent
    seen["wait_empty"] = await call(c, "wait_for_messages", {"timeout_s": 0.2, "after": 1 << 40})


async def bad(c, seen):
    bad_calls = {
        "inject_terminal": {"target": "bob"},
        "send_message": {"to": 7, "body": "x"},
        "read_messages": {"limit": "many"},
        "ack_messages": {"ids": []},
        "wait_for_messages": {"timeout_s": 100000},
        "list_agents": {"bogus": True},
        "agent_status": {"agent": "../v1/stats"},
        "agent_output": {},
        "publish_event": {"data": 1},
        "read_events": {"type": 5},
    }
    seen["bad"] = {name: await call(c, name, args) for name, args in bad_calls.items()}
    seen["after_bad"] = await call(c, "list_agents", {})


async def confined(c, a, seen):
    seen["read"] = await call(c, "read_messages", {"peek": True})
    seen["send"] = await call(c, "send_message", {"to": a.peer, "body": "spoof"})
    seen["ack"] = await call(c, "ack_messages", {"ids": a.ack})
    seen["inject"] = await call(c, "inject_terminal", {"target": a.peer, "message": "spoof"})


async def channel(c, a, seen):
    caps = c.server_capabilities
    seen["experimental"] = sorted((caps.experimental or {}).keys())
    seen["send_self"] = await call(c, "send_message", {"to": a.agent, "body": f"pushed {a.tag}"})
    pushed = []
    try:
        while len(pushed) < a.expect:
            p = await asyncio.wait_for(CHANNEL.received.get(), timeout=a.push_wait)
            pushed.append({"content": p.content, "meta": p.meta})
    except asyncio.TimeoutError:
        pass
    seen["pushed"] = pushed
    # Pushing only peeks: the mail is still there to read.
    seen["read"] = await call(c, "read_messages", {})


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--transport", choices=["stdio", "http"], required=True)
    p.add_argument("--mode", default="legacy")
    p.add_argument("--bin")
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--env", help="JSON object of extra environment for the stdio server")
    p.add_argument("--url")
    p.add_argument("--headers", help="JSON object of HTTP headers")
    p.add_argument("--agent", default="")
    p.add_argument("--peer", default="")
    p.add_argument("--status-of", default="")
    p.add_argument("--tag", default="t")
    p.add_argument("--ack", action="append", default=[])
    p.add_argument("--expect", type=int, default=1, help="channel: notifications to wait for")
    p.add_argument("--push-wait", type=float, default=15, help="channel: seconds to wait for each")
    p.add_argument("--script", choices=["full", "confined", "channel"], default="full")
    a = p.parse_args()

    client, http = connect(a)
    seen = {}
    async with client as c:
        seen["protocol"] = c.protocol_version
        seen["server"] = c.server_info.name if c.server_info else None
        tools = (await c.list_tools()).tools
        seen["tools"] = sorted(t.name for t in tools)
        seen["schemas_ok"] = all(t.input_schema.get("type") == "object" and t.description for t in tools)
        missing = EXPECTED_TOOLS - set(seen["tools"])
        assert not missing, f"tools missing: {missing}"
        if a.script == "full":
            await full(c, a, seen)
            await bad(c, seen)
        elif a.script == "channel":
            await channel(c, a, seen)
        else:
            await confined(c, a, seen)
    if http is not None:
        await http.aclose()
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main())
