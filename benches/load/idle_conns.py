"""Hold COUNT idle keep-alive connections open to a server and report how its
resident memory grows.

usage: idle_conns.py NAME PORT COUNT PID...

Each connection sends one GET (so the server has parsed a request and keeps
the connection for the next), then stays idle. RSS is summed over the PIDs
and their children (nginx's master and worker).
"""

import asyncio
import os
import resource
import sys

name, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pids = [int(p) for p in sys.argv[4:]]
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: keep-alive\r\n\r\n"


def rss_kb():
    total = 0
    seen = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except FileNotFoundError:
            pass
    return total


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.split(b"\r\n")[0].decode())
    await reader.readexactly(length)


async def open_one(sem):
    async with sem:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await read_response(reader)
        return reader, writer


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < count + 100:
        sys.exit(f"ulimit -n is {hard}; {count} connections need more")
    before = rss_kb()
    sem = asyncio.Semaphore(256)
    conns = await asyncio.gather(*(open_one(sem) for _ in range(count)))
    await asyncio.sleep(2)
    held = rss_kb()
    # every connection must still be usable: ask again on a sample
    for reader, writer in conns[:: max(1, count // 100)]:
        writer.write(REQUEST)
        await read_response(reader)
    for _, writer in conns:
        writer.close()
    await asyncio.sleep(2)
    after = rss_kb()
    print(
        f"| {name} | {count:,} | {before / 1024:.1f} | {held / 1024:.1f} | "
        f"{(held - before) / count:.1f} | {after / 1024:.1f} |"
    )


asyncio.run(main())
