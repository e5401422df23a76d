"""Check that a target does slotproxy's job before it is measured.

usage: sanity.py NAME PORT [--direct]

Cookieless requests must all answer 200 with a pin cookie that matches the
slot the upstream saw, and land on staging about 10% of the time; pinned
requests must reach staging and get no new cookie. Keep-alive, so it is quick.
"""

import http.client
import re
import sys

name, port = sys.argv[1], int(sys.argv[2])
direct = "--direct" in sys.argv
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)


def get(cookie=None):
    headers = {"Host": "bench.local"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("GET", "/sanity", headers=headers)
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("Set-Cookie"), r.getheader("X-Seen-Slot")


def fail(msg):
    print(f"sanity check of {name} failed: {msg}", file=sys.stderr)
    sys.exit(1)


n, staging = 400, 0
for _ in range(n):
    status, set_cookie, seen = get()
    if status != 200:
        fail(f"status {status}")
    if direct:
        continue
    m = re.match(r"x-ms-routing-name=([a-z]+);", set_cookie or "")
    if not m:
        fail(f"cookieless request got Set-Cookie {set_cookie!r}")
    want = "production" if m.group(1) == "self" else m.group(1)
    if seen != want:
        fail(f"cookie pins {m.group(1)} but upstream saw X-Slot-Name {seen!r}")
    staging += seen == "staging"
if not direct:
    if not 0.03 * n <= staging <= 0.2 * n:
        fail(f"{staging} of {n} cookieless requests went to staging, expected about 10%")
    for _ in range(50):
        status, set_cookie, seen = get("session=8f14e45fceea167a; x-ms-routing-name=staging")
        if status != 200 or set_cookie or seen != "staging":
            fail(f"pinned request: status {status}, Set-Cookie {set_cookie!r}, slot {seen!r}")
    print(f"   {name}: ok ({staging}/{n} cookieless to staging; pins honoured, no re-set)", file=sys.stderr)
else:
    print(f"   {name}: ok", file=sys.stderr)
