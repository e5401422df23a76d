"""h2load's output and per-request log as the RESULT line report.lua prints
for wrk, so run.sh and summarize.py treat both alike.

usage: h2report.py H2LOAD_OUTPUT H2LOAD_LOG_FILE
The log (h2load --log-file) has one line per request, tab-separated: start
time (µs since the epoch), status, microseconds until the end of the response.
"""

import re
import sys

out, log = open(sys.argv[1]).read(), sys.argv[2]
durations, non2xx = [], 0
for line in open(log):
    parts = line.split("\t")
    if len(parts) < 3:
        continue
    status, us = int(parts[1]), int(parts[2])
    durations.append(us)
    if not 200 <= status < 300:
        non2xx += 1
durations.sort()


def pct(p):
    if not durations:
        return 0
    return durations[min(len(durations) - 1, int(len(durations) * p / 100))]


finished = re.search(r"finished in ([\d.]+)(ms|s)", out)
reqs = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
if not finished or not reqs:
    sys.exit(f"h2load printed no result:\n{out}")
seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
succeeded, failed, errored, timeout = (int(g) for g in reqs.groups())
print(
    f"RESULT requests={succeeded} seconds={seconds:.3f} p50_us={pct(50)} p99_us={pct(99)} "
    f"p999_us={pct(99.9)} socket_errors={errored + timeout} non2xx={non2xx} "
    f"err_connect=0 err_read={errored} err_write=0 err_timeout={timeout}"
)
