#!/usr/bin/env python3
"""A stand-in for the agent-bus reference bus server, to compare against.

The reference server itself is not published with the agent-bus clients; this one is
built from what the agent-bus README and docs/relay.md say about it, so that
`agentbus bench relay --url ...` can put the same load on both in one
run:

- Python standard library only, one thread per connection;
- messages kept in memory, in one list behind a lock;
- a blocking /recv checks for mail every 0.5 s, for up to 30 s;
- `now` is read after the fetch (the race relay.md describes);
- the listen backlog is Python's default of 5;
- HTTP/1.0 (the standard library's default): one request per connection.

Usage: python3 scripts/agent_bus_peer.py [--host 127.0.0.1] [--port 8080]
It prints `http://HOST:PORT pid=PID` once it listens.
"""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

LOCK = threading.Lock()
QUEUE = []  # dicts: ts, from, to, msg, channel
LAST_TS = [0.0]


def fetch(to, channel, since, limit):
    with LOCK:
        found = [m for m in QUEUE
                 if m["to"] == to and m["channel"] == channel and m["ts"] > since]
    return [{"ts": m["ts"], "from": m["from"], "msg": m["msg"]} for m in found[:limit]]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if urlparse(self.path).path != "/send":
            return self.answer(404, {"error": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            return self.answer(413, {"error": "message too large (>64KB)"})
        try:
            data = json.loads(self.rfile.read(length))
            assert isinstance(data, dict)
        except Exception:
            return self.answer(400, {"error": "invalid JSON"})
        sender, to, msg = data.get("from"), data.get("to"), data.get("msg")
        if not sender or not to or not isinstance(msg, str):
            return self.answer(400, {"error": "from, to, msg required"})
        channel = data.get("channel") or "default"
        with LOCK:
            ts = max(time.time(), LAST_TS[0] + 1e-6)
            LAST_TS[0] = ts
            QUEUE.append({"ts": ts, "from": sender, "to": to, "msg": msg,
                          "channel": channel})
        self.answer(200, {"ok": True, "ts": ts, "channel": channel})

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/healthz":
            return self.answer(200, {"ok": True, "now": time.time()})
        if url.path != "/recv":
            return self.answer(404, {"error": "not found"})
        to = q.get("to")
        if not to:
            return self.answer(400, {"error": "to= required"})
        since = float(q.get("since", 0))
        limit = int(q.get("max", 100))
        channel = q.get("channel") or "default"
        deadline = time.time() + 30
        found = fetch(to, channel, since, limit)
        while not found and q.get("block", "").lower() == "true" and time.time() < deadline:
            time.sleep(0.5)
            found = fetch(to, channel, since, limit)
        self.answer(200, {"messages": found, "now": time.time()})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"http://{host}:{port} pid={os.getpid()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
