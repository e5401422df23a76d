#!/usr/bin/env python3
"""Draw the soak's table (soak.sh's soak.tsv) as a PNG: RSS and open file
descriptors, the good clients' requests per second and errors, and the swaps.

usage: soak_plot.py TSV PNG RATE HOSTILE
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

tsv, png, rate, hostile = sys.argv[1:5]
rows = list(csv.DictReader(open(tsv), delimiter="\t"))
t = [int(r["t_s"]) / 60 for r in rows]
rss = [float(r["rss_mib"]) for r in rows]
fds = [int(r["fds"]) for r in rows]
conns = [int(r["client_conns"]) for r in rows]
swaps = [int(r["swaps"]) for r in rows]
rps, errs = [0.0], [0]
for prev, r in zip(rows, rows[1:]):
    dt = max(int(r["t_s"]) - int(prev["t_s"]), 1)
    rps.append(int(r["good_requests"]) / dt)
    errs.append(errs[-1] + int(r["good_errors"]))

fig, axes = plt.subplots(4, 1, sharex=True, figsize=(9, 9))
axes[0].plot(t, rss, color="tab:blue")
axes[0].set_ylabel("RSS MiB")
axes[0].set_ylim(bottom=0)
axes[1].plot(t, fds, color="tab:orange", label="file descriptors")
axes[1].plot(t, conns, color="tab:gray", label="client connections", linewidth=0.8)
axes[1].set_ylabel("count")
axes[1].set_ylim(bottom=0)
axes[1].legend(loc="lower right")
axes[2].plot(t, rps, color="tab:green", label="good req/s")
axes[2].set_ylabel("good req/s")
axes[2].set_ylim(bottom=0)
ax = axes[2].twinx()
ax.plot(t, errs, color="tab:red", label="good-client errors (total)")
ax.set_ylabel("errors", color="tab:red")
ax.set_ylim(bottom=0, top=max(max(errs), 1) * 1.2)
axes[3].plot(t, swaps, color="tab:purple")
axes[3].set_ylabel("swaps")
axes[3].set_xlabel("minutes")
fig.suptitle(
    f"slotproxy soak: {rate} req/s of good clients, a swap a second, "
    f"hostile idle/slowloris/short-body {hostile}"
)
fig.tight_layout()
fig.savefig(png, dpi=80)
