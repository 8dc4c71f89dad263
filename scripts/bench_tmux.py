"""Latency of the tmux bridge and of jekts into tmux panes: a private tmux
server, a fresh daemon. Measures `agentbus tmux read` and a read + type
cycle (each a new process, as an agent runs them), and a jekt into an
adopted tmux pane next to one into a hosted pane (provider `raw`: no
settle time, no submit, so only the delivery path is timed). Prints a
table of medians and p99.

    cargo build --release -p agentbus
    python3 scripts/bench_tmux.py [--bin target/release/agentbus] [-n 200]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request

from benchlib import p99, start_daemon


def timed(fn, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/agentbus")
    ap.add_argument("-n", type=int, default=200)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    sock = os.path.join(tmp, "sock")
    rt = os.path.join(tmp, "rt")
    os.mkdir(rt, 0o700)
    tmux = ["tmux", "-S", sock]
    subprocess.run(tmux + ["-f", "/dev/null", "new-session", "-d", "-s", "b", "-x", "120", "-y", "30", "cat > /dev/null"], check=True)
    env = dict(os.environ, TMUX_BRIDGE_SOCKET=sock, XDG_RUNTIME_DIR=rt)
    for k in ("TMUX", "TMUX_PANE"):
        env.pop(k, None)

    def bridge(*args):
        subprocess.run([a.bin, "tmux", *args], env=env, check=True, stdout=subprocess.DEVNULL)

    rows = [("agentbus tmux read %0", timed(lambda: bridge("read", "%0"), a.n))]
    rows.append(("read + type (two processes)", timed(lambda: (bridge("read", "%0"), bridge("type", "%0", "x")), a.n)))

    data = os.path.join(tmp, "data")
    proc, url, key = start_daemon(a.bin, data)
    try:
        def post(path, body):
            req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                         headers={"X-AuthKey": key, "Content-Type": "application/json"})
            with urllib.request.urlopen(req) as r:
                return json.loads(r.read())

        pid = int(subprocess.run(tmux + ["display-message", "-p", "-t", "%0", "#{pane_pid}"],
                                 capture_output=True, text=True, check=True).stdout)
        post("/v1/agents", {"agent_id": "t", "provider": "raw",
                            "tmux": {"socket": sock, "pane_id": "%0", "pane_pid": pid}})
        post("/v1/agents", {"agent_id": "h", "provider": "raw", "command": ["sh", "-c", "cat > /dev/null"]})

        def jekt(name):
            r = post("/agentmux/reactive/inject", {"target_agent": name, "message": "ping"})
            assert r["outcome"] == "delivered", r

        rows.append(("jekt into a tmux pane", timed(lambda: jekt("t"), a.n)))
        rows.append(("jekt into a hosted pane", timed(lambda: jekt("h"), a.n)))
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(tmux + ["kill-server"])

    print(f"{'operation':<30} {'n':>5} {'median ms':>10} {'p99 ms':>8}")
    for name, v in rows:
        print(f"{name:<30} {len(v):>5} {statistics.median(v):>10.2f} {p99(v):>8.2f}")


if __name__ == "__main__":
    main()
