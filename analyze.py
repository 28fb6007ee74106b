"""What each method learned: the papers' own analyses, made from your runs.

    python analyze.py runs/lora-sst2-bert-base-uncased runs/dora-sst2-bert-base-uncased runs/full-sst2-bert-base-uncased
    python analyze.py runs/lora-r8 runs/lora-r64 --output-dir analysis-lora     # + subspace overlap of the two

Writes to --output-dir (default `analysis-out`, in the current folder) a markdown report, analysis.md, and
one figure per analysis that the runs allow (the package analysis/ holds the maths, one module each):

  spectrum.png      singular values of ΔW per run, with rank, effective rank and stable rank (LoRA §7,
                    HiRA §3): LoRA's rank is at most r, HiRA's and full fine-tuning's need not be
  subspace.png      φ(A_1, A_2, i, j) of every pair of LoRA-family runs (LoRA §7.2, Figs. 3-4), on the first
                    and the last adapted layer, beside φ of the same runs' initial A's (rebuilt from their
                    seed): runs that share a seed share their A at step 0
  amplification     ||U^T W V||_F for ΔW's, W's and random directions, and ||ΔW||_F / ||U^T W V||_F (LoRA §7.3)
  magnitude.png     ΔD against ΔM over a run's checkpoints (DoRA §3, Fig. 2), for runs trained with
                    --save-every and --keep-checkpoints
  gates.png         Sparse LoRA's surviving ranks, layers x modules (SoRA)
  quant_error.png   NF4, FP4 and Int4 error on the base model's weights per layer, and NF4's levels over
                    the weights' histogram (QLoRA §3)

Every run must be a finished train.py run of one base model (a method that changes the encoder: not
`head`). Exit codes: 0 done; 2 a bad run, mixed base models (one line); 4 a file could not be written.
"""

import argparse
import itertools
import statistics
import sys
from pathlib import Path

import torch

from analysis.amplification import amplification
from analysis.gates import gate_grid
from analysis.magnitude import magnitude_direction, slope_and_correlation
from analysis.quant_error import CODES, relative_error
from analysis.spectrum import singular_values, spectrum_stats
from analysis.subspace import subspace_similarity
from minibert.files import WriteError, folder_problem, write_atomically, write_text
from training import learned
from training.exits import USER_ERRORS
from training.runs import RunError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="finished run directories of train.py, all on the same base model")
    p.add_argument("--output-dir", default="analysis-out", help="where analysis.md and the figures go")
    return p.parse_args(argv)


def label(run: learned.Run) -> str:
    h = run.metrics["hyperparameters"]
    rank = f" r={h['r']}" if h.get("r") else ""
    return f"{run.method}{rank} seed {h['seed']} ({run.path.name})"


def save(fig, path: Path) -> None:
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def spectrum_section(runs, plt, out: Path) -> list[str]:
    """σ_i / σ_1 of every layer's ΔW (thin) per run, one panel per run; the table of the three ranks."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.6), squeeze=False)
    lines = [
        "| run | modules | rank (mean, max) | effective rank (mean) | stable rank (mean) |",
        "|---|---|---|---|---|",
    ]
    for ax, run in zip(axes[0], runs, strict=True):
        stats = [spectrum_stats(layer.delta) for layer in run.layers.values()]
        for layer in run.layers.values():
            s = singular_values(layer.delta)
            ax.semilogy(range(1, len(s) + 1), (s / s[0]).clamp(min=1e-12).numpy(), lw=0.7, alpha=0.6)
        ranks = [st["rank"] for st in stats]
        ax.set(title=label(run), xlabel="i", ylabel="σ_i / σ_1", ylim=(1e-8, 2))
        lines.append(f"| {label(run)} | {len(stats)} | {statistics.fmean(ranks):.1f}, {max(ranks)} | "
                     f"{statistics.fmean(st['effective_rank'] for st in stats):.1f} | "
                     f"{statistics.fmean(st['stable_rank'] for st in stats):.2f} |")  # fmt: skip
    fig.suptitle("Singular values of ΔW, every adapted layer")
    fig.tight_layout()
    save(fig, out / "spectrum.png")
    plt.close(fig)
    return ["## The spectrum of ΔW", "", "![spectrum](spectrum.png)", "", *lines, ""]


def compared_modules(a: learned.Run, b: learned.Run) -> list[str]:
    """The modules of the first and the last layer that both runs adapted (query and value by default): the
    same layer's query and value tell module type apart, the same module in both layers tells depth apart."""
    depth = {name: int(name.split(".")[1]) for name in a.layers if name in b.layers and name.startswith("layers.")}
    ends = (min(depth.values()), max(depth.values()))  # our names: layers.<i>.attention.<module>
    return [name for name, i in depth.items() if i in ends]


