"""The converged GLUE comparison's report, made from the stored cells alone (docs/glue/cells/), with no run:
the README's headline table, docs/results.md's tables and the two figures (every method's seed-0 curves;
every seed's curves on the tasks some method has not clearly learned).

    python -m tests.benchmarks.glue_report          # rebuild the tables and figures from the stored cells

Which learning rate a method uses is read off its sweep cells (glue_recipe.py): the rate with the best
mean validation score over SWEEP_TASKS at seed 0 (the head's: the lowest validation loss, SWEEP_BY_LOSS),
once every rate of its grid is stored; a best rate at the grid's edge extends the grid (`rates`), and the
method has no rate, and no row, until that is settled.
"""

import json
import math
import statistics
from pathlib import Path

from tests.benchmarks import glue_cells
from tests.benchmarks.glue_recipe import (
    COLUMNS,
    GRID,
    LONGER,
    METHODS,
    NAMES,
    PATIENCE,
    SAME_RATE,
    SCORE,
    SEEDS,
    SWEEP_BY_LOSS,
    SWEEP_TASKS,
    TARGETS,
    TASKS,
    max_steps,
)
from tests.benchmarks.real_encoder import FIGURES, ROOT, figure, table_head, write_between_markers


def validation_score(cell: dict) -> float:
    return cell["metrics"][f"validation_{SCORE[cell['task']]}"]


def lowest_validation_loss(cell: dict) -> float:
    return min(row["loss"] for row in cell["validation_curve"])


def sweep_value(cell: dict) -> float:
    """What a sweep maximises: the validation score, or minus the lowest validation loss (SWEEP_BY_LOSS)."""
    return -lowest_validation_loss(cell) if cell["method"] in SWEEP_BY_LOSS else validation_score(cell)


def rates(method: str, cells: dict) -> tuple[list[float], float | None]:
    """(the rates to sweep, the chosen rate or None): GRID, extended past an edge that won (see module doc);
    for a method in SAME_RATE, no sweep and the other method's chosen rate."""
    if method in SAME_RATE:
        return [], rates(SAME_RATE[method], cells)[1]
    grid = sorted(GRID[method])
    while all((method, task, lr, 0) in cells for lr in grid for task in SWEEP_TASKS):
        mean = {lr: statistics.fmean(sweep_value(cells[method, t, lr, 0]) for t in SWEEP_TASKS) for lr in grid}
        best = max(grid, key=mean.get)
        if best == grid[0]:
            grid.insert(0, float(f"{best / 3:.0e}"))
        elif best == grid[-1]:
            grid.append(float(f"{best * 3:.0e}"))
        else:
            return grid, best
    return grid, None


def chosen_rates(cells: dict) -> dict[str, float]:
    return {m: lr for m in METHODS if (lr := rates(m, cells)[1]) is not None}


def table_cells(cells: dict) -> dict[str, dict[str, list[dict]]]:
    """{method: {task: the cells at its chosen rate, by seed}} of the methods whose rate is chosen and that
    have a cell at it."""
    chosen = chosen_rates(cells)
    rows = {m: {t: [cells[m, t, lr, s] for s in SEEDS if (m, t, lr, s) in cells] for t in TASKS}
            for m, lr in chosen.items()}  # fmt: skip
    return {m: runs for m, runs in rows.items() if any(runs.values())}


def mean_std(values: list[float]) -> str:
    """Mean ± std (x 100) and n, or a dash."""
    if not values:
        return "–"
    values = [100 * v for v in values]
    spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.1f}{spread} (n={len(values)})"


def score(cell: dict, task: str) -> float:
    return cell["metrics"][f"test_{SCORE[task]}"]


def main_table(rows: dict, chosen: dict, baseline: dict) -> list[str]:
    lines = table_head("method", "lr", "trainable params", *[title for _, _, title in COLUMNS], "average")
    majority = [f"{100 * baseline[t][metric]:.1f}" for t, metric, _ in COLUMNS]
    lines.append(f"| majority class / chance | – | 0 | {' | '.join(majority)} | – |")
    for method, runs in rows.items():
        cells = [mean_std([c["metrics"][f"test_{metric}"] for c in runs[task]]) for task, metric, _ in COLUMNS]
        common = min(len(runs[t]) for t in TASKS)  # seeds that every task has
        average = [statistics.fmean(score(runs[t][i], t) for t in TASKS) for i in range(common)]
        params = next((c["trainable_params"] for t in TASKS for c in runs[t]), 0)
        lines.append(f"| {NAMES[method]} | {chosen[method]:g} | {params:,} | {' | '.join(cells)} | "
                     f"{mean_std(average)} |")  # fmt: skip
    return lines


