"""Sparse LoRA's gates: which ranks each layer kept (SoRA, Ding et al., EMNLP 2023, §3:
the gated forward and its proximal step).

A Sparse LoRA run learns a gate per rank, g in R^r per module, and the proximal step sets a gate exactly
to zero when its rank is not worth λ. What survives is the rank the task asked for, per module:
nnz(g). metrics.json keeps it per module (`sparse_lora_gates`: module, rank, r), and the saved adapter is
the pruned LoRA, one `rank_pattern` entry per module. The map here is that rank as a layers x modules grid.
"""

import re


def gate_grid(metrics: dict) -> tuple[list[int], list[str], list[list[int | None]]]:
    """(layers, module kinds, rank[layer][kind]) from a Sparse LoRA run's metrics.json; None where a kind
    was not adapted in that layer."""
    rows = metrics.get("sparse_lora_gates")
    if not rows:
        return [], [], []
    found = {}
    for row in rows:
        m = re.search(r"layers?\.(\d+)\.(.+)$", row["module"])
        layer, kind = (int(m.group(1)), m.group(2).split(".")[-1]) if m else (0, row["module"])
        found[layer, kind] = row["rank"]
    layers = sorted({layer for layer, _ in found})
    kinds = sorted({kind for _, kind in found})
    return layers, kinds, [[found.get((layer, kind)) for kind in kinds] for layer in layers]