def subspace_section(runs, plt, out: Path) -> list[str]:
    """φ heat maps for every pair of runs with LoRA's A, on the query and value of their first and last layer."""
    pairs = [(a, b) for a, b in itertools.combinations(runs, 2) if all(x.layers and next(iter(x.layers.values())).a
                                                                         is not None for x in (a, b))]  # fmt: skip
    if not pairs:
        return []
    lines = ["## Subspace similarity", "", "![subspace](subspace.png)", "",
             "| runs | module | φ(1, 1) | random φ(1, 1) | φ over the top min(r1, r2) directions | the same, of their "
             "initial A's | random subspaces of that size |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    initial = {id(run): learned.initial_a(run) for pair in pairs for run in pair}
    columns = max(len(compared_modules(a, b)) for a, b in pairs)
    fig, axes = plt.subplots(len(pairs), columns, figsize=(4.5 * columns, 3.6 * len(pairs)), squeeze=False)
    for row, (a, b) in enumerate(pairs):
        for col, name in enumerate(compared_modules(a, b)):
            phi = subspace_similarity(a.layers[name].a, b.layers[name].a)  # (r1, r2)
            at_start = subspace_similarity(initial[id(a)][name], initial[id(b)][name])
            k = min(phi.shape) - 1
            dim = a.layers[name].a.shape[1]  # random unit directions in R^dim: E[φ(i, j)] = max(i, j) / dim
            lines.append(f"| {label(a)} / {label(b)} | {name} | {phi[0, 0]:.3f} | {1 / dim:.4f} | {phi[k, k]:.3f} | "
                         f"{at_start[k, k]:.3f} | {(k + 1) / dim:.3f} |")  # fmt: skip
            image = axes[row, col].imshow(phi.numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
            axes[row, col].set(title=f"{name}\n{a.path.name} (i) vs {b.path.name} (j)", xlabel="j", ylabel="i")
            fig.colorbar(image, ax=axes[row, col])
    fig.tight_layout()
    save(fig, out / "subspace.png")
    plt.close(fig)
    return [*lines, "", "Random levels: for random directions in R^d, E[φ(i, j)] = max(i, j) / d.", ""]


def amplification_section(runs) -> list[str]:
    lines = ["## ΔW against W", "",
             "| run | r | ‖UᵀWV‖ on ΔW's directions | on W's | on random | ‖ΔW‖_F | amplification factor |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in runs:
        r = run.metrics["hyperparameters"].get("r") or 8
        rows = [amplification(layer.w0, layer.delta, r) for layer in run.layers.values()]
        mean = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
        lines.append(f"| {label(run)} | {r} | {mean['delta_directions']:.3f} | {mean['w_directions']:.2f} | "
                     f"{mean['random_directions']:.3f} | {mean['delta_norm']:.3f} | "
                     f"{mean['factor']:.1f} |")  # fmt: skip
    return [*lines, "", "Means over the adapted layers; U, V the top-r singular vectors.", ""]


# The DoRA paper's correlation of ΔD on ΔM over the query matrices of its runs (Liu et al. 2024, §3.2 and
# §4.1, Fig. 2): full fine-tuning's is negative, LoRA's positive, DoRA's negative like full fine-tuning's.
PAPER_QUERY_CORRELATION = {"full": -0.62, "dora": -0.31, "lora": +0.83}
MARKERS = {"query": "o", "value": "^"}  # other modules: squares


def magnitude_section(runs, plt, out: Path) -> list[str]:
    followed = []
    for run in runs:
        try:
            followed.append((run, learned.along_the_run(run.path)))
        except RunError:
            continue  # no checkpoints: this run cannot be followed
    if not followed:
        return []
    lines = ["## Magnitude and direction", "", "![magnitude](magnitude.png)", "",
             "| run | checkpoints | slope of ΔD on ΔM | correlation | query modules only: slope, correlation | "
             "the paper's, query | correlation across layers, per checkpoint |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    fig, axes = plt.subplots(1, len(followed), figsize=(4.5 * len(followed), 3.8), squeeze=False)
    for ax, (run, points) in zip(axes[0], followed, strict=True):
        pairs, queries, per_step = [], [], []
        for (step, weights), colour in zip(points, itertools.cycle(f"C{i}" for i in range(10))):
            here = {n: magnitude_direction(run.layers[n].w0, w) for n, w in weights.items()}  # module -> (ΔM, ΔD)
            pairs += here.values()
            queries += [p for n, p in here.items() if n.endswith(".query")]
            per_step.append(f"{slope_and_correlation(list(here.values()))[1]:+.2f}")
            for n, (dm, dd) in here.items():
                ax.scatter(dm, dd, s=12, color=colour, marker=MARKERS.get(n.rsplit(".", 1)[-1], "s"),
                           label=f"step {step}" if n == next(iter(here)) else None)  # fmt: skip
        slope, corr = slope_and_correlation(pairs)
        q = "–" if len(queries) < 3 else "{:.3g}, {:+.2f}".format(*slope_and_correlation(queries))
        paper = PAPER_QUERY_CORRELATION.get(run.method)
        lines.append(f"| {label(run)} | {len(points)} | {slope:.3g} | {corr:+.2f} | {q} | "
                     f"{'–' if paper is None else f'{paper:+.2f}'} | {' '.join(per_step)} |")  # fmt: skip
        ax.set(title=f"{label(run)}\nslope {slope:.3g}, r = {corr:+.2f}", xlabel="ΔM", ylabel="ΔD")
        ax.legend(fontsize=6)
    fig.tight_layout()
    save(fig, out / "magnitude.png")
    plt.close(fig)
    return [
        *lines,
        "",
        "One point per adapted layer and checkpoint (circles: query, triangles: value); the last column fits "
        "the layers of one checkpoint at a time (the DoRA paper's reading: at a given step, do the layers that "
        "turn more change their magnitude more or less?). The paper's Fig. 2 fits query matrices only, on its "
        "own models and tasks: compare it with the query column.",
        "",
    ]


def gates_section(runs, plt, out: Path) -> list[str]:
    sparse = [(run, gate_grid(run.metrics)) for run in runs if run.method == "sparse_lora"]
    if not sparse:
        return []
    fig, axes = plt.subplots(1, len(sparse), figsize=(3.5 * len(sparse), 4), squeeze=False)
    lines = [
        "## Sparse LoRA's gates",
        "",
        "![gates](gates.png)",
        "",
        "| run | ranks kept (layer: modules) |",
        "|---|---|",
    ]
    for ax, (run, (layers, kinds, grid)) in zip(axes[0], sparse, strict=True):
        values = torch.tensor([[float("nan") if v is None else v for v in row] for row in grid])
        ax.imshow(values.numpy(), cmap="Greens", vmin=0, vmax=run.metrics["hyperparameters"]["r"], aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, "–" if v is None else str(v), ha="center", va="center", fontsize=8)
        ax.set(title=label(run), xticks=range(len(kinds)), xticklabels=kinds, yticks=range(len(layers)),
               yticklabels=[f"layer {i}" for i in layers])  # fmt: skip
        kept = "; ".join(f"{i}: {', '.join(str(v) for v in row)}" for i, row in zip(layers, grid, strict=True))
        lines.append(f"| {label(run)} | {kept} |")
    fig.tight_layout()
    save(fig, out / "gates.png")
    plt.close(fig)
    return [*lines, ""]


def quant_section(base_model: str, plt, out: Path) -> list[str]:
    """The three 4-bit codes' error on every encoder linear weight of the base model, per layer."""
    encoder = learned.base_encoder(base_model)
    per_layer = {name: [] for name in CODES}
    for block in encoder.layers:
        weights = [m.weight for m in block.modules() if isinstance(m, torch.nn.Linear)]
        for name, code in CODES.items():
            per_layer[name].append(statistics.fmean(relative_error(w, code) for w in weights))
    fig, (errors, levels) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, values in per_layer.items():
        errors.plot(range(len(values)), values, "o-", label=name)
    errors.set(xlabel="layer", ylabel="||W - Q(W)||² / ||W||²", title=f"4-bit error on {Path(base_model).name}")
    errors.legend()
    w = encoder.layers[0].attention.query.weight.reshape(-1, 64)  # (blocks, 64)
    levels.hist((w / w.abs().amax(dim=1, keepdim=True)).reshape(-1).numpy(), bins=200, density=True, color="grey")
    for level in CODES["NF4"].tolist():
        levels.axvline(level, color="tab:red", lw=0.8)
    levels.set(title="NF4's levels over layer 0 query / absmax(block)", xlabel="w / absmax")
    fig.tight_layout()
    save(fig, out / "quant_error.png")
    plt.close(fig)
    lines = ["## 4-bit quantisation error", "", "![quantisation](quant_error.png)", "",
             "| layer | " + " | ".join(CODES) + " |", "|---|" + "---|" * len(CODES)]  # fmt: skip
    for i in range(len(encoder.layers)):
        lines.append(f"| {i} | " + " | ".join(f"{per_layer[name][i]:.5f}" for name in CODES) + " |")
    return [*lines, "", "Relative squared error, mean over the layer's linear weights; blocks of 64.", ""]


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output_dir)
    try:
        runs = [learned.load(path) for path in args.runs]
        bases = {run.base_model for run in runs}
        if len(bases) > 1:
            raise RunError(f"the runs are on different base models ({', '.join(sorted(bases))}); analyse the runs "
                           "of one base model together")  # fmt: skip
        problem = folder_problem(out)
        if problem is not None:
            raise RunError(f"--output-dir {out}: {problem}; choose another")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        report = [f"# What the runs learned ({', '.join(run.path.name for run in runs)})", ""]
        report += spectrum_section(runs, plt, out)
        report += subspace_section(runs, plt, out)
        report += amplification_section(runs)
        report += magnitude_section(runs, plt, out)
        report += gates_section(runs, plt, out)
        report += quant_section(runs[0].base_model, plt, out)
        write_text(out / "analysis.md", "\n".join(report))
    except (RunError, WriteError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 4 if isinstance(e, WriteError) else 2
    print(f"written: {out / 'analysis.md'} and its figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
