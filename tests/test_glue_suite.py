"""The converged GLUE suite's bookkeeping (tests/benchmarks/glue_*.py), on made-up cells: which rate a sweep
chooses and when it must grow, the order of the runs still to do, and that a cell made under other settings
is never read as one of this recipe's. The runs themselves are benchmarks, not tests."""

import json

import pytest

from tests.benchmarks import glue_cells, glue_report, glue_suite
from tests.benchmarks.glue_recipe import GRID, MAX_STEPS, METHODS, SAME_RATE, SWEEP_TASKS, TARGETS, TASKS, command
from tests.benchmarks.glue_suite import Job


def cell(method, task, lr, seed, validation=0.5, test=0.5, longer=False, **extra):
    return {"method": method, "task": task, "lr": lr, "seed": seed, "argv": command(method, task, lr, seed, longer),
            "metrics": {f"validation_{m}": validation for m in ("accuracy", "f1", "matthews_correlation", "pearson")}
            | {f"test_{m}": test for m in ("accuracy", "f1", "matthews_correlation", "pearson")},
            "wall_s": 60.0, "steps": 100, "stopped_early": True, "trainable_params": 10, "exported_params": 10,
            "zero_gate_share": 0.25, "validation_curve": [], "best_step": 50, "examples": {"test": 10_000},
            **extra}  # fmt: skip


def swept(method, scores: dict) -> dict:
    """Seed-0 cells on both sweep tasks, one validation score per rate."""
    return {(method, t, lr, 0): cell(method, t, lr, 0, validation=v) for lr, v in scores.items() for t in SWEEP_TASKS}


def test_the_sweep_chooses_an_inner_rate_and_grows_past_a_winning_edge():
    low, mid, high = GRID["lora"]
    assert glue_report.rates("lora", swept("lora", {low: 0.5, mid: 0.7, high: 0.6})) == ([low, mid, high], mid)
    cells = swept("lora", {low: 0.5, mid: 0.6, high: 0.7})  # the top rate wins: one more above it
    grid, chosen = glue_report.rates("lora", cells)
    assert chosen is None and grid == [low, mid, high, float(f"{high * 3:.0e}")]
    cells |= swept("lora", {grid[-1]: 0.65})  # now the old top is inside and best
    assert glue_report.rates("lora", cells) == (grid, high)
    assert glue_report.rates("lora", swept("lora", {low: 0.5, mid: 0.7})) == ([low, mid, high], None)  # not all run


def test_the_head_sweep_keeps_the_rate_of_the_lowest_validation_loss():
    """A linear head's score near the majority class is noise: its sweep is read by validation loss."""
    low, mid, high = GRID["head"]
    lowest = {low: 0.62, mid: 0.60, high: 0.70}  # the top rate's score is best, its loss worst (it swings)
    score = {low: 0.5, mid: 0.5, high: 0.9}
    cells = {("head", t, lr, 0): cell("head", t, lr, 0, validation=score[lr],
                                       validation_curve=[{"step": 1, "loss": 0.8}, {"step": 2, "loss": lowest[lr]}])
             for lr in lowest for t in SWEEP_TASKS}  # fmt: skip
    assert glue_report.rates("head", cells) == ([low, mid, high], mid)
    assert "| head only | 0.003 | 50.0 | 50.0 | 50.0 | 0.6000 | yes |" in glue_report.sweep_table(cells)


def test_runs_go_breadth_first():
    """Method by method (full fine-tuning first, the head last): seed 0 of a method whose rate is chosen, or
    its sweep (the likely rate first); then seeds 1 and 2; nothing already stored."""
    low, mid, high = GRID["lora"]
    cells = swept("lora", {low: 0.5, mid: 0.7, high: 0.6})
    jobs = glue_suite.next_jobs(cells, {})
    assert jobs[:2] == [Job("full", t, GRID["full"][1], 0) for t in SWEEP_TASKS]  # the reference's likely rate first
    first_tasks = [t for t in TASKS if t not in SWEEP_TASKS]
    after_full = 3 * len(SWEEP_TASKS)
    assert jobs[after_full : after_full + len(first_tasks)] == [Job("lora", t, mid, 0) for t in first_tasks]
    last_other = max(i for i, j in enumerate(jobs) if j[3] == 0 and j[0] != "head")
    assert all(i > last_other for i, j in enumerate(jobs) if j[0] == "head" and j[3] == 0)  # the head comes last
    assert jobs.index(Job("lora", "sst2", mid, 1)) > max(jobs.index(j) for j in jobs if j[3] == 0)
    assert not set(cells) & {j.key for j in jobs}
    assert not any(j.longer for j in jobs)  # no target check before full fine-tuning's seed-0 row
    assert len([j for j in jobs if j[3] == 0 and j[0] not in ("lora", "sparse_lora")]) == sum(  # the others' sweeps
        len(GRID[m]) * len(SWEEP_TASKS) for m in METHODS if m != "lora" and m not in SAME_RATE
    )
    assert [j for j in jobs if j[0] == "sparse_lora" and j[3] == 0] == [Job("sparse_lora", t, mid, 0) for t in TASKS]
    assert glue_report.rates("sparse_lora", {}) == ([], None)  # no sweep of its own, and nothing before LoRA's


