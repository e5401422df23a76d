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


def ms(us):
    return f"{us / 1000:.2f}"


print()
print(f"{rounds} rounds x {duration}s, {conns} connections, medians over rounds")
print()
print("| target | req/s | p50 ms | p99 ms | p99.9 ms | errors | proxy CPU |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for name in order:
    errors = int(sum(r["socket_errors"] + r["non2xx"] for r in runs[name]))
    print(
        f"| {name} | {rps(name):,.0f} | {ms(med(name, 'p50_us'))} | {ms(med(name, 'p99_us'))} "
        f"| {ms(med(name, 'p999_us'))} | {errors} | {med(name, 'cpu_pct'):.0f}% |"
    )

print()
print("| ratio | req/s | p99 |")
print("| --- | ---: | ---: |")
pairs = [
    ("slotproxy", "nginx"),
    ("slotproxy-pinned", "nginx-pinned"),
    ("slotproxy", "haproxy"),
    ("slotproxy-pinned", "haproxy-pinned"),
    ("slotproxy", "direct"),
    ("slotproxy", "bare-pingora"),
    ("slotproxy-pinned", "bare-pingora"),
    ("bare-pingora", "nginx"),
    ("nginx", "direct"),
    ("haproxy", "direct"),
]
for a, b in pairs:
    if a in runs and b in runs:
        print(f"| {a} / {b} | {rps(a) / rps(b):.2f} | {med(a, 'p99_us') / med(b, 'p99_us'):.2f} |")
