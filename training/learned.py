"""What a run learned, as matrices: for every adapted layer the base weight W0 and the update ΔW, so that
each analysis can ask the papers' questions of it.

  LoRA, QLoRA    ΔW = (alpha/r) B A                            (Hu et al. 2022, Eq. 3)
  Sparse LoRA    ΔW = (alpha/r) B diag(g) A, saved pruned as a plain LoRA (Ding et al. 2023, §3)
  HiRA           ΔW = W0 ⊙ (B A)                               (Huang et al. 2025, Eq. 4)
  DoRA           ΔW = m ⊙ (W0 + s B A) / ||W0 + s B A||_c - W0  (Liu et al. 2024, Eq. 5)
  full           ΔW = W - W0 of the same layers the adapters target (query and value by default)

Each comes from the method's own `delta_weight()` (methods/), the same ΔW that merge.py folds in, so an
analysis looks at exactly what the model computes. A QLoRA run's W0 is the dequantised NF4 weight it was
trained on. `along_the_run` reads the run's checkpoints (train.py --save-every, --keep-checkpoints) to
give the adapted weights W0 + ΔW at several steps, for the analyses of how an update grows.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

import methods
import minibert
import tasks
from methods.inject import DEFAULT_TARGETS, adapter_layers, find_targets
from training.checkpoints import checkpoint_dirs
from training.runs import RunError, load_run_model, read_run


@dataclass
class Layer:
    w0: torch.Tensor  # (out, in) the base weight the run started from (float32)
    delta: torch.Tensor  # (out, in) ΔW, what the run added to it
    a: torch.Tensor | None  # (r, in) LoRA's A (LoRA, QLoRA, Sparse LoRA, DoRA), else None


@dataclass
class Run:
    path: Path  # the run directory
    method: str  # train.py --method
    base_model: str  # where its base model is
    metrics: dict  # its metrics.json
    layers: dict[str, Layer]  # our module name ("layers.0.attention.query") -> what it learned


def base_encoder(base_model: str):
    """The base model's encoder alone (W0 of every layer), as the run started from it. Its masked-LM head is
    never looked at, so the warning that a checkpoint has none would be noise here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minibert.from_pretrained(base_model).requires_grad_(False)


@torch.no_grad()
def load(run_dir) -> Run:
    """A finished run as a Run (see the module doc). A run that trained no weight of the encoder (method
    "head") has no update to analyse: a RunError says so."""
    run = read_run(run_dir)
    if run["method"] not in methods.METHODS:
        raise RunError(f"{run_dir}: method {run['method']!r} is not one of {', '.join(methods.METHODS)}")
    if run["method"] == "head":
        raise RunError(f"{run_dir}: a head-only run changes no weight of the encoder, so it has no ΔW to analyse")
    model = load_run_model(tasks.from_run(run), run, "cpu")
    if run["method"] == "full":
        base = base_encoder(run["base_model"])
        names = find_targets(base, DEFAULT_TARGETS[base.config.arch])
        layers = {}
        for name in names:
            w0 = base.get_submodule(name).weight.detach().float()
            w = model.get_submodule(name).weight.detach().float()
            layers[name] = Layer(w0, w - w0, None)
    else:
        layers = {name: Layer(layer.base_weight().detach(), layer.delta_weight().detach().float(),
                              None if getattr(layer, "lora_A", None) is None else layer.lora_A.detach())
                  for name, layer in adapter_layers(model).items()}  # fmt: skip
    return Run(Path(run_dir), run["method"], run["base_model"], run, layers)


@torch.no_grad()
def training_model(metrics: dict):
    """The model as train.py built it before its first step: the global seed set to the run's, the base
    model loaded with the task's head, the method put in (Sparse LoRA with its gates, not the pruned LoRA
    it saves). The head is drawn from its own fixed seed and takes nothing from the global generator, so
    the adapters' initial values are exactly the run's."""
    h, method = metrics["hyperparameters"], metrics["method"]
    torch.manual_seed(h["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tasks.from_run(metrics).load_model(metrics["base_model"], dtype=None, device="cpu")
    if method == "full":
        return methods.apply(model, method)
    options = {"sparse_lambda": h["sparse_lambda"], "rule": h.get("sora_rule") or methods.sora.DEFAULT_RULE,
               "l1": h.get("sora_l1")} if method == "sparse_lora" else {}  # fmt: skip
    if method in methods.QUANTISED:
        options = {"blocksize": h["blocksize"], "double_quant": not h["no_double_quant"]}
    targets = h["target_modules"].split(",") if h.get("target_modules") else None
    return methods.apply(model, method, r=h["r"], alpha=h["alpha"] or 16, dropout=h["dropout"],
                         target_modules=targets, **options)  # fmt: skip


def initial_a(run: Run) -> dict[str, torch.Tensor]:
    """LoRA's A of every adapted layer as the run started, its random initialisation (training_model). Two
    runs that share a seed share it: the subspace analysis compares the trained A's overlap with this."""
    layers = adapter_layers(training_model(run.metrics))
    return {name: layer.lora_A.detach().clone() for name, layer in layers.items() if hasattr(layer, "lora_A")}


@torch.no_grad()
def along_the_run(run_dir) -> list[tuple[int, dict[str, torch.Tensor]]]:
    """[(step, {module: W0 + ΔW at that step})] for every checkpoint the run kept, oldest first, and the
    finished run last. Needs train.py --save-every (and --keep-checkpoints for more than two)."""
    run = read_run(run_dir)
    model = training_model(run)  # the checkpoints hold its trainable parameters, by name
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    points = []
    for checkpoint in reversed(checkpoint_dirs(run_dir)):
        with safe_open(str(checkpoint / "state.safetensors"), framework="pt") as f:
            for name, p in trained.items():
                if f"param.{name}" in f.keys():
                    p.copy_(f.get_tensor(f"param.{name}"))
        points.append((int(checkpoint.name.split("-")[1]), adapted_weights(model, run["method"])))
    if not points:
        raise RunError(f"{run_dir}: no checkpoints; train with --save-every N --keep-checkpoints K to follow a run")
    final = load_run_model(tasks.from_run(run), run, "cpu")
    points.append((run["steps"], adapted_weights(final, run["method"])))
    return points


def adapted_weights(model, method: str) -> dict[str, torch.Tensor]:
    """W0 + ΔW of each adapted layer (full fine-tuning: the default target layers' weights)."""
    if method == "full":
        return {n: model.get_submodule(n).weight.detach().float().clone()
                for n in find_targets(model, DEFAULT_TARGETS[model.config.arch])}  # fmt: skip
    return {
        n: (layer.base_weight() + layer.delta_weight().float()).detach() for n, layer in adapter_layers(model).items()
    }