def test_a_cell_from_other_settings_is_not_read(tmp_path):
    good = cell("lora", "mrpc", 1e-3, 0)
    stale = cell("lora", "cola", 1e-3, 0)
    stale["argv"] = [*stale["argv"][:-2], "--patience", "9"]  # made when the recipe said otherwise
    for c in (good, stale):
        glue_cells.save(c, tmp_path)
    assert list(glue_cells.load(tmp_path)) == [("lora", "mrpc", 1e-3, 0)]
    assert json.loads((tmp_path / "lora-cola-lr0.001-s0.json").read_text())["argv"][-1] == "9"  # kept, not used


def test_a_run_left_in_the_work_dir_is_stored_only_if_made_with_this_recipe(tmp_path):
    """A finished run that nobody stored is adopted only when its recorded command is today's; one started
    under an older recipe (or with no record of its command) is run again."""
    runner = glue_suite.Runner(tmp_path, {}, quick=False, cells_dir=tmp_path / "cells", longer_dir=tmp_path / "longer")
    key = Job("lora", "cola", 1e-3, 0)
    runner.run_dir(key).mkdir(parents=True)
    (runner.run_dir(key) / "metrics.json").write_text(json.dumps({"finished": True}))
    assert not runner.finished_unseen(key)  # no command recorded: from before the suite recorded them
    runner.command_file(key).write_text(json.dumps([*command(*key)[:-2], "--patience", "9"]))
    assert not runner.finished_unseen(key)  # an older recipe's run
    runner.command_file(key).write_text(json.dumps(command(*key)))
    assert runner.finished_unseen(key)


def test_the_report_differs_from_full_fine_tuning_with_a_standard_error(tmp_path):
    """A method 10 points below full on every task, over 3 seeds each: -10.0 ± its standard error, **."""
    cells = {}
    for method, base in (("full", 0.8), ("lora", 0.7)):
        cells |= swept(method, dict.fromkeys(GRID[method][:1], 0.1) | {GRID[method][1]: 0.9}
                       | dict.fromkeys(GRID[method][2:], 0.2))  # fmt: skip
        lr = GRID[method][1]
        for task in TASKS:
            for seed, noise in zip((0, 1, 2), (-0.01, 0.0, 0.01), strict=True):
                cells[method, task, lr, seed] = cell(method, task, lr, seed, test=base + noise)
    rows = glue_report.table_cells(cells)
    lines = glue_report.against_full(rows)
    # the test set's share in the ±: measured (RTE, STS-B), or accuracy's bound (SST-2, 100 / sqrt(N));
    # none known for F1 and Matthews, so nothing marked there
    assert glue_report.test_size(rows, "sst2") == 10_000  # accuracy's bound: 100 / sqrt(10,000) = 1.0 point
    assert lines[2] == "| LoRA | -10.0 ± 1.3 ** | -10.0 ± 0.8 | -10.0 ± 0.8 | -10.0 ± 1.0 ** | -10.0 ± 3.5 ** |"
    assert glue_report.difference([57.0, 58.0, 59.0], [55.0, 56.0, 57.0], shared=3.4) == "+2.0 ± 3.5"
    baseline = {t: {"accuracy": 0.5, "f1": 0.6, "matthews_correlation": 0.0, "pearson": 0.0} for t in TASKS}
    table = glue_report.main_table(rows, glue_report.chosen_rates(cells), baseline)
    assert table[2].startswith("| majority class / chance | – | 0 | 50.0 |")
    assert "70.0 ± 1.0 (n=3)" in table[4]
    compact = glue_report.compact_table(rows, baseline)  # the README's: means, one score per task
    assert (
        compact[0]
        == "| method | trainable params | SST-2 acc | MRPC F1 | CoLA MCC | STS-B Pearson | RTE acc | average |"
    )
    assert compact[2] == "| majority class / chance | 0 | 50.0 | 60.0 | 0.0 | 0.0 | 50.0 | – |"
    assert compact[4].startswith("| LoRA | ") and compact[4].endswith("| 70.0 | 70.0 | 70.0 | 70.0 | 70.0 | 70.0 |")


