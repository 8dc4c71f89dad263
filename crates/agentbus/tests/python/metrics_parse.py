#!/usr/bin/env python3
"""Scrapes an agentbus daemon's /metrics and parses the page with the
official Prometheus Python client's text parser.

    python3 metrics_parse.py --url http://127.0.0.1:PORT --token TOKEN

Prints, as its last line, one JSON object:

    {"status": 200, "content_type": "...",
     "families": [{"name", "type", "documentation",
                   "samples": [{"name", "labels", "value"}]}]}

A page the parser refuses makes the script fail (it raises).
"""

import argparse
import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    args = ap.parse_args()
    req = urllib.request.Request(
        args.url.rstrip("/") + "/metrics",
        headers={"Authorization": "Bearer " + args.token},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        status = resp.status
        content_type = resp.headers.get("Content-Type", "")
        text = resp.read().decode("utf-8")
    families = []
    for f in text_string_to_metric_families(text):
        families.append(
            {
                "name": f.name,
                "type": f.type,
                "documentation": f.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": s.value}
                    for s in f.samples
                ],
            }
        )
    print(json.dumps({"status": status, "content_type": content_type, "families": families}))


if __name__ == "__main__":
    main()
