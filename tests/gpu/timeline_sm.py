#!/usr/bin/env python3
"""Per-multiprocessor view of a decode timeline (bench_cuda --figures timeline --timeline-csv FILE).

For each kind of launch of a layer, every block's exit is taken from the launch's first wait return;
the means per multiprocessor show whether some multiprocessors finish the same work consistently
later than others, and the correlation between launches whether the same ones do in each.

    python3 tests/gpu/timeline_sm.py tl.csv[.gz] [--after moe_router]
    python3 tests/gpu/timeline_sm.py tl.csv[.gz] --blocks attn_split --modulo 8

A launch is named by its kind and block count; --after K keeps only launches that follow one of
kind K (the gate/up product follows the router, the down product another small-path launch).
--blocks K gives instead, for launches of kind K, each block index's (modulo M: a cluster's rank
when the cluster is the grid's first dimension) mean marks and exit from the block's own wait.
Only the standard library: it runs on the GPU machine and here alike.
"""
import argparse
import collections
import csv
import gzip
import statistics


def launches_of(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("grid", "block", "sm", "t_enter", "t_wait", "t_exit", "t_mark0", "t_mark1"):
            r[k] = int(r[k])
    by_kind = collections.defaultdict(list)
    for r in rows:
        by_kind[(r["kind"], r["grid"])].append(r)
    launches = []
    for key, blocks in by_kind.items():   # a launch's blocks are the next `grid` to enter
        blocks.sort(key=lambda r: r["t_enter"])
        for i in range(0, len(blocks), key[1]):
            launches.append((key, blocks[i:i + key[1]]))
    launches.sort(key=lambda x: x[1][0]["t_enter"])
    return launches


def exits_by_sm(group):
    per_sm = collections.defaultdict(list)
    for blocks in group:
        w0 = min(r["t_wait"] for r in blocks if r["t_wait"]) if any(r["t_wait"] for r in blocks) else 0
        for r in blocks:
            per_sm[r["sm"]].append((r["t_exit"] - w0) / 1000.0)
    return {sm: statistics.mean(v) for sm, v in per_sm.items()}


def by_block_index(launches, kind, modulo):
    """Mean mark0, mark1 and exit (us from the block's own wait) per block index modulo `modulo`."""
    cols = collections.defaultdict(lambda: collections.defaultdict(list))
    for key, blocks in launches:
        if key[0] != kind:
            continue
        for r in blocks:
            if not r["t_wait"]:
                continue
            z = r["block"] % modulo
            for name in ("t_mark0", "t_mark1", "t_exit"):
                if r[name]:
                    cols[z][name].append((r[name] - r["t_wait"]) / 1000.0)
    return cols


def corr(x, y):
    keys = sorted(set(x) & set(y))
    if len(keys) < 3:
        return float("nan")
    xs, ys = [x[k] for k in keys], [y[k] for k in keys]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    num = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    den = (sum((a - mx) ** 2 for a in xs) * sum((b - my) ** 2 for b in ys)) ** 0.5
    return num / den if den else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--after", default=None, help="only launches that follow a launch of this kind")
    ap.add_argument("--blocks", default=None, help="per block index instead, for launches of this kind")
    ap.add_argument("--modulo", type=int, default=8, help="with --blocks: block index modulo this")
    args = ap.parse_args()
    launches = launches_of(args.csv)
    if args.blocks:
        cols = by_block_index(launches, args.blocks, args.modulo)
        print(f"{args.blocks}: means per block index mod {args.modulo}, us from the block's own wait (-: never reached)")
        print("  index  blocks   mark0   mark1    exit")
        for z in sorted(cols):
            c = cols[z]
            cell = lambda n: f"{statistics.mean(c[n]):7.2f}" if c[n] else "      -"
            print(f"  {z:5d} {len(c['t_exit']):7d} {cell('t_mark0')} {cell('t_mark1')} {cell('t_exit')}")
        return
    groups = collections.defaultdict(list)
    for i, (key, blocks) in enumerate(launches):
        prev = launches[i - 1][0][0] if i else "-"
        groups[(key[0], key[1], prev)].append(blocks)
    views = {}
    for (kind, grid, prev), group in sorted(groups.items(), key=lambda x: -len(x[1])):
        if len(group) < 10 or (args.after and prev != args.after):
            continue
        views[(kind, grid, prev)] = exits_by_sm(group)
    for key, v in views.items():
        vals = sorted(v.values())
        hist = collections.Counter(round(x * 2) / 2 for x in vals)
        print(f"{key[0]} ({key[1]} blocks, after {key[2]}): {len(vals)} multiprocessors, block exits "
              f"{vals[0]:.1f}..{vals[-1]:.1f} us after the wait (mean per multiprocessor)")
        print("  histogram (us: multiprocessors): " + ", ".join(f"{k}: {n}" for k, n in sorted(hist.items())))
        slow = sorted(sm for sm, x in v.items() if x > statistics.mean(vals) + statistics.pstdev(vals))
        print(f"  more than one deviation late: {slow}")
    keys = list(views)
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            print(f"correlation {keys[i][0]}/{keys[i][1]} ~ {keys[j][0]}/{keys[j][1]}: {corr(views[keys[i]], views[keys[j]]):+.2f}")


if __name__ == "__main__":
    main()
