"""What a finished run reports: the state a run carries from step to step (and through a checkpoint), and
metrics.json assembled from it: parameters, size, data, time, throughput, memory, validation and test."""

import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

import methods
import quant
from training.device import peak_memory


@dataclass
class RunState:
    step: int = 0  # optimizer steps taken
    best: dict = field(default_factory=lambda: {"step": None})  # the best validation result, with its step
    best_state: dict = field(default_factory=dict)  # the best adapter so far (name -> tensor), as trained
    last_validated: int | None = None  # the step of the last validation
    stale_validations: int = 0  # validations in a row that did not beat the best (--patience)
    stopped_early: bool = False  # whether --patience ended the run before its last step
    train_time: float = 0.0  # seconds spent in training steps
    eval_time: float = 0.0  # seconds spent validating and testing
    samples_seen: int = 0  # training examples (or blocks) so far
    tokens_seen: int = 0  # training tokens so far (padding not counted)

    @classmethod
    def restored(cls, saved: dict, best_state: dict) -> "RunState":
        """The state a checkpoint's state.json holds; a field an older checkpoint lacks keeps its default."""
        fields = {key: saved[key] for key in cls().saved() if key in saved}
        return cls(**fields, best_state=best_state)

    def took(self, seconds: float, samples: int, tokens: int) -> None:
        """One training step done: its time, and the examples (or blocks) and tokens it saw."""
        self.train_time += seconds
        self.samples_seen += samples
        self.tokens_seen += tokens

    def validated(self, result: dict, task, counts: bool) -> bool:
        """Record a validation result; whether it beats the best so far on the metric that picks the
        checkpoint. `counts`: whether a validation that does not beat it counts against --patience."""
        improved = improves(result, self.best, task)
        self.last_validated = self.step
        self.stale_validations = 0 if improved else self.stale_validations + counts
        if improved:
            self.best = {"step": self.step, **result}
        return improved

    def saved(self) -> dict:
        """Everything but the best adapter's tensors (the checkpoint stores those as tensors): JSON."""
        return {key: value for key, value in asdict(self).items() if key != "best_state"}


def improves(result: dict, best: dict, task) -> bool:
    """Whether a validation result beats the best so far on the metric that picks the checkpoint."""
    old, new = best.get(task.selection), result[task.selection]
    return old is None or (new > old if task.higher_is_better else new < old)


def exported_adapter(out_dir: Path) -> dict:
    """What the saved adapter holds (Sparse LoRA's is smaller than what was trained), or the saved head, or
    a full fine-tuning run's whole model: parameters and bytes on disk."""
    names = ("adapter_model.safetensors", "head_model.safetensors", "model.safetensors")
    path = next(out_dir / name for name in names if (out_dir / name).exists())
    with safe_open(str(path), framework="pt") as f:
        params = sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return {"exported_params": params, "exported_file_bytes": path.stat().st_size}


def final_metrics(args, task, model, state: RunState, test_results: dict, device, world: int) -> dict:
    """metrics.json: every measured number of the run. test_results: {split: result} (none without a test file)."""
    trainable, total = methods.count_parameters(model)
    global_batch = args.batch_size * world
    metrics = {
        "finished": True,
        "task": task.name,
        "task_title": task.title,
        "task_kind": task.kind,
        "data_files": args.data_files,  # your files (absolute paths, columns), or None for a named task
        "method": args.method,
        "base_model": args.model,
        "architecture": model.config.arch,
        "base_shape": {"layers": model.config.num_layers, "hidden_size": model.config.hidden_size},
        "hyperparameters": {
            k: v for k, v in vars(args).items() if k not in ("resume", "device", "cache_dir", "data_files")
        },
        "target_modules": model.adapter_config.target_modules,
        "modules_to_save": model.adapter_config.modules_to_save,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100 * trainable / total,
        "model_size_mb": quant.model_bytes(model) / 1e6,
        "steps": state.step,
        "stopped_early": state.stopped_early,
        "epochs": state.step / task.batches_per_epoch(global_batch),
        "metric_names": list(task.metrics),
        "test_splits": list(test_results),
        **task.data_report(global_batch),
        "train_time_s": state.train_time,
        "eval_time_s": state.eval_time,
        "train_samples_per_s": state.samples_seen / state.train_time,
        "train_tokens_per_s": state.tokens_seen / state.train_time,
        **peak_memory(device),
        "best_step": state.best["step"],
        **{f"validation_{key}": value for key, value in state.best.items() if key != "step"},
        **{f"{split}_{key}": value for split, result in test_results.items() for key, value in result.items()},
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "world_size": world,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    return metrics | exported_adapter(Path(args.output_dir))
