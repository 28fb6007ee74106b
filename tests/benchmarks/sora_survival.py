"""Which ranks does Sparse LoRA keep: the ones the task needs, or the ones whose gate was drawn large?

    python -m tests.benchmarks.sora_survival --glue-dir DIR --work-dir DIR   # after sora_study, same folders

For every stored cell of the sparsity study (tests/benchmarks/sora_study.py) whose run directory is still
in --work-dir, this runs the cell's own command for one step with a checkpoint (so the gates g0 and the
A rows are the run's own at step 0, to within one step), matches each exported row of A to the row of
A it started as (the largest cosine; a trained row keeps a cosine of 0.1-0.4 with where it started, a
random one about 0.05), and counts how many of the n kept ranks are among the n largest |g0| of the
model. Chance is n² / (number of gates). Used by hand only: the tests never download anything.
"""

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.benchmarks import glue_cells
from tests.benchmarks.glue_recipe import build_glue, placed
from tests.benchmarks.real_encoder import ONE_THREAD, ROOT, fetch_minilm, write_between_markers
from tests.benchmarks.sora_study import STUDY_CELLS, study_cells

GATE = re.compile(r"param\.layers\.(\d+)\.attention\.(query|value)\.gate")


def start_of(argv: list[str], places: dict, out: Path) -> dict[str, torch.Tensor]:
    """The run's trainable tensors after its first step: its command with --max-steps 1 and a checkpoint."""
    if not (out / "checkpoints").is_dir():
        one = list(argv)
        one[one.index("--max-steps") + 1], one[one.index("--save-every") + 1] = "1", "1"
        cmd = [sys.executable, "train.py", *placed(one, places), "--output-dir", str(out)]
        subprocess.run(cmd, cwd=ROOT, env=ONE_THREAD, check=True, capture_output=True)
    (step,) = sorted((out / "checkpoints").iterdir())
    return load_file(step / "state.safetensors")


def survival(start: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor]) -> dict:
    """Kept ranks against |g0|: how many of the n kept are among the n largest |g0|, and the median |g0|."""
    gates, kept, cosines = [], [], []
    for key, g0 in start.items():
        match = GATE.fullmatch(key)
        if not match:
            continue
        layer, module = match.groups()
        a0 = start[key.replace(".gate", ".lora_A")].float()  # (r, in): A at step 0
        names = [k for k in adapter if f"layer.{layer}.attention." in k and f".{module}.lora_A" in k]
        mask = torch.zeros(len(g0), dtype=torch.bool)
        if names:  # a module that kept no rank is not in the file
            a1 = adapter[names[0]].float()  # (k, in): the kept rows, trained
            cos = F.normalize(a1, dim=1) @ F.normalize(a0, dim=1).T  # (k, r)
            mask[cos.argmax(dim=1)] = True
            cosines += cos.max(dim=1).values.tolist()
        gates.append(g0.abs())
        kept.append(mask)
    g, kept = torch.cat(gates), torch.cat(kept)
    n = int(kept.sum())
    largest = g.argsort(descending=True)[:n]  # the n largest |g0|
    return {
        "kept": n,
        "gates": len(g),
        "among_largest": int(kept[largest].sum()),  # of the n kept ranks, how many started among the n largest
        "chance": n * n / len(g),
        "g0_kept": g[kept].median().item(),
        "g0_cut": g[~kept].median().item(),
        "cosine": statistics.median(cosines),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", type=Path, required=True, help="folder holding glue-stsb/, glue-cola/, ...")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/minibert-glue-suite"),
                   help="sora_study's --work-dir: its runs/ hold the trained adapters")  # fmt: skip
    args = p.parse_args()
    work = args.work_dir
    places = {
        "{GLUE}": build_glue(args.glue_dir, work / "glue"),
        "{MODEL}": fetch_minilm(work),
        "{CACHE}": work / "cache",
    }
    head = "| rule | task | seed | kept | of them among the largest \\|g0\\| | chance | median \\|g0\\| kept / cut |"
    lines = [head, "|---" * 7 + "|"]
    for key, cell in sorted(study_cells(STUDY_CELLS).items()):
        variant, task, _, seed = key
        run = work / "runs" / glue_cells.name(*key)
        if "paper" not in cell["argv"] or not (run / "adapter_model.safetensors").is_file():
            continue
        start = start_of(cell["argv"], places, work / "sora-start" / run.name)
        s = survival(start, load_file(run / "adapter_model.safetensors"))
        lines.append(f"| {variant} | {task} | {seed} | {s['kept']} of {s['gates']} | {s['among_largest']} | "
                     f"{s['chance']:.1f} | {s['g0_kept']:.2f} / {s['g0_cut']:.2f} |")  # fmt: skip
        print(lines[-1], f"(matched rows' cosine, median {s['cosine']:.2f})", flush=True)
    write_between_markers(ROOT / "docs" / "sparse_lora.md", "sora-survival", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