def test_fp32_and_bf16_cells_are_compared_only_when_nothing_else_differs():
    """precision_table: a row for a cell stored in both precisions with the same command but --precision;
    none for a cell whose fp32 command differs otherwise (another number of steps)."""
    key, other = ("full", "mrpc", 5e-5, 0), ("full", "cola", 5e-5, 0)
    bf16 = {k: cell(*k, validation=0.8, test=0.85, train_time_s=50.0) for k in (key, other)}
    fp32 = {}
    for k in (key, other):
        argv = [a for a in command(*k) if a not in ("--precision", "bf16")]
        fp32[k] = cell(*k, validation=0.7, test=0.75, train_time_s=100.0) | {"argv": argv}
    fp32[other]["argv"] = [a.replace("3840", "3000") for a in fp32[other]["argv"]]
    lines = glue_report.precision_table(bf16, fp32)
    assert lines[2:] == ["| full-mrpc-lr5e-05-s0 | 75.0 | 85.0 | 70.0 | 80.0 | 1.00 | 0.50 |"]


def test_a_missed_target_is_checked_by_a_run_twice_as_long_right_after_full_fine_tunings_row():
    """Full fine-tuning's seed-0 cells: one task below its target gets a target check (the same command with
    twice the steps, patience only after the usual cap), next in line after that row, and once it is
    stored, no more; the report's targets table shows it beside seed 0."""
    low, mid, high = GRID["full"]
    cells = swept("full", {low: 0.5, mid: 0.7, high: 0.6})
    for task in TASKS:
        if task not in SWEEP_TASKS:
            cells["full", task, mid, 0] = cell("full", task, mid, 0, test=TARGETS[task] + 0.01)
    cells["full", "rte", mid, 0]["metrics"]["test_accuracy"] = TARGETS["rte"] - 0.05  # missed
    for task in SWEEP_TASKS:
        cells["full", task, mid, 0]["metrics"][f"test_{glue_report.SCORE[task]}"] = 0.9  # met
    jobs = glue_suite.next_jobs(cells, {})
    check = Job("full", "rte", mid, 0, longer=True)
    assert [j for j in jobs if j.longer] == [check] and jobs[0] == check  # nothing else of full's is left
    argv = command(*check)
    assert argv[argv.index("--max-steps") + 1] == str(2 * MAX_STEPS["rte"])
    assert argv[argv.index("--patience-from") + 1] == str(MAX_STEPS["rte"])
    assert "--patience-from" not in command(*check.key)  # full fine-tuning's own cells stop by patience alone
    checked = {check.key: cell(*check.key, validation=0.66, test=0.58, longer=True) | {"best_step": 700, "steps": 3500}}
    assert not any(j.longer for j in glue_suite.next_jobs(cells, checked))
    rows = glue_report.table_cells(cells)
    lines = glue_report.targets_table(rows, checked)
    rte = next(line for line in lines if line.startswith("| rte "))
    assert rte == "| rte | accuracy | 60 | 55.0 (n=1) | 58.0 | 50.0, 50 | 66.0, 700, 3500 |"
    assert "not needed" in next(line for line in lines if line.startswith("| cola "))


def test_a_longer_cell_is_stored_apart_and_read_only_as_a_target_check(tmp_path):
    runner = glue_suite.Runner(tmp_path, {}, quick=False, cells_dir=tmp_path / "cells", longer_dir=tmp_path / "longer")
    check = Job("full", "rte", 5e-5, 0, longer=True)
    assert runner.cell_path(check) == tmp_path / "longer" / "full-rte-lr5e-05-s0.json"
    assert runner.run_dir(check).name == "full-rte-lr5e-05-s0-longer"  # never the cell's own run folder
    glue_cells.save(cell(*check.key, longer=True), tmp_path / "longer")
    assert list(glue_cells.load(tmp_path / "longer", longer=True)) == [check.key]
    assert not glue_cells.load(tmp_path / "longer")  # not a cell of the table


def test_the_chance_row_is_a_constant_with_no_error_of_its_own():
    """A method 20 points above chance over 3 seeds that differ by 1 point: +20.0 ± sd/sqrt(3), **; one
    seed: no error yet."""
    assert glue_report.difference([69.0, 70.0, 71.0], 50.0) == "+20.0 ± 0.6 **"
    assert glue_report.difference([50.5, 49.0, 51.5], 50.0) == "+0.3 ± 0.7"
    assert glue_report.difference([70.0], 50.0) == "+20.0 (one seed)"


