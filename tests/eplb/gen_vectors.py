#!/usr/bin/env python3
"""Reference vectors for moetrace's EPLB planner (read by tests/test_eplb.c).

The planner is DeepSeek's Expert-Parallel Load Balancer (https://github.com/deepseek-ai/EPLB,
eplb.py). This script re-implements that published algorithm in torch, step for step, with torch's
own float32 arithmetic, sort and argmax, so it serves as an independent reference for the C code.

Inputs are integer loads, distinct within a layer, with per-layer totals below 2**24 (so every group
sum is exact in float32 whatever the summation order). A case is redrawn when any sort the algorithm
performs meets equal keys belonging to different logical experts, or an argmax meets equal values:
on such inputs the output would depend on tie rules. Every case is also run with a stable and an
unstable sort and both must agree on physical_to_logical_map and replica counts.

usage: python3 gen_vectors.py OUT.json
"""
import json
import random
import sys

import torch

I64 = torch.int64


class TieError(Exception):
    pass


def invert(perm):
    """Inverse of each row of a [X, n] permutation."""
    inv = torch.empty_like(perm)
    src = torch.arange(perm.size(1), dtype=I64).expand(perm.shape)
    inv.scatter_(1, perm, src)
    return inv


def packing(weight, num_packs, stable, owner=None, strict=True):
    """Balanced packing of each row's n items into num_packs packs of n/num_packs items.

    Items are visited by descending weight; each goes to the lightest pack that still has room
    (the first such pack when loads are equal). owner[X, n] (optional) names the logical identity
    of each item: with strict, equal weights of different owners (an ambiguous order) raise TieError."""
    rows, n = weight.shape
    assert n % num_packs == 0
    per_pack = n // num_packs
    if per_pack == 1:
        return (torch.arange(n, dtype=I64).expand(rows, n).clone(),
                torch.zeros(rows, n, dtype=I64))
    for r in range(rows if strict else 0):
        seen = {}
        ids = owner[r].tolist() if owner is not None else list(range(n))
        for v, o in zip(weight[r].tolist(), ids):
            if seen.setdefault(v, o) != o:
                raise TieError("equal sort keys of different experts")
    order = torch.sort(weight, dim=-1, descending=True, stable=stable).indices
    pack = torch.full((rows, n), -1, dtype=I64)
    rank = torch.full((rows, n), -1, dtype=I64)
    for r in range(rows):
        load = [torch.zeros((), dtype=torch.float32) for _ in range(num_packs)]
        used = [0] * num_packs
        for item in order[r].tolist():
            best = None
            for p in range(num_packs):
                if used[p] < per_pack and (best is None or bool(load[p] < load[best])):
                    best = p
            pack[r, item] = best
            rank[r, item] = used[best]
            load[best] = load[best] + weight[r, item]
            used[best] += 1
    return pack, rank


def replicate(weight, num_phy, strict=True):
    """Give num_phy slots to the row's experts: one each, then the rest one at a time to the expert
    with the largest float32 weight / replica count."""
    rows, num_log = weight.shape
    assert num_phy >= num_log
    phy2log = torch.arange(num_phy, dtype=I64).repeat(rows, 1)
    rank = torch.zeros(rows, num_phy, dtype=I64)
    cnt = torch.ones(rows, num_log, dtype=I64)
    every = torch.arange(rows, dtype=I64)
    for i in range(num_log, num_phy):
        per_replica = weight / cnt
        top = per_replica.max(dim=-1)
        if strict and ((per_replica == top.values.unsqueeze(-1)).sum(-1) > 1).any():
            raise TieError("argmax tie in replication")
        phy2log[:, i] = top.indices
        rank[:, i] = cnt[every, top.indices]
        cnt[every, top.indices] += 1
    return phy2log, rank, cnt


