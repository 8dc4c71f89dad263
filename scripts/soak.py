"""Soak: agents exchange jekts and mail across a relay for a set time
while the sending daemon, the receiving daemon and the relay are killed
with `kill -9` at random and started again; then counts what arrived.

    python3 scripts/soak.py --seconds 120 [--bin target/release/agentbus]

Two daemons stand for two machines: A (senders) and B (receivers, four
agents in panes that record every byte they read), both polling one
relay. Senders on A send mail and jekts to B's agents with a request id
each, retrying the same id until A answers 2xx ("acknowledged").
Meanwhile one of the three processes is killed every few seconds and
started again on its data; B's agents are opened again after it comes
back. At the end everything runs until the counts stop changing, and the
table says, per kind: sent (distinct ids), acknowledged, found at B (mail
in the mailboxes; jekts pasted *and submitted* into an agent's program),
lost (acknowledged, not found) and duplicates (a message stored twice; a
jekt submitted twice to one program). The exit status is 1 if anything
acknowledged was lost or anything duplicated.

A kill -9 of B kills its agents' programs with it, as a crash of a
machine would: a jekt being typed at that moment reached a program that
is gone, and B, which had not yet recorded it, types it again into the
agent's new program after the restart. So each start of an agent's
program records into a file of its own, and a jekt counts as duplicated
only if one program read it twice. Standard library only.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

AGENTS = ["sink0", "sink1", "sink2", "sink3"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process of ours that can be killed and started again on its data."""

    def __init__(self, name, argv, env=None):
        self.name, self.argv, self.env = name, argv, env
        self.p = None
        self.kills = 0

    def start(self):
        self.p = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  env=self.env, start_new_session=True)
        line = self.p.stdout.readline().decode().strip()
        if not line.startswith("http"):
            raise RuntimeError(f"{self.name} did not start: {line!r}")
        return line

    def kill9(self):
        if self.p and self.p.poll() is None:
            # The whole session: a daemon's panes die with it, as on a crash.
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait()
            self.kills += 1

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


def call(url, method, path, key, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"X-AuthKey": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read() or b"null")


class Daemon:
    def __init__(self, binary, data, port, relay_url, config=None):
        self.data = data
        os.makedirs(data, mode=0o700, exist_ok=True)
        argv = [binary, "daemon", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                "--relay-url", relay_url]
        if config:
            path = os.path.join(os.path.dirname(data), os.path.basename(data) + ".toml")
            with open(path, "w") as f:
                f.write(config)
            argv += ["--config", path]
        env = dict(os.environ, AGENTBUS_LOG="error")
        self.proc = Proc(os.path.basename(data), argv, env)
        self.lock = threading.Lock()
        self.url = None
        self.key = None

    def start(self):
        with self.lock:
            self.url = self.proc.start()
            with open(os.path.join(self.data, "authkey")) as f:
                self.key = f.read().strip()

    def creds(self):
        with self.lock:
            return self.url, self.key


OPENS = [0]


def open_sinks(b, binary, outdir):
    url, key = b.creds()
    OPENS[0] += 1
    for a in AGENTS:
        # One file per start of the program (see the module's doc).
        out = os.path.join(outdir, f"{a}.{OPENS[0]}.bytes")
        for _ in range(50):
            try:
                call(url, "POST", "/v1/agents", key, {
                    "agent_id": a, "provider": "generic",
                    "command": [binary, "probe", "sink", "--out", out]})
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = {"message": set(), "jekt": set()}
        self.acked = {"message": set(), "jekt": set()}


def sender(a, counts, stop, worker):
    n = 0
    while not stop.is_set():
        n += 1
        kind = "jekt" if n % 2 else "message"
        rid = f"soak-{worker}-{n}"
        to = random.choice(AGENTS)
        body = f"{rid} hello"
        with counts.lock:
            counts.sent[kind].add(rid)
        if kind == "jekt":
            path, req = "/agentmux/reactive/inject", {
                "target_agent": to, "message": body, "request_id": rid, "wait_for_idle": False}
        else:
            path, req = "/v1/messages", {"to": to, "body": body, "request_id": rid}
        # The same request id until the daemon says it has it.
        deadline = time.time() + 60
        while time.time() < deadline:
            url, key = a.creds()
            try:
                status, _ = call(url, "POST", path, key, req)
                if 200 <= status < 300:
                    with counts.lock:
                        counts.acked[kind].add(rid)
                    break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)
        time.sleep(random.uniform(0.01, 0.05))