def compact_table(rows: dict, baseline: dict) -> list[str]:
    """The README's table: each task's score, the mean over the seeds (x 100), and the average."""
    lines = table_head("method", "trainable params", *[title for task, metric, title in COLUMNS
                                                        if metric == SCORE[task]], "average")  # fmt: skip
    chance = [f"{100 * baseline[t][SCORE[t]]:.1f}" for t in TASKS]
    lines.append(f"| majority class / chance | 0 | {' | '.join(chance)} | – |")
    for method, runs in rows.items():
        means = [f"{100 * statistics.fmean(score(c, t) for c in runs[t]):.1f}" if runs[t] else "–" for t in TASKS]
        common = min(len(runs[t]) for t in TASKS)  # seeds that every task has
        average = statistics.fmean(statistics.fmean(score(runs[t][i], t) for t in TASKS) for i in range(common))
        params = next((c["trainable_params"] for t in TASKS for c in runs[t]), 0)
        lines.append(f"| {NAMES[method]} | {params:,} | {' | '.join(means)} | {100 * average:.1f} |")
    return lines


def standard_error(ours: list[float], reference: list[float] | float) -> float:
    """The standard error of mean(ours) - mean(reference); a float reference is a constant (the chance row),
    with no error of its own. Needs two values of each list."""
    own = statistics.variance(ours) / len(ours)
    return math.sqrt(own if isinstance(reference, float) else own + statistics.variance(reference) / len(reference))


# The test set's own standard error of a difference between two runs, in points, where it was measured: a
# paired bootstrap over the test examples of two runs' predictions (paired_bootstrap.py; docs/results.md,
# "The test set's share of a difference"), taken for every pair on that task.
PAIRED_TEST_ERROR = {"rte": 3.4, "stsb": 0.5}


def paired_test_error(task: str, n: int) -> float | None:
    """The test set's share of the standard error of a difference between two runs on `task` (n test
    examples), in points: measured (PAIRED_TEST_ERROR); else, for accuracy, its bound 100 / sqrt(n) (each
    example adds -1, 0 or +1 to the difference, so its variance is at most the share of examples the two
    disagree on, at most 1); else None, not known (F1, Matthews: the cells keep no predictions)."""
    if task in PAIRED_TEST_ERROR:
        return PAIRED_TEST_ERROR[task]
    return 100 / math.sqrt(n) if SCORE[task] == "accuracy" else None


def difference(ours: list[float], reference: list[float] | float, shared: float = 0.0, judged: bool = True) -> str:
    """mean(ours) - mean(reference) in points, ± its standard error, ** beyond twice it (the rule for calling
    one better). shared: an error every seed shares (the test set's own), added to the seeds' in quadrature.
    judged False: the error is known to be incomplete, so nothing is marked."""
    constant = isinstance(reference, float)
    ref = [reference] if constant else reference
    if not ours or not ref:
        return "–"
    diff = statistics.fmean(ours) - statistics.fmean(ref)
    if len(ours) < 2 or (len(ref) < 2 and not constant):
        return f"{diff:+.1f} (one seed)"
    se = math.hypot(standard_error(ours, reference), shared)  # sqrt(se_seeds^2 + shared^2)
    return f"{diff:+.1f} ± {se:.1f}" + (" **" if judged and abs(diff) > 2 * se else "")


def chance_error(task: str, baseline: dict, n: int) -> float:
    """The test set's own standard error, in points, of a score at chance on its n examples: what one finite
    test set adds to every seed's score alike, which their spread cannot show. Accuracy: sqrt(p (1 - p) / n),
    p the majority share. MCC and Pearson: 1 / sqrt(n) (for predictions independent of the labels,
    n r^2 is about chi-square with one degree of freedom). F1: 0, for want of a null: its chance row is the
    constant answer "paraphrase", so its table keeps the seeds' error alone."""
    metric = SCORE[task]
    if metric == "accuracy":
        p = baseline[task]["accuracy"]
        return 100 * math.sqrt(p * (1 - p) / n)
    return 0.0 if metric == "f1" else 100 / math.sqrt(n)