def hierarchical(weight, num_phy, num_groups, num_nodes, num_gpus, stable, strict):
    layers, num_log = weight.shape
    assert num_log % num_groups == 0 and num_groups % num_nodes == 0
    assert num_gpus % num_nodes == 0 and num_phy % num_gpus == 0
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    per_gpu = num_phy // num_gpus
    log_per_node = num_log // num_nodes

    # 1. groups onto nodes, by group load
    group_load = weight.view(layers, num_groups, group_size).sum(-1)
    gpack, grank = packing(group_load, num_nodes, stable, strict=strict)
    first = (gpack * groups_per_node + grank) * group_size
    log2mlog = (first.unsqueeze(-1) + torch.arange(group_size, dtype=I64)).flatten(-2)
    mlog2log = invert(log2mlog)

    # 2. replicas within each node
    mlog_load = weight.gather(-1, mlog2log).view(-1, log_per_node)
    phy2mlog, phyrank, mlogcnt = replicate(mlog_load, num_phy // num_nodes, strict)

    # 3. each node's replicas onto its GPUs, by load per replica
    phy_load = (mlog_load / mlogcnt).gather(-1, phy2mlog)
    ppack, prank = packing(phy_load, num_gpus // num_nodes, stable, owner=phy2mlog, strict=strict)
    pphy2phy = invert(ppack * per_gpu + prank)

    pphy2mlog = phy2mlog.gather(-1, pphy2phy).view(layers, num_nodes, -1)
    offset = torch.arange(num_nodes, dtype=I64).view(1, -1, 1) * log_per_node
    pphy2log = mlog2log.gather(-1, (pphy2mlog + offset).flatten(-2))
    pphyrank = phyrank.gather(-1, pphy2phy).view(layers, -1)
    logcnt = mlogcnt.view(layers, -1).gather(-1, log2mlog)
    return pphy2log, pphyrank, logcnt


def rebalance(weight, num_replicas, num_groups, num_nodes, num_gpus, stable=False, strict=True):
    layers, num_log = weight.shape
    weight = weight.float()
    if num_groups % num_nodes == 0:
        phy2log, rank, logcnt = hierarchical(weight, num_replicas, num_groups, num_nodes, num_gpus, stable, strict)
    else:
        phy2log, rank, logcnt = hierarchical(weight, num_replicas, 1, 1, num_gpus, stable, strict)
    width = int(logcnt.max().item())
    log2phy = torch.full((layers, num_log, width), -1, dtype=I64)
    log2phy.view(layers, -1).scatter_(
        -1, phy2log * width + rank, torch.arange(num_replicas, dtype=I64).expand(layers, -1).clone())
    return phy2log, log2phy, logcnt


EXAMPLE_WEIGHT = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                  [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
EXAMPLE_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                   [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]

# name, experts, replicas, groups, nodes, gpus, layers, one zero load per layer
CASES = [
    ("hier_e12_like_example", 12, 16, 4, 2, 8, 3, False),
    ("hier_e8_no_redundancy", 8, 8, 2, 1, 4, 3, False),
    ("hier_e8_one_gpu", 8, 12, 2, 1, 1, 2, False),
    ("hier_e16_r24", 16, 24, 4, 2, 4, 3, True),
    ("hier_e32_r48_n4", 32, 48, 8, 4, 8, 2, False),
    ("hier_e64_r80", 64, 80, 8, 2, 16, 3, False),
    ("hier_e64_groups_eq_nodes", 64, 64, 8, 8, 8, 2, False),
    ("hier_e96_r128", 96, 128, 4, 2, 32, 2, False),
    ("hier_e48_one_slot_per_gpu", 48, 64, 4, 4, 64, 2, False),
    ("hier_e128_r160", 128, 160, 8, 4, 32, 2, True),
    ("hier_e160_r192", 160, 192, 8, 4, 32, 2, False),
    ("hier_e256_r288_deepseek", 256, 288, 8, 4, 32, 4, False),
    ("hier_e256_r320_g64", 256, 320, 8, 8, 64, 2, False),
    ("hier_e256_r256_one_node", 256, 256, 8, 1, 64, 2, False),
    ("glob_e12_g3_n2", 12, 16, 3, 2, 8, 3, False),
    ("glob_e8_g1_n2", 8, 16, 1, 2, 4, 3, True),
    ("glob_e32_no_redundancy", 32, 32, 1, 2, 8, 2, False),
    ("glob_e60_g5_n2", 60, 64, 5, 2, 8, 2, False),
    ("glob_e64_r96_n4", 64, 96, 1, 4, 16, 4, False),
    ("glob_e128_r192_g64", 128, 192, 1, 8, 64, 2, False),
    ("glob_e240_g3_n2", 240, 256, 3, 2, 16, 2, False),
    ("glob_e256_r288_n4", 256, 288, 1, 4, 32, 2, False),
]


def draw_loads(rng, layers, experts, with_zero):
    """Skewed integer loads, distinct within a layer, total below 2**24."""
    cap = (1 << 24) // experts - 1
    rows = []
    for _ in range(layers):
        row, seen = [], set()
        if with_zero:
            row.append(0)
            seen.add(0)
        while len(row) < experts:
            v = int(min(cap, max(1, round(rng.lognormvariate(0.0, 1.0) * cap / 8))))
            if v not in seen:
                seen.add(v)
                row.append(v)
        rng.shuffle(row)
        rows.append(row)
    return rows


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_vectors.py OUT.json")
    ex_phy2log, _, _ = rebalance(torch.tensor(EXAMPLE_WEIGHT), 16, 4, 2, 8, strict=False)
    example_ok = ex_phy2log.tolist() == EXAMPLE_PHY2LOG
    print("published example reproduced:", example_ok, flush=True)
    if not example_ok:
        print("  got", ex_phy2log.tolist(), flush=True)
    rng = random.Random(20260601)
    out = []
    for name, E, R, G, N, M, L, zero in CASES:
        for attempt in range(100):
            loads = draw_loads(rng, L, E, zero)
            w = torch.tensor(loads, dtype=I64)
            try:
                phy2log, log2phy, logcnt = rebalance(w, R, G, N, M, stable=True)
                phy2log_u, _, logcnt_u = rebalance(w, R, G, N, M, stable=False)
            except TieError:
                continue
            assert phy2log.tolist() == phy2log_u.tolist() and logcnt.tolist() == logcnt_u.tolist()
            break
        else:
            sys.exit(f"{name}: no tie-free draw")
        policy = "hierarchical" if G % N == 0 else "global"
        out.append({"name": name, "policy": policy, "num_experts": E, "num_replicas": R,
                    "num_groups": G, "num_nodes": N, "num_gpus": M, "weight": loads,
                    "phy2log": phy2log.tolist(), "logcnt": logcnt.tolist(), "log2phy": log2phy.tolist()})
        print(f"{name}: {policy}, {L} layers, {attempt + 1} draw(s)", flush=True)
    doc = {"generator": "tests/eplb/gen_vectors.py", "torch": torch.__version__,
           "published_example_reproduced": example_ok, "cases": out}
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(out)} cases to {sys.argv[1]}", flush=True)
    return 0 if example_ok else 1


if __name__ == "__main__":
    sys.exit(main())
