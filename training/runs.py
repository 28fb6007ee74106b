"""A finished run directory, read back: its metrics.json, and its model rebuilt from the base model and
the saved adapter (evaluate.py and predict.py both need this)."""

import warnings
from pathlib import Path

import methods
from methods.qlora import quantize_linears
from minibert.hub import read_json_object


class RunError(Exception):
    """A run directory that cannot be used; the message names it and says why."""


def read_run(run_dir) -> dict:
    """metrics.json of a finished run, with its directory under "run_dir". Runs made before a field existed
    get what it meant then: no task was WikiText-2, no task_kind was masked LM or (SST-2, IMDB) classification."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a finished run (no metrics.json); train.py writes it at the end of a run")
    metrics = read_json_object(path, RunError)
    if not metrics.get("finished"):
        raise RunError(f"{path}: the run did not finish")
    run = {"task": "wikitext2", **metrics, "run_dir": str(run_dir)}
    run.setdefault("task_kind", "mlm" if run["task"] == "wikitext2" else "classification")
    return run


def check_base_model(run: dict, config) -> None:
    """The base model found at the run's base_model must be the one it was trained on (runs since
    base_shape was recorded: architecture, layers, hidden size)."""
    shape = run.get("base_shape")
    if shape is None:
        return
    trained = (run["architecture"], shape["layers"], shape["hidden_size"])
    found = (config.arch, config.num_layers, config.hidden_size)
    if trained != found:
        raise RunError(
            f"{run['run_dir']} was trained on a {trained[0]} model with {trained[1]} layers and hidden size "
            f"{trained[2]} ({run['base_model']}); the model there now is a {found[0]} model with {found[1]} layers "
            f"and hidden size {found[2]}. Put back the base model it was trained on"
        )


def load_run_model(task, run: dict, device):
    """The base model with the task's head, quantised for a QLoRA (QDoRA) run, with the run's adapter loaded
    (none for a "base" row, which is the base model as it is). A full fine-tuning run's directory holds
    the whole model: it is loaded from there."""
    if run["method"] == "full":
        return task.load_model(run["run_dir"], dtype=None, device=device).eval()
    head_in_run = run["method"] != "base" and run["task_kind"] != "mlm"  # the trained head is loaded next
    with warnings.catch_warnings():
        if head_in_run:  # so "no classifier; initialised with N(0, 0.02)" would be untrue
            warnings.simplefilter("ignore")
        model = task.load_model(run["base_model"], dtype=None, device=device)
    check_base_model(run, model.config)
    if run["method"] in methods.QUANTISED:
        h = run["hyperparameters"]
        quantize_linears(model, blocksize=h["blocksize"], double_quant=not h["no_double_quant"])
    if run["method"] != "base":
        methods.load_adapter(model, run["run_dir"])
    return model.eval()