def test_size(rows: dict, task: str) -> int:
    return next(r[task][0]["examples"]["test"] for r in rows.values() if r[task])


def clearly_above_chance(cells: list[dict], task: str, baseline: dict) -> bool:
    """The issue's bar for an adapter: its mean test score above the chance row by more than twice its
    standard error, the seeds' and the test set's (chance_error) together; two seeds at least."""
    values, chance = [100 * score(c, task) for c in cells], 100 * baseline[task][SCORE[task]]
    if len(values) < 2:
        return False
    shared = chance_error(task, baseline, cells[0]["examples"]["test"])
    return statistics.fmean(values) - chance > 2 * math.hypot(standard_error(values, chance), shared)


def against_full(rows: dict) -> list[str]:
    """Each method's difference from full fine-tuning in each task's score (points), ± the seeds' error and
    the test set's (paired_test_error); marked ** only where the latter is known."""
    lines = table_head("method", *[f"{t} {SCORE[t]}" for t in TASKS])
    for method, runs in rows.items():
        if method == "full" or "full" not in rows:
            continue
        shares = {t: paired_test_error(t, test_size(rows, t)) for t in TASKS}
        out = [difference([100 * score(c, t) for c in runs[t]], [100 * score(c, t) for c in rows["full"][t]],
                          shares[t] or 0.0, judged=shares[t] is not None) for t in TASKS]  # fmt: skip
        lines.append(f"| {NAMES[method]} | {' | '.join(out)} |")
    return lines


def against_chance(rows: dict, baseline: dict) -> list[str]:
    """Each method's difference from the majority / chance row in each task's score (points), ± the seeds'
    and the test set's error together: a cell without ** has not clearly learned the task."""
    lines = table_head("method", *[f"{t} {SCORE[t]}" for t in TASKS])
    for method, runs in rows.items():
        out = []
        for t in TASKS:
            shared = chance_error(t, baseline, test_size(rows, t)) if runs[t] else 0.0
            out.append(difference([100 * score(c, t) for c in runs[t]], 100 * baseline[t][SCORE[t]], shared))
        lines.append(f"| {NAMES[method]} | {' | '.join(out)} |")
    return lines


def test_set_error(rows: dict, baseline: dict) -> str:
    """chance_error of each task's test set, in words, for the chance table's heading."""
    out = [f"{chance_error(t, baseline, test_size(rows, t)):.1f} points on {t}'s {test_size(rows, t)}"
           for t in TASKS if SCORE[t] != "f1" and any(r[t] for r in rows.values())]  # fmt: skip
    return "accuracy sqrt(p (1 - p) / N), MCC and Pearson 1 / sqrt(N): " + ", ".join(out)


def targets_table(rows: dict, checked: dict) -> list[str]:
    """Full fine-tuning against TARGETS: its test score over the seeds, and, where seed 0 missed, the target
    check (the same run LONGER times as long): its test score, and its best validation score and step beside
    the seed-0 run's."""
    lines = table_head("task", "score", "target", "full fine-tuning", "run longer: test",
                       "seed 0: best validation, its step", "run longer: best validation, its step, steps")  # fmt: skip
    for task, cells in rows.get("full", {}).items():
        seed0 = next((c for c in cells if c["seed"] == 0), None)
        longer = checked.get(("full", task, seed0["lr"], 0)) if seed0 else None
        check = ["not needed" if seed0 and score(seed0, task) >= TARGETS[task] else "not run yet", "–"]
        if longer:
            check = [f"{100 * score(longer, task):.1f}",
                     f"{100 * validation_score(longer):.1f}, {longer['best_step']}, {longer['steps']}"]  # fmt: skip
        first = f"{100 * validation_score(seed0):.1f}, {seed0['best_step']}" if seed0 else "–"
        lines.append(f"| {task} | {SCORE[task]} | {100 * TARGETS[task]:.0f} | "
                     f"{mean_std([score(c, task) for c in cells])} | {check[0]} | {first} | {check[1]} |")  # fmt: skip
    return lines


