"""Turn run.sh's per-measurement lines into the tables BENCHMARKS.md shows.

Each figure is the median over the rounds; errors are summed.
"""

import statistics
import sys
from collections import defaultdict

path, duration, rounds, conns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
runs = defaultdict(list)
order = []
for line in open(path):
    _round, name, rest = line.rstrip("\n").split("\t")
    fields = dict(kv.split("=") for kv in rest.split()[1:])
    runs[name].append({k: float(v) for k, v in fields.items()})
    if name not in order:
        order.append(name)


def med(name, key):
    return statistics.median(r[key] for r in runs[name])


def rps(name):
    return statistics.median(r["requests"] / r["seconds"] for r in runs[name])


def cpu_share(name):
    """CPU time of the server under test over wall time: under 100% means it
    was not the bottleneck, or something else on its core took turns."""
    return statistics.median(r["cpu_us"] / 1e4 / r["seconds"] for r in runs[name])


def us_per_req(name):
    """Server CPU per request: the cost figure least moved by a busy machine."""
    return statistics.median(r["cpu_us"] / r["requests"] for r in runs[name])


def ms(us):
    return f"{us / 1000:.2f}"


print()
print(f"{rounds} rounds x {duration}s, {conns} connections, medians over rounds")
print()
print("| target | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU | CPU µs/req |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in order:
    errors = int(sum(r["socket_errors"] + r["non2xx"] for r in runs[name]))
    print(
        f"| {name} | {rps(name):,.0f} | {ms(med(name, 'p50_us'))} | {ms(med(name, 'p99_us'))} "
        f"| {ms(med(name, 'p999_us'))} | {errors} | {cpu_share(name):.0f}% | {us_per_req(name):.1f} |"
    )

print()
print("| ratio | req/s | p99 | CPU µs/req |")
print("| --- | ---: | ---: | ---: |")
pairs = [
    ("slotproxy", "nginx"),
    ("slotproxy-pinned", "nginx-pinned"),
    ("slotproxy", "haproxy"),
    ("slotproxy-pinned", "haproxy-pinned"),
    ("slotproxy-post", "haproxy-post"),
    ("slotproxy-https", "nginx-https"),
    ("slotproxy-https", "haproxy-https"),
    ("slotproxy-h2", "nginx-h2"),
    ("slotproxy-h2", "haproxy-h2"),
    ("slotproxy-h2c", "nginx-h2c"),
    ("slotproxy-h2c", "haproxy-h2c"),
    ("slotproxy-shadow", "slotproxy"),
    ("slotproxy", "direct"),
    ("slotproxy", "bare-pingora"),
    ("slotproxy", "floor-forward"),
    ("slotproxy", "slotproxy-before"),
    ("slotproxy-pinned", "slotproxy-before"),
    ("slotproxy-pinned", "bare-pingora"),
    ("bare-pingora", "nginx"),
    ("floor-memory", "nginx-memory"),
    ("floor-forward", "nginx"),
    ("bare-pingora", "floor-forward"),
    ("nginx", "direct"),
    ("haproxy", "direct"),
]
for a, b in pairs:
    if a in runs and b in runs:
        print(
            f"| {a} / {b} | {rps(a) / rps(b):.2f} | {med(a, 'p99_us') / med(b, 'p99_us'):.2f} "
            f"| {us_per_req(a) / us_per_req(b):.2f} |"
        )
