"""A stand-in for an agent CLI in an agentbus pane: it launches
`agentbus mcp` the way Claude Code would (inheriting the pane's
AGENTBUS_* environment) and uses the tools. Run as a pane's program by
crates/agentbus/tests/mcp_python.rs; what it does shows in its terminal.

--role planner: list_agents, inject_terminal a task into the coder,
                then wait_for_messages for the answer.
--role coder:   read the jekt typed into this terminal, then
                send_message the answer to whoever the marker names.
"""

import argparse
import asyncio
import json
import os
import re
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def show(*parts):
    print(*parts, flush=True)


async def planner(c, peer):
    agents = await c.call_tool("list_agents", {})
    names = sorted(a["agent_id"] for a in json.loads(agents.content[0].text)["agents"])
    show("AGENTS", " ".join(names))
    r = await c.call_tool("inject_terminal", {"target": peer, "message": "please add validation"})
    show("JEKT", json.loads(r.content[0].text)["outcome"])
    r = await c.call_tool("wait_for_messages", {"timeout_s": 60})
    for m in json.loads(r.content[0].text)["messages"]:
        show("MAIL", m["from"], m["body"])
        await c.call_tool("ack_messages", {"ids": [m["id"]]})


async def coder(c):
    show("READY")
    sender = None
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        m = re.search(r"JEKT:FROM=(\S+)", line)
        if m:
            sender = m.group(1)
        if "[/JEKT]" in line and sender:
            break
    show("TASK FROM", sender)
    r = await c.call_tool("send_message", {"to": sender, "body": "validation done"})
    show("SENT", not r.is_error)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--role", choices=["planner", "coder"], required=True)
    p.add_argument("--bin", required=True)
    p.add_argument("--peer", default="coder")
    a = p.parse_args()
    # The SDK passes a server only "safe" variables (as Codex does), so
    # forward the pane's AGENTBUS_* ones, as `agentbus setup codex` does.
    env = {k: v for k, v in os.environ.items() if k.startswith("AGENTBUS_")}
    async with Client(StdioServerParameters(command=a.bin, args=["mcp"], env=env)) as c:
        if a.role == "planner":
            await planner(c, a.peer)
        else:
            await coder(c)
    show("DONE")
    await asyncio.sleep(3600)


asyncio.run(main())
