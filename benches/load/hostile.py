#!/usr/bin/env python3
"""The hostile mix of the soak (benches/load/soak.sh): clients that try to
cost the proxy memory and descriptors while well-behaved clients use it.

usage: hostile.py PORT SECONDS [IDLE SLOW SHORT]

From source address 127.0.0.2 (so a per-client limit could tell them apart
from the good clients on 127.0.0.1), it keeps, for SECONDS:

* IDLE (default 2000) idle keep-alive connections: one GET each, answer read,
  then silence; reopened as soon as the proxy closes one (keep-alive time-out);
* SLOW (default 200) slowloris connections: a request header trickled one
  short header line every 2 s, never finished; reopened when the proxy
  answers (408 after the header time-out, or 431) or closes;
* SHORT (default 100) short bodies: `POST` with `Content-Length: 100` and 2
  bytes of body, then silence until the proxy answers (408 after the body
  time-out) or closes; then again on a new connection.

Every few seconds and at the end it prints one machine-readable line:
HOSTILE t=... idle_open=... slow_open=... short_open=... idle_closed=...
statuses=... (statuses: what the proxy answered the hostile requests).
"""

import asyncio
import collections
import resource
import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
n_idle, n_slow, n_short = (int(a) for a in (sys.argv[3:6] + ["2000", "200", "100"][len(sys.argv[3:6]):]))
SOURCE = ("127.0.0.2", 0)
GET = b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n"
SHORT = b"POST /upload HTTP/1.1\r\nHost: bench.local\r\nContent-Length: 100\r\n\r\nab"

open_now = collections.Counter()
events = collections.Counter()
statuses = collections.Counter()
deadline = time.monotonic() + seconds


async def connect():
    return await asyncio.open_connection("127.0.0.1", port, local_addr=SOURCE)


async def status_of(reader):
    """The status of the next response, or None when the connection ends
    without one. Reads (and discards) the body by Content-Length."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    try:
        await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    return int(head[9:12])


async def until_closed(reader):
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass


async def forever(kind, one):
    """Run `one` again and again until the deadline; count errors of our own."""
    while time.monotonic() < deadline:
        try:
            await one()
        except (OSError, asyncio.TimeoutError) as e:
            events[f"{kind}_connect_error"] += 1
            if events[f"{kind}_connect_error"] <= 3:
                print(f"hostile {kind}: {e}", file=sys.stderr)
            await asyncio.sleep(1)


async def idle_one():
    reader, writer = await connect()
    open_now["idle"] += 1
    try:
        writer.write(GET)
        statuses[f"idle:{await status_of(reader)}"] += 1
        # silence; the proxy closes us after its keep-alive time-out
        left = deadline - time.monotonic()
        try:
            await asyncio.wait_for(until_closed(reader), max(left, 0))
            events["idle_closed_by_proxy"] += 1
        except asyncio.TimeoutError:
            pass
    finally:
        open_now["idle"] -= 1
        writer.close()


async def slow_one():
    reader, writer = await connect()
    open_now["slow"] += 1
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench.local\r\n")
        answered = asyncio.ensure_future(status_of(reader))
        i = 0
        while not answered.done() and time.monotonic() < deadline:
            try:
                writer.write(b"X-Slow-%d: %s\r\n" % (i, b"a" * 20))
                await writer.drain()
            except ConnectionError:
                break
            i += 1
            await asyncio.wait([answered], timeout=2)
        if answered.done():
            statuses[f"slow:{answered.result()}"] += 1
        else:
            answered.cancel()
    finally:
        open_now["slow"] -= 1
        writer.close()


async def short_one():
    reader, writer = await connect()
    open_now["short"] += 1
    try:
        writer.write(SHORT)
        left = deadline - time.monotonic()
        try:
            statuses[f"short:{await asyncio.wait_for(status_of(reader), max(left, 0))}"] += 1
        except asyncio.TimeoutError:
            pass
    finally:
        open_now["short"] -= 1
        writer.close()


def report():
    s = ",".join(f"{k}={v}" for k, v in sorted(statuses.items())) or "-"
    e = ",".join(f"{k}={v}" for k, v in sorted(events.items())) or "-"
    print(
        f"HOSTILE t={time.monotonic() - start:.0f} idle_open={open_now['idle']} "
        f"slow_open={open_now['slow']} short_open={open_now['short']} "
        f"events={e} statuses={s}",
        flush=True,
    )


async def reporter():
    while time.monotonic() < deadline:
        await asyncio.sleep(min(10, max(deadline - time.monotonic(), 0)))
        report()


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tasks = [reporter()]
    tasks += [forever("idle", idle_one) for _ in range(n_idle)]
    tasks += [forever("slow", slow_one) for _ in range(n_slow)]
    tasks += [forever("short", short_one) for _ in range(n_short)]
    await asyncio.gather(*tasks)


start = time.monotonic()
asyncio.run(main())
report()
