#!/usr/bin/env python3
"""Swap staging and production of site "bench" through the admin API, one
swap after the other, at most RATE per second (0 = back to back), for
SECONDS. Each swap is started (POST .../swap) and followed to its end (GET
/api/v1/operations/{id}); prints one machine-readable SWAPS line.

usage: swap_loop.py ADMIN_PORT RATE SECONDS
"""
import json
import sys
import time
import urllib.request

port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
base = f"http://127.0.0.1:{port}"
auth = {"Authorization": "Bearer bench-token", "Content-Type": "application/json"}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers=auth)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


done = failed = 0
longest = 0.0
start = time.monotonic()
while time.monotonic() - start < seconds:
    t0 = time.monotonic()
    try:
        op_id = call("POST", "/api/v1/sites/bench/slots/staging/swap",
                     {"target_slot": "production", "action": "swap"})["operation_id"]
        while True:
            op = call("GET", f"/api/v1/operations/{op_id}")
            if op["status"] != "running":
                break
            time.sleep(0.002)
        ok = op["status"] == "succeeded"
    except Exception as e:  # a refused or failed swap counts as failed
        print(f"swap error: {e}", file=sys.stderr)
        ok = False
    done += 1
    failed += 0 if ok else 1
    longest = max(longest, time.monotonic() - t0)
    if rate > 0:
        pause = t0 + 1.0 / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
elapsed = time.monotonic() - start
print(f"SWAPS done={done} failed={failed} seconds={elapsed:.3f} longest_ms={longest * 1000:.1f}")
