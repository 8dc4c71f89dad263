"""Run inside a pane: collects everything a program there can read that
might hold a secret — its environment and argv, the environment, argv
and memory of every process it can name up its parent chain (the daemon
among them), and every file under the given directories — into one JSON
report (written to the path in argv[1]).

    secrets.py REPORT ROOT... [--skip DIR...]
"""

import json
import os
import sys

out_path, rest = sys.argv[1], sys.argv[2:]
roots, skip = rest, []
if "--skip" in rest:
    i = rest.index("--skip")
    roots, skip = rest[:i], [os.path.realpath(p) for p in rest[i + 1:]]
report = {"env": dict(os.environ), "argv": sys.argv, "proc": {}, "files": {}, "errors": []}


def read(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError as e:
        report["errors"].append(f"{path}: {e.strerror}")
        return None


pid = os.getpid()
seen = set()
while pid > 1 and pid not in seen:
    seen.add(pid)
    entry = {}
    for name in ("environ", "cmdline"):
        entry[name] = read(f"/proc/{pid}/{name}")
    try:
        with open(f"/proc/{pid}/mem", "rb"):
            entry["mem"] = "opened"
    except OSError as e:
        entry["mem"] = e.strerror
    report["proc"][str(pid)] = entry
    stat = read(f"/proc/{pid}/stat") or ""
    try:
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        break

for root in roots:
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) not in skip]
        for n in names:
            p = os.path.join(dirpath, n)
            text = read(p)
            if text is not None:
                report["files"][p] = text

with open(out_path + ".tmp", "w") as f:
    json.dump(report, f)
os.rename(out_path + ".tmp", out_path)
print("probe done", flush=True)