def found_mail(b):
    url, key = b.creds()
    seen = {}
    for a in AGENTS:
        after = 0
        while True:
            _, page = call(url, "GET", f"/v1/inbox/{a}?peek=true&include_acked=true&after={after}&limit=1000", key)
            for m in page["messages"]:
                rid = m["body"].split()[0]
                seen[rid] = seen.get(rid, 0) + 1
            if not page.get("more"):
                break
            after = page["next_cursor"]
    return seen


SUBMITTED = re.compile(rb"\x1b\[200~\[JEKT:(.*?)\[/JEKT\]\x1b\[201~\r", re.S)


def found_jekts(outdir):
    """Per id: how many times one program read it submitted, at most (and
    each program's file counts once for `found`)."""
    seen = {}
    for name in os.listdir(outdir):
        if not name.endswith(".bytes"):
            continue
        with open(os.path.join(outdir, name), "rb") as f:
            data = f.read()
        here = {}
        for block in SUBMITTED.findall(data):
            words = [w for w in block.decode("utf-8", "replace").split() if w.startswith("soak-")]
            if words:
                here[words[0]] = here.get(words[0], 0) + 1
        for rid, n in here.items():
            seen[rid] = max(seen.get(rid, 0), n)
    return seen


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "agentbus"))
    p.add_argument("--senders", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    random.seed(args.seed)
    binary = os.path.abspath(args.bin)
    work = tempfile.mkdtemp(prefix="agentbus-soak-")
    relay_port = free_port()
    relay_url = f"http://127.0.0.1:{relay_port}"
    relay = Proc("relay", [binary, "relay", "--db", os.path.join(work, "relay.db"),
                           "--listen", f"127.0.0.1:{relay_port}"],
                 dict(os.environ, AGENTBUS_LOG="error"))
    relay.start()
    a = Daemon(binary, os.path.join(work, "a"), free_port(), relay_url)
    b = Daemon(binary, os.path.join(work, "b"), free_port(), relay_url,
               config="[profiles.claude]\nsettle_ms = 20\n")
    a.start()
    b.start()
    open_sinks(b, binary, work)

    counts = Counts()
    stop = threading.Event()
    workers = [threading.Thread(target=sender, args=(a, counts, stop, w), daemon=True)
               for w in range(args.senders)]
    for w in workers:
        w.start()
    end = time.time() + args.seconds
    while time.time() < end:
        time.sleep(random.uniform(2, 6))
        victim = random.choice(["relay", "a", "b"])
        if victim == "relay":
            relay.kill9()
            time.sleep(random.uniform(0.1, 1.0))
            relay.start()
        else:
            d = a if victim == "a" else b
            d.proc.kill9()
            time.sleep(random.uniform(0.1, 1.0))
            d.start()
            if d is b:
                open_sinks(b, binary, work)
    stop.set()
    for w in workers:
        w.join(90)

    # Let everything acknowledged arrive: until the counts stop changing.
    last, still = None, 0
    give_up = time.time() + 120
    while time.time() < give_up:
        mail, jekts = found_mail(b), found_jekts(work)
        now = (len(mail), len(jekts))
        still = still + 1 if now == last else 0
        last = now
        acked_all = counts.acked["message"] <= mail.keys() and counts.acked["jekt"] <= jekts.keys()
        if acked_all or still >= 10:
            break
        time.sleep(1)

    mail, jekts = found_mail(b), found_jekts(work)
    bad = False
    print(f"{'kind':<8} {'sent':>6} {'acknowledged':>13} {'found':>6} {'lost':>5} {'duplicates':>11}")
    for kind, seen in [("message", mail), ("jekt", jekts)]:
        sent, acked = counts.sent[kind], counts.acked[kind]
        found = {r for r in seen if r in sent}
        lost = acked - found
        dups = {r for r, n in seen.items() if n > 1}
        bad |= bool(lost or dups)
        print(f"{kind:<8} {len(sent):>6} {len(acked):>13} {len(found):>6} {len(lost):>5} {len(dups):>11}")
        if lost:
            print(f"  lost: {sorted(lost)[:10]}", file=sys.stderr)
        if dups:
            print(f"  duplicated: {sorted(dups)[:10]}", file=sys.stderr)
    print(f"kill -9: relay {relay.kills}, sending daemon {a.proc.kills}, receiving daemon {b.proc.kills}"
          f" over {args.seconds:.0f} s")
    for proc in (a.proc, b.proc, relay):
        proc.stop()
    if bad:
        print(f"kept for a look: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
