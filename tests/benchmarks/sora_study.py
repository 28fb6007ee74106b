"""Is a learned rank better than a smaller fixed one? Sparse LoRA's rules and strengths beside LoRA at ranks
1, 2 and 4, on the converged GLUE suite's recipe, each finished run kept in the repository as a cell.

    python -m tests.benchmarks.sora_study --glue-dir DIR --max-minutes 100   # run cells until then, then report
    python -m tests.benchmarks.sora_study                                   # the report alone, from the cells

Every run is a cell of the converged suite (tests/benchmarks/glue_suite.py, glue_recipe.py: the same steps,
early stopping, warm-up, bf16, seeds) with a few flags more, its VARIANT: `--sora-rule paper` for the
authors' rule, `--r 2` for a LoRA of rank 2, and so on; at its own rate, or the one the suite chose for
its method. The rows "ours" and "lora-r8" are the suite's own Sparse LoRA and LoRA rows, read from
docs/glue/cells/, and "old rule" its first Sparse LoRA row (docs/glue/sparse-lora-old-rule-cells/): they
are not run again. The cells are docs/glue/sora-cells/<variant>-<task>-lr<lr>-s<seed>.json, in
glue_cells.py's format. Order: breadth-first over STUDY_TASKS, seed 0 of every variant
first, then seed 1, then seed 2. Used by hand only: the tests never download anything.
"""

import argparse
import math
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

from tests.benchmarks import glue_cells
from tests.benchmarks.glue_recipe import SEEDS, build_glue, command, max_steps
from tests.benchmarks.glue_report import SCORE, chosen_rates, score
from tests.benchmarks.glue_suite import Job, Runner, schedule
from tests.benchmarks.real_encoder import FIGURES, ROOT, fetch_minilm, figure, write_between_markers

STUDY_CELLS = ROOT / "docs" / "glue" / "sora-cells"
STUDY_TASKS = ("stsb", "cola")  # the smallest spread between seeds, and the task with a failed seed


class Variant(NamedTuple):
    method: str  # the suite's method whose command it takes
    flags: tuple[str, ...]  # the train.py flags it adds
    what: str  # one line for the report
    lr: float | None = None  # its learning rate; None: the one the suite chose for its method


SCHEDULE_STAGES = 7  # the authors' lambda_num in run_glue_sora_schedule_dense.sh
PAPER_LR = 1e-3  # the authors' rule runs at the rate of the suite's first Sparse LoRA row (OLD_RULE_LR)
OURS_LR = 3e-4  # our rule at LoRA's, as the suite's row runs it (glue_recipe.SAME_RATE)
VARIANTS = {  # a flag "{stage}" is the run's cap over SCHEDULE_STAGES, in steps
    "sora-paper": Variant("sparse_lora", ("--sora-rule", "paper"), "Sparse LoRA, the authors' rule (c = 10)", PAPER_LR),
    "lora-r4": Variant("lora", ("--r", "4"), "LoRA, r = 4"),
    "lora-r2": Variant("lora", ("--r", "2"), "LoRA, r = 2"),
    "lora-r1": Variant("lora", ("--r", "1"), "LoRA, r = 1"),
    **{
        f"sora-paper-c{c}": Variant(
            "sparse_lora", ("--sora-rule", "paper", "--sora-l1", c), f"the authors' rule, c = {c}", PAPER_LR
        )
        for c in ("3", "1")
    },
    **{  # ours, the ranks fixed at half the run and trained without the penalty after (the relaxed lasso)
        name: Variant("sparse_lora", ("--sora-rule", rule, "--sparse-lambda", "3e-3"), what, OURS_LR)
        for name, rule, what in (
            ("sora-ours-settle", "ours+settle", "ours, ranks fixed at half the run, λ = 3e-3"),
            ("sora-ours-late-settle", "ours+judge_late+settle", "ours, judged from 1/4 to 1/2 of the run, λ = 3e-3"),
        )
    },
    **{  # ours, judging no gate in the first quarter of the run, while every rank is still being built
        f"sora-ours-late-lam{lam}": Variant(
            "sparse_lora",
            ("--sora-rule", "ours+judge_late", "--sparse-lambda", lam),
            f"ours judging late, λ = {lam}",
            OURS_LR,
        )
        for lam in ("3e-3", "1e-2")
    },
    **{  # our rule at LoRA's rate, λ 10 and 33 times the old default
        f"sora-ours-lam{lam}": Variant("sparse_lora", ("--sparse-lambda", lam), f"ours, λ = {lam}", OURS_LR)
        for lam in ("3e-3", "1e-2")
    },
    "sora-schedule": Variant(  # their schedule script: c = 1e-3, ξ from 0 to 7e-4 in 7 stages, no early stop
        "sparse_lora",
        (
            "--sora-rule",
            "paper",
            "--sora-l1",
            "1e-3",
            "--sparse-lambda",
            "0",
            "--sora-schedule",
            f"7e-4,{SCHEDULE_STAGES}",
            "--patience",
            "0",
            "--eval-every",
            "{stage}",
        ),
        "the authors' sparsifying scheduler (ξ 0 → 7e-4)",
        PAPER_LR,
    ),  # fmt: skip
}
SUITE_ROWS = {"ours": "sparse_lora", "lora-r8": "lora"}  # read from the suite's cells: its own rows
OLD_RULE_CELLS = ROOT / "docs" / "glue" / "sparse-lora-old-rule-cells"  # the suite's first Sparse LoRA row
OLD_RULE_LR = 1e-3  # the rate that row was run at
SUITE_LABELS = {"ours": "Sparse LoRA, the default (the converged row)",
                "old rule": f"Sparse LoRA, the first rule (λ = 3e-4, lr {OLD_RULE_LR:g})"}  # fmt: skip


