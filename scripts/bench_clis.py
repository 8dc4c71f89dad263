"""Jekts into the real agent CLIs (installed by scripts/install_clis.sh):
Claude Code, Codex CLI and Gemini CLI by default, or any of the others
the tests run (--cli copilot, opencode, pi, qwen, kimi, openclaw, aider),
in agentbus panes, offline against the scripted model of the tests. Per
CLI it measures, and prints as a table of medians and p99:

- jekt -> turn: from the jekt request to the model receiving it as a
  turn, at a ready prompt (N jekts, each after the previous turn ended);
- open -> turn: a jekt sent the moment the pane opens (it waits for the
  ready prompt) until the model has it (R rounds);
- stop -> exit: `stop` quitting through the CLI (R rounds, idle).

    bash scripts/install_clis.sh && cargo build --release -p agentbus
    python3 scripts/bench_clis.py [--bin target/release/agentbus] [-n 50] [-r 5] [--cli claude]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import p99, start_daemon

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = os.path.join(ROOT, "crates", "agentbus", "tests", "python")
MAIN = ["claude", "codex", "gemini"]
OTHERS = ["copilot", "opencode", "pi", "qwen", "kimi", "openclaw", "aider"]


def cli_bin(name):
    """Where install_clis.sh put a CLI's command."""
    if name in ("qwen", "kimi", "openclaw"):
        return os.path.join(ROOT, "target", "clis24", "node_modules", ".bin", name)
    if name == "aider":
        return os.path.join(ROOT, "target", "clis-aider", "bin", name)
    return os.path.join(ROOT, "target", "clis", "node_modules", ".bin", name)


def call(url, key, method, path, body=None):
    req = urllib.request.Request(
        url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"x-authkey": key, "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: HTTP {e.code}: {e.read().decode(errors='replace')}")


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


class Model:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(PY, "model_endpoint.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = self.proc.stdout.readline().split()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def turn_with(self, needle, timeout=120):
        """Waits for a turn holding `needle`; the time it arrived (ms)."""
        end = time.time() + timeout
        while time.time() < end:
            for t in get(self.url, "/turns"):
                if t.get("kind", "turn") == "turn" and needle in t.get("text", ""):
                    return t["at_ms"]
            time.sleep(0.01)
        raise TimeoutError(f"no turn with {needle!r}")


def now_ms():
    return time.time() * 1000


def wait(fn, what, timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    raise TimeoutError(what)


def bench_cli(cli, agentbus, n, rounds):
    model = Model()
    home = tempfile.mkdtemp(prefix=f"bench-{cli}-")
    cwd = os.path.join(home, "project")
    os.makedirs(cwd)
    spec = json.loads(subprocess.check_output(
        [sys.executable, os.path.join(PY, "cli_offline.py"), cli, "--home", home, "--cwd", cwd,
         "--port", model.port]))
    env = spec["env"]
    homes = {k: env[k] for k in ("HOME", "CODEX_HOME") if k in env}
    if cli in MAIN:
        subprocess.run([agentbus, "setup", cli, "--write", "--trust-folder", "--allow-tools"],
                       cwd=cwd, env={**os.environ, **homes}, check=True, stdout=subprocess.DEVNULL)
    data = os.path.join(home, "agentbus")
    daemon, url, key = start_daemon(agentbus, data, homes)
    pane_env = {k: v for k, v in env.items() if k not in homes}
    command = [cli_bin(spec["argv"][0])] + spec["argv"][1:]
    opened = {"agent_id": "ag", "provider": cli, "command": command, "cwd": cwd,
              "env": pane_env, "rows": 40, "cols": 120}

    def ready():
        return (call(url, key, "GET", "/v1/agents/ag").get("readiness") or "") == "ready"

    out = {"turn": [], "open": [], "stop": []}
    try:
        for r in range(rounds):
            t = now_ms()
            call(url, key, "POST", "/v1/agents", opened)
            word = f"open{r}x{int(t)}"
            call(url, key, "POST", "/agentmux/reactive/inject", {"target_agent": "ag", "message": word})
            out["open"].append(model.turn_with(word) - t)
            wait(ready, "ready")
            t = time.perf_counter()
            stopped = call(url, key, "POST", "/v1/agents/ag/stop", {})
            out["stop"].append((time.perf_counter() - t) * 1000)
            if stopped.get("stopped_by") != "quit":
                print(f"{cli}: stop ended by {stopped.get('stopped_by')}", file=sys.stderr)
        call(url, key, "POST", "/v1/agents", opened)
        wait(ready, "ready")
        for i in range(n):
            word = f"turn{i}x{int(now_ms())}"
            t = now_ms()
            call(url, key, "POST", "/agentmux/reactive/inject", {"target_agent": "ag", "message": word})
            out["turn"].append(model.turn_with(word) - t)
            wait(ready, "ready")
        call(url, key, "POST", "/v1/agents/ag/stop", {})
    finally:
        daemon.terminate()
        daemon.wait()
        model.proc.kill()
        shutil.rmtree(home, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "agentbus"))
    ap.add_argument("-n", type=int, default=50, help="jekts per CLI at a ready prompt")
    ap.add_argument("-r", type=int, default=5, help="open and stop rounds per CLI")
    ap.add_argument("--cli", action="append", choices=MAIN + OTHERS,
                    help="a CLI to measure (repeatable; default: claude, codex, gemini)")
    a = ap.parse_args()
    agentbus = os.path.abspath(a.bin)
    rows = []
    for cli in a.cli or MAIN:
        r = bench_cli(cli, agentbus, a.n, a.r)
        for what, label, count in (("turn", "jekt -> turn", a.n), ("open", "open -> turn", a.r),
                                   ("stop", "stop -> exit", a.r)):
            v = r[what]
            rows.append((cli, label, count, statistics.median(v), p99(v)))
    print("| CLI | measure | n | median | p99 |")
    print("|---|---|---|---|---|")
    for cli, label, count, med, top in rows:
        print(f"| {cli} | {label} | {count} | {med:.0f} ms | {top:.0f} ms |")


if __name__ == "__main__":
    main()
