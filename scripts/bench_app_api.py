"""Call latency of agentbus's App API (/ws, JSON-RPC 2.0), seen from the
`websockets` package: a fresh daemon, one agent in a pane, N sequential
calls of a few methods over one socket with the instance key (an agent
token is limited to 20 calls a second), then a burst of concurrent calls.
Prints a table of medians and p99.

    bash scripts/test.sh                    # once: installs target/pyenv
    cargo build --release -p agentbus
    target/pyenv/bin/python scripts/bench_app_api.py [--bin target/release/agentbus] [-n 1000]
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time

import websockets
from benchlib import p99, start_daemon


class Conn:
    def __init__(self, ws):
        self.ws, self.n, self.waiting = ws, 0, {}
        asyncio.ensure_future(self.read())

    async def read(self):
        try:
            async for raw in self.ws:
                m = json.loads(raw)
                fut = self.waiting.pop(m.get("id"), None)
                if fut:
                    fut.set_result(m)
        except websockets.ConnectionClosed:
            pass

    async def call(self, method, params):
        self.n += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[self.n] = fut
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method, "params": params}))
        m = await fut
        assert "result" in m, m
        return m


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/agentbus")
    ap.add_argument("-n", type=int, default=1000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, url, key = start_daemon(a.bin, d)
        try:
            ws = await websockets.connect(url.replace("http", "ws", 1) + "/ws",
                                          additional_headers={"X-AuthKey": key})
            c = Conn(ws)
            await c.call("agent.open", {"agent_id": "bench", "command": ["cat"], "provider": "raw"})
            rows = []
            for method, params in [
                ("agent.status", {"agent_id": "bench"}),
                ("agent.list", {}),
                ("agent.output", {"agent_id": "bench", "lines": 20}),
                ("agent.send", {"agent_id": "bench", "message": "x" * 200}),
                ("eventpublish", {"event": "bench", "scopes": ["b"], "data": {"i": 1}}),
            ]:
                for _ in range(20):
                    await c.call(method, params)
                times = []
                for _ in range(a.n):
                    t = time.perf_counter()
                    await c.call(method, params)
                    times.append((time.perf_counter() - t) * 1000)
                rows.append((method, statistics.median(times), p99(times)))
            t = time.perf_counter()
            await asyncio.gather(*[c.call("agent.status", {"agent_id": "bench"}) for _ in range(a.n)])
            burst = a.n / (time.perf_counter() - t)
            print(f"| method (n={a.n}, one socket) | median ms | p99 ms |")
            print("|---|---|---|")
            for m, med, tail in rows:
                print(f"| `{m}` | {med:.2f} | {tail:.2f} |")
            print(f"| `agent.status`, {a.n} concurrent | {burst:,.0f} calls/s | |")
            await ws.close()
        finally:
            proc.terminate()
            proc.wait()


asyncio.run(main())
