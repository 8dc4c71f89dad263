"""Shared by the Python benchmark scripts: a fresh daemon, and percentiles."""

import os
import subprocess


def start_daemon(bin_path, data_dir, env=None):
    """Starts `agentbus daemon` on `data_dir`, with `env` added to this
    environment; (process, url, instance key)."""
    proc = subprocess.Popen([bin_path, "--data-dir", data_dir, "daemon"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    url = proc.stdout.readline().strip()
    key = open(os.path.join(data_dir, "authkey")).read().strip()
    return proc, url, key


def p99(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * 0.99))]