def test_the_chance_table_adds_the_test_sets_own_error_to_the_seeds():
    """Seeds share one test set, so its sampling error at chance is not in their spread: sqrt(p (1 - p) / N)
    for accuracy (3.0 points for p = 0.527 on 277 examples), 1 / sqrt(N) for MCC and Pearson, none for F1
    (a constant chance row). The chance table adds it to the seeds' error: +4.3 above chance with seeds
    0.5 apart is ** by the seeds alone, not with RTE's 3.0 points beside them."""
    baseline = {t: {"accuracy": 0.527, "f1": 0.8, "matthews_correlation": 0.0, "pearson": 0.0} for t in TASKS}
    assert glue_report.chance_error("rte", baseline, 277) == pytest.approx(2.9998, abs=1e-3)
    assert glue_report.chance_error("cola", baseline, 400) == glue_report.chance_error("stsb", baseline, 400) == 5.0
    assert glue_report.chance_error("mrpc", baseline, 400) == 0.0
    rte = [cell("lora", "rte", 1e-3, s, test=v, examples={"test": 277}) for s, v in enumerate((0.565, 0.575))]
    rows = {"lora": {t: [] for t in TASKS} | {"rte": rte}}
    assert glue_report.test_set_error(rows, baseline).endswith(": 3.0 points on rte's 277")
    assert glue_report.difference([56.5, 57.5], 52.7) == "+4.3 ± 0.5 **"
    assert glue_report.against_chance(rows, baseline)[2] == "| LoRA | – | – | – | – | +4.3 ± 3.0 |"
    assert not glue_report.clearly_above_chance(rte, "rte", baseline)


def test_the_tasks_short_of_chance_are_those_some_method_has_not_clearly_learned():
    """short_of_chance picks the tasks whose curves the README must show: where a method other than the head
    is within twice its standard error of chance over two seeds or more. Here LoRA's CoLA seeds straddle
    chance and full fine-tuning's RTE is one seed only; the head is below chance everywhere, not counted."""
    baseline = {t: {m: 0.5 for m in ("accuracy", "f1", "matthews_correlation", "pearson")} for t in TASKS}
    tests = {
        "lora": dict.fromkeys(TASKS, (0.70, 0.71, 0.69)) | {"cola": (0.505, 0.49, 0.515)},
        "full": dict.fromkeys(TASKS, (0.80, 0.81)) | {"rte": (0.45,)},
        "head": dict.fromkeys(TASKS, (0.4, 0.41)),
    }
    rows = {m: {t: [cell(m, t, 1e-3, s, test=v, examples={"test": 10_000}) for s, v in enumerate(by_task[t])]
                for t in TASKS} for m, by_task in tests.items()}  # fmt: skip
    assert glue_report.short_of_chance(rows, baseline) == ["cola"]
    assert glue_report.clearly_above_chance(rows["lora"]["sst2"], "sst2", baseline)
    assert not glue_report.clearly_above_chance(rows["full"]["rte"], "rte", baseline)  # one seed: not yet


def test_a_run_is_timed_by_its_method_or_else_by_the_task():
    """The deadline check's estimate: the longest stored run of the job's method and task; before the first,
    the longest of any method on that task (an adapter's first RTE run is not started with 5 minutes left
    because it has no cell yet); twice it for a target check."""
    cells = {k: cell(*k, wall_s=s) for k, s in ((("lora", "rte", 3e-4, 0), 1700.0), (("full", "rte", 5e-5, 0), 600.0),
                                                 (("full", "cola", 5e-5, 0), 700.0))}  # fmt: skip
    assert glue_suite.expected_s(Job("lora", "rte", 3e-4, 1), cells) == 1700.0
    assert glue_suite.expected_s(Job("dora", "rte", 1e-3, 0), cells) == 1700.0
    assert glue_suite.expected_s(Job("full", "rte", 5e-5, 0, longer=True), cells) == 1200.0
    assert glue_suite.expected_s(Job("dora", "sst2", 1e-3, 0), cells) is None


def test_a_sparse_lora_cell_keeps_its_gates():
    """Where judging started, the kept ranks per module and the spread at the end; nothing for other methods."""
    gates = [{"module": "layers.0.attention.query", "rank": 3, "r": 8, "zero_fraction": 0.625},
             {"module": "layers.0.attention.value", "rank": 8, "r": 8, "zero_fraction": 0.0}]  # fmt: skip
    spread = {"abs_gate": [0.1, 0.5, 1.2], "b_norm": [0.3, 0.6, 0.9], "xi": [1e-6, 2e-6, 5e-6]}
    metrics = {"sparse_lora_gates": gates, "pruning_started_at": 388, "gate_spread": spread, "test_loss": 0.5}
    fields = glue_cells.sparse_lora_fields(metrics)
    assert fields == {"pruning_started_at": 388, "kept_ranks": [3, 8], "gate_spread": spread}
    assert glue_cells.sparse_lora_fields({"test_loss": 0.5}) == {}
