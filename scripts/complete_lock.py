#!/usr/bin/env python3
"""Adds to an npm package-lock.json the optional platform packages that
`npm install --package-lock-only` leaves out (the native builds for other
OSes and CPUs), so that `npm ci` accepts the lock on any machine.

    python3 scripts/complete_lock.py crates/agentbus/tests/clis/node24/package-lock.json

Each added entry holds the version, os, cpu (and libc) that the registry
gives for it (or, for one it does not know, that its name says) and "optional": true, as npm writes for a package it will not
install on this machine. Asks the registry through `npm view`.
"""

import json
import subprocess
import sys


def platform_of(name):
    out = {}
    for os_name in ("darwin", "linux", "win32", "freebsd", "android"):
        if os_name in name:
            out["os"] = [os_name]
    for cpu in ("arm64", "x64", "ia32", "arm"):
        if f"-{cpu}" in name:
            out["cpu"] = [cpu]
            break
    return out


def main(path):
    with open(path) as f:
        lock = json.load(f)
    pkgs = lock["packages"]
    missing = {}
    for where, entry in pkgs.items():
        for name, version in (entry.get("optionalDependencies") or {}).items():
            # npm looks beside the dependent, then up to the top.
            base = where
            found = False
            while True:
                cand = f"{base}/node_modules/{name}" if base else f"node_modules/{name}"
                if cand in pkgs:
                    found = True
                    break
                if not base:
                    break
                cut = base.rfind("/node_modules/")
                base = base[:cut] if cut >= 0 else ""
            if not found:
                missing[f"node_modules/{name}"] = (name, version)
    for key, (name, version) in sorted(missing.items()):
        run = subprocess.run(["npm", "view", f"{name}@{version}", "version", "os", "cpu", "libc",
                              "--json"], capture_output=True, text=True)
        if run.returncode == 0:
            meta = json.loads(run.stdout)
        else:
            # Named by a package but never published (or not reachable
            # here): the OS and CPU its name says, so npm ci skips it.
            meta = {"version": version, **platform_of(name)}
        entry = {"version": meta["version"]}
        for k in ("cpu", "libc"):
            if meta.get(k):
                entry[k] = meta[k]
        entry["optional"] = True
        if meta.get("os"):
            entry["os"] = meta["os"]
        pkgs[key] = entry
        print(f"added {key}@{meta['version']}", file=sys.stderr)
    lock["packages"] = dict(sorted(pkgs.items(), key=lambda kv: (kv[0] != "", kv[0])))
    with open(path, "w") as f:
        json.dump(lock, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
