"""Merge a trained run into one full model that anyone with transformers can load, without PEFT or this project.

    python merge.py runs/lora-sst2-bert-base-uncased merged/sst2-lora
    # then, anywhere:  AutoModelForSequenceClassification.from_pretrained("merged/sst2-lora")

The run's adapter is folded into the base weights, W = W0 + ΔW (PEFT's merge_and_unload): LoRA's
(alpha/r) B A, Sparse LoRA's gated B diag(g) A (its pruned ranks add nothing), HiRA's W0 ⊙ (B A), DoRA's
m ⊙ (W0 + s B A) / ||W0 + s B A||_c - W0. A QLoRA (QDoRA) run's base is 4-bit: it is first dequantised,
W0 = dequant(W0_nf4), which is what the adapter was trained on (not the original fp32 weights; the card
says so). The head trained in full is copied as it is. A full fine-tuning run has nothing to merge (its
directory already is such a checkpoint): it is copied, and the last line says so.

OUT gets config.json (architectures, id2label/label2id from the run's classes, problem_type for regression),
model.safetensors under transformers' names (minibert/save.py), the base model's tokenizer files and a
README.md card. `AutoModelForSequenceClassification.from_pretrained(OUT)` (AutoModelForMaskedLM for a
masked-LM run) loads it with no missing or unexpected key and gives the run's logits; so does
`minibert.from_pretrained(OUT)`. OUT is written whole or not at all, and an existing OUT is never replaced.
Exit codes: 0 done; 2 a bad run or OUT (one line); 4 OUT could not be written.
"""

import argparse
import sys
from pathlib import Path

import methods
import tasks
from methods.qlora import dequantize_linears
from minibert.files import WriteError, write_directory_atomically, write_file
from minibert.save import save_model_directory
from training.exits import USER_ERRORS
from training.runs import RunError, load_run_model, read_run


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run directory written by train.py (it holds metrics.json)")
    p.add_argument("out_dir", help="a new directory for the merged model (must not exist, or be empty)")
    return p.parse_args(argv)


def merged_model(run: dict):
    """The run's model with its adapter folded in for good: the plain base architecture (see the module doc)."""
    model = load_run_model(tasks.from_run(run), run, "cpu")
    if run["method"] in methods.QUANTISED:
        dequantize_linears(model)  # W0 = dequant(W0_nf4), then LoRA (DoRA) merges into it
    return methods.merge_and_unload(model)


def card(run: dict) -> str:
    dequantised = (
        "\n**The base weights are the NF4-dequantised ones the QLoRA adapter was trained on**, "
        "dequant(W0_nf4), not the original full-precision weights of the base model.\n"
        if run["method"] in methods.QUANTISED
        else ""
    )
    labels = ", ".join(run.get("label_names") or []) or "none (masked LM)"
    if run["task_kind"] == "regression":
        labels = "one score (regression)"
    what = f"The adapter of the run `{run['run_dir']}` folded into {run['base_model']} (W = W0 + ΔW)"
    method = f"{run['method']}, r = {run['hyperparameters']['r']}"
    if run["method"] == "full":
        what, method = f"The run `{run['run_dir']}`, {run['base_model']} with every weight fine-tuned", "full"
    return f"""# {run["base_model"]} + {run["method"]}, merged ({run["task"]})

{what}: a plain transformers model, no PEFT needed.{dequantised}
- Task: {run.get("task_title", run["task"])}; labels: {labels}
- Method: {method}, trained {run["steps"]} steps
- Load: `AutoModelForSequenceClassification.from_pretrained("path/to/this/directory")` (a masked-LM run:
  `AutoModelForMaskedLM`), or `minibert.from_pretrained("path/to/this/directory")`
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out_dir)
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RunError(f"{out}: already exists and is not an empty directory; choose a new OUT")
        run = read_run(args.run_dir)
        model = merged_model(run)

        def fill(directory: Path):
            save_model_directory(model, directory, run["base_model"], run.get("label_names"))
            write_file(directory / "README.md", lambda target: Path(target).write_text(card(run), encoding="utf-8"))

        out.parent.mkdir(parents=True, exist_ok=True)
        write_directory_atomically(out, fill)
    except (RunError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    if run["method"] == "full":
        print(f"nothing to merge: {args.run_dir} is a full fine-tuning run (no adapter); copied it to {out}",
              file=sys.stderr)  # fmt: skip
    else:
        print(f"merged {args.run_dir} into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