def study_command(variant: str, task: str, lr: float, seed: int, quick: bool = False) -> list[str]:
    """The suite's command for the variant's method, plus the variant's flags (a later flag wins)."""
    method = VARIANTS[variant].method
    stage = math.ceil((6 if quick else max_steps(method, task)) / SCHEDULE_STAGES)
    return command(method, task, lr, seed, quick=quick) + [f.format(stage=stage) for f in VARIANTS[variant].flags]


class StudyRunner(Runner):
    """The suite's runner, with the variants' commands and cells folder."""

    def argv(self, job: Job) -> list[str]:
        return study_command(job.method, job.task, job.lr, job.seed, quick=self.quick)

    def cell_path(self, job: Job) -> Path:
        return self.cells_dir / f"{glue_cells.name(*job.key)}.json"


def study_cells(folder: Path = STUDY_CELLS, quick: bool = False) -> dict[tuple, dict]:
    """{(variant, task, lr, seed): cell} of the stored cells whose command is the one the study gives now."""
    return {key: c for key, c in glue_cells.read(folder).items() if c["argv"] == study_command(*key, quick=quick)}


def study_plan(runner: StudyRunner) -> tuple[list[Job], dict]:
    """Every run still to do, seed by seed (breadth-first), and the cells that say how long a run takes."""
    rates = chosen_rates(glue_cells.load())
    cells = study_cells(runner.cells_dir, runner.quick)
    jobs = [
        Job(v, t, VARIANTS[v].lr or rates[VARIANTS[v].method], s) for s in SEEDS for t in STUDY_TASKS for v in VARIANTS
    ]
    timed = cells if runner.quick else cells | glue_cells.load()  # how long a run takes: the suite's say too
    return [job for job in jobs if job.key not in cells], timed


def rows(cells: dict, suite: dict) -> dict[str, dict[str, list[dict]]]:
    """{row: {task: its cells}}: the study's variants, and the suite's own Sparse LoRA and LoRA rows."""
    rates = chosen_rates(suite)
    out = {v: {t: [c for k, c in cells.items() if k[0] == v and k[1] == t] for t in STUDY_TASKS} for v in VARIANTS}
    for row, method in SUITE_ROWS.items():
        out[row] = {t: [c for k, c in suite.items() if k[0] == method and k[1] == t and k[2] == rates.get(method)]
                    for t in STUDY_TASKS}  # fmt: skip
    old = glue_cells.read(OLD_RULE_CELLS)
    out["old rule"] = {t: [c for k, c in old.items() if k[1] == t and k[2] == OLD_RULE_LR] for t in STUDY_TASKS}
    return out


def report(cells: dict, suite: dict) -> str:
    """Per row and task: score (mean ± standard error over seeds), exported parameters, zero gates, n."""
    lines = ["| row | task | score (mean ± SE) | exported parameters | zero gates | seeds |", "|---" * 6 + "|"]
    for row, by_task in rows(cells, suite).items():
        for task, got in by_task.items():
            if not got:
                continue
            scores = [100 * score(c, task) for c in got]
            se = f"± {statistics.stdev(scores) / len(scores) ** 0.5:.1f}" if len(scores) > 1 else "(one seed)"
            exported = statistics.mean(c["exported_params"] for c in got)
            zero = [c["zero_gate_share"] for c in got if c["zero_gate_share"] is not None]
            zero_text = f"{100 * statistics.mean(zero):.0f}%" if zero else "-"
            lines.append(f"| {row} | {task} | {statistics.mean(scores):.1f} {se} | {exported:,.0f} | "
                         f"{zero_text} | {len(got)} |")  # fmt: skip
    return "\n".join(lines)