def sparse_table(runs: dict) -> list[str]:
    lines = table_head("task", "zero gates, %", "exported params (mean)", "trainable params")
    for task in TASKS:
        if runs[task]:
            zero = mean_std([c["zero_gate_share"] for c in runs[task]])
            exported = statistics.fmean(c["exported_params"] for c in runs[task])
            lines.append(f"| {task} | {zero} | {exported:,.0f} | {runs[task][0]['trainable_params']:,} |")
    return lines


def sweep_table(cells: dict) -> list[str]:
    lines = table_head("method", "lr", *[f"validation {t} {SCORE[t]}" for t in SWEEP_TASKS], "mean",
                       "mean lowest validation loss", "chosen")  # fmt: skip
    for m in METHODS:
        grid, best = rates(m, cells)
        tried = {lr for (method, task, lr, seed) in cells if method == m and task in SWEEP_TASKS and seed == 0}
        for lr in sorted(set(grid) | tried):  # the grid, and any rate swept before a rule changed
            got = [cells.get((m, t, lr, 0)) for t in SWEEP_TASKS]
            values = [f"{100 * validation_score(c):.1f}" if c else "not run yet" for c in got]
            mean, loss = "–", "–"
            if all(got):
                mean = f"{100 * statistics.fmean(validation_score(c) for c in got):.1f}"
                loss = f"{statistics.fmean(lowest_validation_loss(c) for c in got):.4f}"
            lines.append(f"| {NAMES[m]} | {lr:g} | {' | '.join(values)} | {mean} | {loss} | "
                         f"{'yes' if lr == best else ''} |")  # fmt: skip
    return lines


def convergence_table(rows: dict) -> list[str]:
    """Per task: the steps each method's runs took, how many stopped early, and the mean wall time of a cell."""
    lines = table_head("method", *[f"{t}: steps, stopped early, min" for t in TASKS])
    for method, runs in rows.items():
        out = []
        for task in TASKS:
            r = runs[task]
            if not r:
                out.append("–")
                continue
            steps = "/".join(str(c["steps"]) for c in r)
            cap = max_steps(method, task)
            out.append(f"{steps} of {cap}, {sum(c['steps'] < cap for c in r)}/{len(r)}, "
                       f"{statistics.fmean(c['wall_s'] for c in r) / 60:.0f}")  # fmt: skip
        lines.append(f"| {NAMES[method]} | {' | '.join(out)} |")
    return lines


