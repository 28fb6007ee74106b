"""Merge a trained run into one full model that anyone with transformers can load, without PEFT or this project.

    python merge.py runs/lora-sst2-bert-base-uncased merged/sst2-lora
    # then, anywhere:  AutoModelForSequenceClassification.from_pretrained("merged/sst2-lora")

The run's adapter is folded into the base weights, W = W0 + ΔW (PEFT's merge_and_unload): LoRA's
(alpha/r) B A, Sparse LoRA's gated B diag(g) A (its pruned ranks add nothing), HiRA's W0 ⊙ (B A). A QLoRA
run's base is 4-bit: it is first dequantised, W0 = dequant(W0_nf4), which is what the adapter was trained
on (not the original fp32 weights; the card says so). The head trained in full is copied as it is.

OUT gets config.json (architectures, id2label/label2id from the run's classes, problem_type for regression),
model.safetensors under transformers' names (minibert/save.py), the base model's tokenizer files and a
README.md card. `AutoModelForSequenceClassification.from_pretrained(OUT)` (AutoModelForMaskedLM for a
masked-LM run) loads it with no missing or unexpected key and gives the run's logits; so does
`minibert.from_pretrained(OUT)`. OUT is written whole or not at all, and an existing OUT is never replaced.
Exit codes: 0 done; 2 a bad run or OUT (one line); 4 OUT could not be written.
"""

import argparse
import shutil
import sys
from pathlib import Path

import methods
import tasks
from methods.qlora import dequantize_linears
from minibert.files import WriteError, write_directory_atomically, write_file
from minibert.hub import fetch, model_files, read_json_object
from minibert.save import save_pretrained
from train import USER_ERRORS
from training.runs import RunError, load_run_model, read_run

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run directory written by train.py (it holds metrics.json)")
    p.add_argument("out_dir", help="a new directory for the merged model (must not exist, or be empty)")
    return p.parse_args(argv)


def merged_model(run: dict):
    """The run's model with its adapter folded in for good: the plain base architecture (see the module doc)."""
    model = load_run_model(tasks.from_run(run), run, "cpu")
    if run["method"] == "qlora":
        dequantize_linears(model)  # W0 = dequant(W0_nf4), then LoRA merges into it
    return methods.merge_and_unload(model)


def card(run: dict) -> str:
    dequantised = (
        "\n**The base weights are the NF4-dequantised ones the QLoRA adapter was trained on**, "
        "dequant(W0_nf4), not the original full-precision weights of the base model.\n"
        if run["method"] == "qlora"
        else ""
    )
    labels = ", ".join(run.get("label_names") or []) or "none (masked LM)"
    if run["task_kind"] == "regression":
        labels = "one score (regression)"
    return f"""# {run["base_model"]} + {run["method"]}, merged ({run["task"]})

The adapter of the run `{run["run_dir"]}` folded into {run["base_model"]} (W = W0 + ΔW): a plain
transformers model, no PEFT needed.{dequantised}
- Task: {run.get("task_title", run["task"])}; labels: {labels}
- Method: {run["method"]}, r = {run["hyperparameters"]["r"]}, trained {run["steps"]} steps
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
        base_config = read_json_object(model_files(run["base_model"]).config)
        tokenizer_files = [path for name in TOKENIZER_FILES if (path := fetch(run["base_model"], name)) is not None]

        def fill(directory: Path):
            save_pretrained(model, directory, base_config, run.get("label_names"))
            for path in tokenizer_files:
                write_file(directory / path.name, lambda target, source=path: shutil.copyfile(source, target))
            write_file(directory / "README.md", lambda target: Path(target).write_text(card(run), encoding="utf-8"))

        out.parent.mkdir(parents=True, exist_ok=True)
        write_directory_atomically(out, fill)
    except (RunError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    print(f"merged {args.run_dir} into {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