def plot_frontier(cells: dict, suite: dict, figures: Path = FIGURES) -> Path:
    """Per task, test score against exported parameters, each row's mean over its seeds with the standard
    error: LoRA at r = 1, 2, 4, 8 joined by a line (the fixed-rank frontier), every Sparse LoRA row a point."""
    plt, path = figure(figures, "sora_frontier.png")
    fig, axes = plt.subplots(1, len(STUDY_TASKS), figsize=(5.2 * len(STUDY_TASKS), 4.0))
    for ax, task in zip(axes, STUDY_TASKS, strict=True):
        points = {}
        for row, by_task in rows(cells, suite).items():
            if by_task[task]:
                got = by_task[task]
                scores = [100 * score(c, task) for c in got]
                se = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
                points[row] = (statistics.mean(c["exported_params"] for c in got), statistics.mean(scores), se)
        lora = sorted(v for k, v in points.items() if k.startswith("lora-"))
        if lora:
            xs, ys, errors = zip(*lora, strict=True)
            ax.errorbar(xs, ys, yerr=errors, fmt="-o", color="C0", label="LoRA, r = 1, 2, 4, 8", capsize=3)
        others = sorted((k, v) for k, v in points.items() if not k.startswith("lora-") and k != "sora-schedule")
        for i, (row, (x, y, e)) in enumerate(others):
            label = SUITE_LABELS.get(row) or VARIANTS[row].what
            ax.errorbar([x], [y], yerr=[e], fmt="s", color=f"C{i + 1}", label=label, capsize=3)
        schedule = [c for (v, t, _, s), c in cells.items() if v == "sora-schedule" and t == task and s == 0]
        for cell in schedule:  # one run: the validation at each stage's end, at the ranks it kept then
            best = next(p for p in cell["validation_curve"] if p["step"] == cell["best_step"])
            head = cell["exported_params"] - best["kept_params"]  # what the file holds besides A and B
            curve = [(p["kept_params"] + head, 100 * p[SCORE[task]]) for p in cell["validation_curve"]]
            floor = min(y for _, y, _ in points.values()) - 5  # a stage that collapsed is drawn at the floor
            shown = [(x, max(y, floor)) for x, y in curve]
            ax.plot(*zip(*shown, strict=True), "--^", color="gray", label=f"{VARIANTS['sora-schedule'].what}, seed 0, "
                    "validation")  # fmt: skip
            for (x, y), (_, y_shown) in zip(curve, shown, strict=True):
                if y < y_shown:
                    ax.annotate(f"{y:.0f}", (x, y_shown), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(xscale="log", title=task, xlabel="exported parameters (adapter and head)", ylabel="test score x 100")
        ax.legend(fontsize=7)
    fig.suptitle("Is a learned rank better than a smaller fixed one? all-MiniLM-L6-v2, mean ± SE over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", type=Path, help="folder holding glue-stsb/, glue-cola/, ... as GLUE ships them; "
                   "without it, only the report of the stored cells")  # fmt: skip
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/minibert-glue-suite"),
                   help="model, parquet files, token caches, runs (default /tmp/minibert-glue-suite)")  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=100, help="stop starting runs, and stop those still going, "
                   "after this many minutes (default 100); the stored cells stay")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="6 steps of every run on a slice of each file, its cells in "
                   "--work-dir (not the repository): to check that it runs")  # fmt: skip
    args = p.parse_args()
    started = time.perf_counter()
    folder = args.work_dir / "sora-cells-quick" if args.quick else STUDY_CELLS
    if args.glue_dir:
        work = args.work_dir
        work.mkdir(parents=True, exist_ok=True)
        glue = build_glue(args.glue_dir, work / ("glue-quick" if args.quick else "glue"), args.quick)
        places = {"{GLUE}": glue, "{MODEL}": fetch_minilm(work), "{CACHE}": work / "cache"}
        runner = StudyRunner(work, places, args.quick, folder, folder)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # so `finally` stops the runs
        try:
            schedule(runner, started + 60 * args.max_minutes, plan=study_plan)
        finally:
            runner.stop_all()
    cells, suite = study_cells(folder, args.quick), glue_cells.load()
    table = report(cells, suite)
    print(table)
    if not args.quick:  # the page shows what the stored cells say, nothing else
        write_between_markers(ROOT / "docs" / "sparse_lora.md", "sora-study", table + "\n")
        print(f"figure: {plot_frontier(cells, suite).relative_to(ROOT)}; table: docs/sparse_lora.md")


if __name__ == "__main__":
    main()