def plot_curves(cells: dict, chosen: dict, checked: dict, figures: Path) -> None:
    """Per task, the validation score over steps of seed 0 of every method at its chosen rate (solid), or
    of each rate of its sweep while none is chosen (dashed), and full fine-tuning's target check (dotted,
    black): a curve flat at its end finished learning."""
    plt, path = figure(figures, "glue_converged_curves.png")
    fig, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 3.8))
    for j, task in enumerate(TASKS):
        for i, method in enumerate(METHODS):
            shown = sorted((lr, c) for (m, t, lr, s), c in cells.items() if m == method and t == task and s == 0
                           and chosen.get(method, lr) == lr)  # fmt: skip
            for lr, cell in shown:
                curve, style = cell["validation_curve"], "-" if method in chosen else "--"
                label = f"{NAMES[method]} ({lr:g}{'' if method in chosen else ', sweep'})"
                axes[j].plot([p["step"] for p in curve], [p[SCORE[task]] for p in curve], style, color=f"C{i}", lw=1,
                             label=label)  # fmt: skip
        for (_, t, lr, _), cell in checked.items():
            if t == task:
                curve = cell["validation_curve"]
                axes[j].plot([p["step"] for p in curve], [p[SCORE[task]] for p in curve], ":", color="black", lw=1,
                             label=f"{NAMES['full']} ({lr:g}), run {LONGER}x longer")  # fmt: skip
        axes[j].set(title=task, xlabel="step", ylabel=f"validation {SCORE[task]}")
        if axes[j].lines:
            axes[j].legend(fontsize=6)
    fig.suptitle(f"GLUE on all-MiniLM-L6-v2: validation score of seed 0 (stops after {PATIENCE} without a better one)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def short_of_chance(rows: dict, baseline: dict) -> list[str]:
    """The tasks on which some method other than the head is not clearly above chance (with two seeds at
    least): the tasks whose every seed's curve the README shows."""
    return [t for t in TASKS if any(len(r[t]) > 1 and not clearly_above_chance(r[t], t, baseline)
                                    for m, r in rows.items() if m != "head")]  # fmt: skip


def plot_seeds(rows: dict, baseline: dict, tasks: list[str], figures: Path) -> None:
    """For each task in `tasks` (a row of panels) and each method but the head (a panel): the validation
    score over steps of every seed, each seed's test score at the step it was tested (x), and the chance
    row's test score (dashed): how far the runs are from chance, and how far validation is from test."""
    methods = [m for m in rows if m != "head"]
    plt, path = figure(figures, "glue_seed_curves.png")
    fig, axes = plt.subplots(len(tasks), len(methods), figsize=(2.9 * len(methods), 2.7 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, method in enumerate(methods):
            ax, runs = axes[i][j], rows[method][task]
            for cell in runs:
                curve, color = cell["validation_curve"], f"C{cell['seed']}"
                ax.plot([p["step"] for p in curve], [100 * p[SCORE[task]] for p in curve], color=color, lw=0.8,
                        label=f"seed {cell['seed']}")  # fmt: skip
                ax.plot(cell["best_step"], 100 * score(cell, task), "x", color=color, ms=7)
            ax.axhline(100 * baseline[task][SCORE[task]], color="gray", ls="--", lw=0.8, label="chance (test)")
            ax.set_title(f"{NAMES[method]}, {task}: test {mean_std([score(c, task) for c in runs])}", fontsize=8)
            ax.set(xlabel="step", ylabel=SCORE[task] if j == 0 else None)
            ax.tick_params(labelsize=7)
        axes[i][0].legend(fontsize=6)
    fig.suptitle("Validation curve of every seed (lines) and its test score at the step tested (x)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def precision_table(cells: dict, fp32: dict) -> list[str]:
    """The cells run in both precisions (the same command but --precision): test and validation scores and
    the seconds a training step took, fp32 against bf16."""
    lines = table_head("cell", "test fp32", "test bf16", "validation fp32", "validation bf16", "s/step fp32",
                       "s/step bf16")  # fmt: skip
    for key in sorted(fp32.keys() & cells.keys()):
        old, new = fp32[key], cells[key]
        if [a for a in new["argv"] if a not in ("--precision", "bf16")] != old["argv"]:
            continue  # another recipe besides the precision
        task = key[1]
        values = [100 * score(old, task), 100 * score(new, task), 100 * validation_score(old),
                  100 * validation_score(new)]  # fmt: skip
        steps = [c["train_time_s"] / c["steps"] for c in (old, new)]
        lines.append(f"| {glue_cells.name(*key)} | " + " | ".join(f"{v:.1f}" for v in values)
                     + f" | {steps[0]:.2f} | {steps[1]:.2f} |")  # fmt: skip
    return lines


def report(cells: dict, baseline: dict, fp32: dict, checked: dict, figures: Path = FIGURES) -> tuple[list, list]:
    """(the headline: the table, the differences from full fine-tuning, Sparse LoRA's exported parameters
    and the compute, for the README; the details: the targets, the differences from chance, convergence, the
    sweep, fp32 against bf16), and the figures in `figures`. fp32: the cells set aside when the recipe
    took bf16; checked: the target checks."""
    chosen = chosen_rates(cells)
    rows = table_cells(cells)
    stored = sum(len(r[t]) for r in rows.values() for t in TASKS)
    hours = sum(c["wall_s"] for c in [*cells.values(), *checked.values()]) / 3600
    total = len(METHODS) * len(TASKS) * len(SEEDS)
    whole = stored == total
    headline = [
        f"{'All' if whole else stored} of the table's {total} cells are stored "
        f"({len(cells)} runs with the sweep); each cell is mean ± std over the seeds stored (n). Test metrics x 100 "
        "on each task's GLUE dev set (MRPC: Microsoft's test file; CoLA: its out-of-domain dev set, not GLUE's "
        "1,043 sentences), of "
        f"{', '.join(f'{test_size(rows, t):,} ({t})' for t in TASKS if any(r[t] for r in rows.values()))} "
        "examples; the average is over the five task scores of each seed that every task has. Each model trains "
        "on its task's training file less a 10% validation slice (SST-2: 872 sentences); STS-B's file here "
        "holds 4,249 of GLUE's 5,749 training pairs.",
        "",
        *main_table(rows, chosen, baseline),
        "",
        "Difference from full fine-tuning in points (means over seeds) ± its standard error: the seeds' spread "
        "and the test set's own share, which does not cancel where two runs disagree on many examples: measured on "
        "one pair of runs for " + " and ".join(f"{t} ({e} points)" for t, e in PAIRED_TEST_ERROR.items()) + " "
        "(\"The test set's share of a difference\" below), and for the other accuracy, SST-2's, its bound "
        "100 / sqrt(N) (3.4 points). ** marks a difference beyond twice it; MRPC's F1 and CoLA's Matthews "
        "correlation have no such share known, so nothing is marked there.",
        "",
        *against_full(rows),
        "",
        *(["Sparse LoRA's gates at the end of each run (the exported adapter keeps only the non-zero ranks):", "",
           *sparse_table(rows["sparse_lora"]), ""] if "sparse_lora" in rows else []),
        f"Compute{'' if whole else ' so far'}: {hours:.1f} hours of one CPU thread for "
        f"{len(cells) + len(checked)} runs "
        f"({60 * hours / max(1, len(cells) + len(checked)):.0f} min a run on average; {len(checked)} of them "
        "target checks), two runs at a time on a 2-core machine; "
        f"before them, {sum(c['wall_s'] for c in fp32.values()) / 3600:.1f} hours for the {len(fp32)} fp32 runs "
        "set aside when the recipe took bf16.",
    ]  # fmt: skip
    details = [
        f"Full fine-tuning against its targets (test scores x 100); where seed 0 missed one, the same run again "
        f"{LONGER}x as long, patience counted only after the usual cap (the dotted curves in the figure below):",
        "",
        *targets_table(rows, checked),
        "",
        "Difference from the majority / chance row in points ± its standard error (** beyond twice it). Every "
        "seed is tested on the same examples, so the spread over seeds cannot show the test set's own sampling "
        "error at chance; the error here is both together, sqrt(se_seeds^2 + se_test^2), with se_test "
        f"{test_set_error(rows, baseline)} (MRPC's F1: the seeds' alone, its chance row being a constant answer):",
        "",
        *against_chance(rows, baseline),
        "",
        "Steps each run took, how many stopped early (--patience), and the wall time of one cell (one thread):",
        "",
        *convergence_table(rows),
        "",
        f"The learning-rate sweep: seed 0, {' and '.join(SWEEP_TASKS)}, the validation score of each run's best "
        "checkpoint and its lowest validation loss; the rate with the best mean score is chosen, or, for "
        f"{', '.join(NAMES[m] for m in SWEEP_BY_LOSS)}, the lowest mean loss (glue_recipe.py):",
        "",
        *sweep_table(cells),
        "",
        "The same cells in fp32 (docs/glue/fp32-cells/, the recipe before --precision bf16) and in bf16: scores "
        "x 100 and the seconds of a training step (one thread, two runs at a time):",
        "",
        *precision_table(cells, fp32),
    ]  # fmt: skip
    plot_curves(cells, chosen, checked, figures)
    if tasks := short_of_chance(rows, baseline):
        plot_seeds(rows, baseline, tasks, figures)
    return headline, details


def complete_rows(rows: dict) -> dict:
    """The methods with a cell on every task: the README's table shows no half-empty row (a method being
    rerun under a new rule is in docs/results.md meanwhile)."""
    return {m: runs for m, runs in rows.items() if all(runs[t] for t in TASKS)}


def publish_report(cells: dict, baseline: dict, fp32: dict, checked: dict) -> str:
    """The report into docs/results.md (all of it) and the compact table of means of the complete rows into
    the README, between their markers."""
    headline, details = report(cells, baseline, fp32, checked)
    rows = complete_rows(table_cells(cells))
    if rows:
        write_between_markers(ROOT / "README.md", "glue-converged", "\n".join(compact_table(rows, baseline)) + "\n")
    text = "\n".join(headline + [""] + details) + "\n"
    write_between_markers(ROOT / "docs" / "results.md", "glue-converged", text)
    return text


def main():
    baseline = json.loads(glue_cells.BASELINE.read_text())
    fp32, checked = glue_cells.read(glue_cells.FP32_CELLS), glue_cells.load(glue_cells.LONGER_CELLS, longer=True)
    print(publish_report(glue_cells.load(), baseline, fp32, checked))


if __name__ == "__main__":
    main()
