"""LoRA, Sparse LoRA and HiRA: equal to the base model at step 0, equal to PEFT on the same adapter
weights (in both directions through the adapter files), exact merge/unmerge, and SoRA's gates."""

import json
import warnings

import peft
import pytest
import torch

import methods
import minibert
from methods.hira import HiRALinear
from methods.lora import LoRALinear
from methods.sora import SoRALinear
from minibert.model import Bert
from tests.conftest import hf_model
from tests.test_parity import batch, max_diff

TOL = 1e-5
ARCHS = ["bert", "distilbert"]


@pytest.fixture
def dirs(bert_dir, distilbert_dir):
    return {"bert": bert_dir[0], "distilbert": distilbert_dir[0]}


def logits(model, arch, seed=0):
    input_ids, attention_mask, token_type_ids, _ = batch(seed=seed)
    kwargs = {"token_type_ids": token_type_ids} if arch == "bert" else {}
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, **kwargs)
    return getattr(out, "logits", out)


def randomise_adapters_(model, seed=0):
    """Non-zero adapter weights (gates included), so that a wrong or missing adapter cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if name.endswith("gate") else 0.0))
    return model


def peft_load(arch, adapter_dir):
    """transformers model with the same base weights + PEFT loading our adapter; fails on any key warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(hf_model(arch), str(adapter_dir)).eval()
    key_warnings = [str(w.message) for w in caught if "key" in str(w.message).lower()]
    assert key_warnings == []
    return model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "sparse_lora", "hira"])
def test_step_zero_equals_base_model(dirs, arch, method):
    base = logits(minibert.from_pretrained(dirs[arch]), arch)
    adapted = methods.apply(minibert.from_pretrained(dirs[arch]), method, r=4, alpha=8)
    assert torch.equal(logits(adapted, arch), base)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "hira"])
def test_our_adapter_in_peft_gives_our_logits(dirs, arch, method, tmp_path):
    ours = randomise_adapters_(methods.apply(minibert.from_pretrained(dirs[arch]), method, r=4, alpha=8, dropout=0.1))
    methods.save_adapter(ours, tmp_path)
    theirs = peft_load(arch, tmp_path)
    base = logits(minibert.from_pretrained(dirs[arch]), arch)
    assert max_diff(logits(ours, arch), base) > 1e-2  # the adapter really changes the output
    assert max_diff(logits(theirs, arch), logits(ours, arch)) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "hira"])
def test_peft_adapter_loads_into_ours(dirs, arch, method, tmp_path):
    targets = ["query", "value", "dense"] if arch == "bert" else ["q_lin", "v_lin", "lin1"]
    if method == "lora":
        config = peft.LoraConfig(
            r=4, lora_alpha=16, target_modules=targets, rank_pattern={targets[1]: 2}, alpha_pattern={targets[1]: 3}
        )
    else:  # PEFT 0.21.2's HiRA dispatcher ignores rank_pattern (it always uses config.r), so none here
        config = peft.HiraConfig(r=4, target_modules=targets)
    theirs = randomise_adapters_(peft.get_peft_model(hf_model(arch), config), seed=1).eval()
    theirs.save_pretrained(tmp_path)
    ours = methods.load_adapter(minibert.from_pretrained(dirs[arch]), tmp_path)
    assert max_diff(logits(ours, arch), logits(theirs, arch)) <= TOL
    ranks = {layer.r for layer in ours.modules() if isinstance(layer, (LoRALinear, HiRALinear))}
    assert ranks == ({2, 4} if method == "lora" else {4})  # rank_pattern honoured


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "sparse_lora", "hira"])
def test_merge_keeps_logits_and_unmerge_restores_exact_weights(dirs, arch, method):
    model = randomise_adapters_(methods.apply(minibert.from_pretrained(dirs[arch]), method, r=4))
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = logits(model, arch)
    methods.merge(model)
    assert max_diff(logits(model, arch), before) <= TOL
    assert any(not torch.equal(v, before_weights[k]) for k, v in model.state_dict().items())  # W really changed
    methods.unmerge(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_weights[key]), key
    with pytest.raises(methods.AdapterError, match="not merged"):
        methods.unmerge(model)


def test_hira_update_is_high_rank_and_lora_is_not(dirs):
    r = 4
    for method, cls in [("hira", HiRALinear), ("lora", LoRALinear)]:
        model = randomise_adapters_(methods.apply(minibert.from_pretrained(dirs["bert"]), method, r=r))
        layer = next(m for m in model.modules() if isinstance(m, cls))
        rank = torch.linalg.matrix_rank(layer.delta_weight().detach()).item()
        if method == "hira":
            assert rank > r, rank
        else:
            assert rank <= r, rank


@pytest.mark.parametrize("method", ["lora", "sparse_lora", "hira"])
def test_gradients_reach_only_the_adapters(dirs, method):
    model = methods.apply(minibert.from_pretrained(dirs["bert"]), method, r=4).train()
    input_ids, attention_mask, _, labels = batch(seed=2)
    model.mlm_loss(input_ids, labels, attention_mask=attention_mask).backward()
    for name, p in model.named_parameters():
        is_adapter = any(part in name for part in ("lora_", "hira_", "gate"))
        assert p.requires_grad == is_adapter, name
        if is_adapter:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    assert all(p.grad.abs().sum() > 0 for name, p in model.named_parameters() if name.endswith(("lora_B", "hira_B")))


# ---- Sparse LoRA (SoRA) ----


def sora_model(directory, sparse_lambda, seed=0):
    model = methods.apply(minibert.from_pretrained(directory), "sparse_lora", r=4, alpha=8, sparse_lambda=sparse_lambda)
    return randomise_adapters_(model, seed)


def train_steps(model, steps, lr):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        input_ids, attention_mask, _, labels = batch(seed=10 + step)
        model.mlm_loss(input_ids, labels, attention_mask=attention_mask).backward()
        optimizer.step()
        optimizer.zero_grad()
        methods.proximal_step(model, optimizer)
    return model.eval()


def test_sora_with_lambda_zero_is_lora(dirs):
    sora = sora_model(dirs["bert"], sparse_lambda=0.0)
    with torch.no_grad():
        for layer in sora.modules():
            if isinstance(layer, SoRALinear):
                layer.gate.fill_(1.0)
    lora = methods.apply(minibert.from_pretrained(dirs["bert"]), "lora", r=4, alpha=8)
    lora.load_state_dict({k: v for k, v in sora.state_dict().items() if not k.endswith("gate")})
    assert max_diff(logits(sora, "bert"), logits(lora, "bert")) <= TOL  # g = 1: exactly LoRA
    train_steps(sora, steps=3, lr=1e-2)
    assert all(row["rank"] == row["r"] for row in methods.gate_report(sora))  # λ = 0 prunes nothing


def test_sora_large_lambda_zeroes_every_gate_and_returns_the_base_model(dirs, tmp_path):
    base = logits(minibert.from_pretrained(dirs["bert"]), "bert")
    sora = train_steps(sora_model(dirs["bert"], sparse_lambda=1000.0), steps=3, lr=1e-2)
    report = methods.gate_report(sora)
    assert len(report) == 4 and all(row["rank"] == 0 and row["zero_fraction"] == 1.0 for row in report)
    assert torch.equal(logits(sora, "bert"), base)
    with pytest.raises(methods.AdapterError, match="every gate .* is zero"):
        methods.save_adapter(sora, tmp_path)


def test_param_groups_train_the_gates_faster_and_without_weight_decay(dirs):
    model = sora_model(dirs["bert"], sparse_lambda=1e-3)
    adapters, gates = methods.sora.param_groups(model, weight_decay=0.01)
    gate_ids = {id(m.gate) for m in model.modules() if isinstance(m, SoRALinear)}
    assert {id(p) for p in gates["params"]} == gate_ids and len(gate_ids) == 4
    assert gates["lr_scale"] == methods.sora.GATE_LR_SCALE == 10 and gates["weight_decay"] == 0.0
    assert adapters["lr_scale"] == 1.0 and adapters["weight_decay"] == 0.01
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in adapters["params"]} == trainable - gate_ids


def test_soft_threshold_is_exact():
    layer = SoRALinear(torch.nn.Linear(8, 8), r=5, alpha=5, dropout=0.0, sparse_lambda=2.0)
    with torch.no_grad():
        layer.gate.copy_(torch.tensor([0.5, -0.5, 0.1, -0.1, 0.0]))
    grad_rms = torch.tensor([1.0, 2.0, 1.0, 4.0, 1.0])  # ξ = lr λ / sqrt(v̂) = 0.2, 0.1, 0.2, 0.05, 0.2
    layer.proximal_step(lr=0.1, grad_rms=grad_rms, eps=0.0)
    assert layer.gate.tolist() == pytest.approx([0.3, -0.4, 0.0, -0.05, 0.0])
    assert (layer.gate[2] == 0).all() and layer.rank() == 3


def fit_low_rank_target(steps, sparse_lambda, k=3, r=8, d=64, lr=3e-3, warmup=20, seed=0, onset=0):
    """SoRA on one linear layer whose target update has rank k < r: y = (W0 + ΔW*) x + noise, mean squared
    error, AdamW with warm-up and linear decay, pruning after the warm-up (as train.py does). With onset > 0
    the target update is zero before step `onset` (y = W0 x + noise): a task whose signal comes late.
    Returns (non-zero gates, the mean squared error left above the noise floor of the final target)."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d, d, generator=g) / d**0.5
    u, v = torch.linalg.qr(torch.randn(d, k, generator=g))[0], torch.linalg.qr(torch.randn(d, k, generator=g))[0]
    target = u @ torch.diag(torch.linspace(1.0, 0.5, k)) @ v.T  # (d, d), rank k
    base = torch.nn.Linear(d, d)
    with torch.no_grad():
        base.weight.copy_(w0)
        base.bias.zero_()
    torch.manual_seed(seed)
    layer = SoRALinear(base, r=r, alpha=2 * r, dropout=0.0, sparse_lambda=sparse_lambda)
    optimizer = torch.optim.AdamW(methods.sora.param_groups(layer, weight_decay=0.01), lr=lr)  # as train.py
    for step in range(steps):
        step_lr = lr * ((step + 1) / warmup if step < warmup else (steps - step) / (steps - warmup))
        for group in optimizer.param_groups:
            group["lr"] = step_lr * group["lr_scale"]
        x = torch.randn(64, d, generator=g)
        update = target if step >= onset else torch.zeros_like(target)
        y = x @ (w0 + update).T + 0.1 * torch.randn(64, d, generator=g)
        ((layer(x) - y) ** 2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= warmup:
            methods.proximal_step(layer, optimizer)
    with torch.no_grad():
        x = torch.randn(4096, d, generator=g)
        excess = ((layer(x) - x @ (w0 + target).T) ** 2).mean().item()
    return layer.rank(), excess


@pytest.mark.parametrize("steps", [300, 3000])
def test_sora_keeps_the_ranks_the_task_needs_however_long_the_run(steps):
    """A rank-3 target and r = 8: 3 gates survive after N and after 10 N steps, and the fit is at its floor
    (noise variance 0.01; the error above it is what the adapter failed to learn)."""
    rank, excess = fit_low_rank_target(steps, sparse_lambda=3e-3)
    assert rank == 3, rank
    assert excess < 1e-3, excess  # measured: 1.4e-4 after 300 steps, 6e-6 after 3,000


@pytest.mark.xfail(strict=True, reason="issue 16, open: a rank cut before the signal arrives never returns")
@pytest.mark.parametrize("steps", [300, 3000])
def test_sora_keeps_the_ranks_of_a_target_that_appears_late(steps):
    """The same rank-3 target, zero for the first third of the run (the warm-up is 20 steps). Before it
    appears every gate's gradient is noise and the data asks for no update at all, so the proximal step
    zeroes every gate; a zero gate stops its B and A from learning, and no rank comes back. Today: 0 gates
    left and an excess error of 2.8e-2 after 300 and after 3,000 steps (docs/sparse_lora.md). Strict: the
    day a rule makes this pass, the marker must go."""
    rank, excess = fit_low_rank_target(steps, sparse_lambda=3e-3, onset=steps // 3)
    assert rank == 3, rank
    assert excess < 1e-3, excess


@pytest.mark.parametrize("arch", ARCHS)
def test_pruned_sora_exports_a_smaller_lora_that_peft_reproduces(dirs, arch, tmp_path):
    sora = sora_model(dirs[arch], sparse_lambda=2.0, seed=3)
    layers = [m for m in sora.modules() if isinstance(m, SoRALinear)]
    with torch.no_grad():
        layers[0].gate[:3] = 0.0  # rank 4 -> 1
        layers[1].gate[1] = 0.0  # rank 4 -> 3
        layers[2].gate.zero_()  # left out of the file
    methods.save_adapter(sora, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] is None
    assert sorted(config["rank_pattern"].values()) == [1, 3] and len(config["target_modules"]) == 3
    theirs = peft_load(arch, tmp_path)
    assert max_diff(logits(theirs, arch), logits(sora, arch)) <= TOL
    reloaded = methods.load_adapter(minibert.from_pretrained(dirs[arch]), tmp_path)
    assert max_diff(logits(reloaded, arch), logits(sora, arch)) <= TOL
    assert sum(p.numel() for p in reloaded.parameters() if p.requires_grad) < sum(
        p.numel() for name, p in sora.named_parameters() if p.requires_grad and not name.endswith("gate")
    )


# ---- counts ----


@pytest.mark.parametrize(
    "hf_config, trainable, total",
    [
        ("BERT_BASE_UNCASED", 294_912, 109_809_210),
        ("DISTILBERT_BASE_UNCASED", 147_456, 67_132_986),
    ],
)
@pytest.mark.parametrize("method", ["lora", "hira", "sparse_lora"])
def test_full_size_counts(hf_config, trainable, total, method):
    from tests import test_parity

    with torch.device("meta"):
        model = Bert(minibert.BertConfig.from_hf_dict(getattr(test_parity, hf_config)))
        methods.apply(model, method, r=8, alpha=16)
    gates = 8 * (24 if hf_config.startswith("BERT") else 12) if method == "sparse_lora" else 0  # r per module
    assert methods.count_parameters(model) == (trainable + gates, total + gates)


# ---- bad input ----


def test_bad_arguments_are_clear_errors(dirs):
    model = minibert.from_pretrained(dirs["bert"])
    with pytest.raises(methods.AdapterError, match="unknown method 'dora'; choose one of lora, sparse_lora, hira"):
        methods.apply(model, "dora")
    with pytest.raises(methods.AdapterError, match="r must be a positive integer, got 0"):
        methods.apply(model, "lora", r=0)
    with pytest.raises(
        methods.AdapterError, match=r"\['q_lin'\] match no linear layer .*\['dense', 'key', 'query', 'value'\]"
    ):
        methods.apply(model, "lora", target_modules=["q_lin"])
    with pytest.raises(methods.AdapterError, match=r"has no option\(s\) \['sparse_lambda'\]"):
        methods.apply(model, "lora", sparse_lambda=1.0)
    methods.apply(model, "lora")
    with pytest.raises(methods.AdapterError, match="already has adapters"):
        methods.apply(model, "hira")


def test_dense_target_matches_like_peft(dirs):
    """'dense' selects attention.output.dense, intermediate.dense, output.dense and the head's transform."""
    model = methods.apply(minibert.from_pretrained(dirs["bert"]), "lora", target_modules=["dense"])
    adapted = sorted(name for name, m in model.named_modules() if isinstance(m, LoRALinear))
    assert adapted == sorted(
        [f"layers.{i}.{n}" for i in range(2) for n in ("attention.output", "ffn_in", "ffn_out")] + ["head.transform"]
    )


def test_load_adapter_refuses_foreign_or_mismatched_files(dirs, tmp_path):
    model = randomise_adapters_(methods.apply(minibert.from_pretrained(dirs["bert"]), "lora", r=4))
    methods.save_adapter(model, tmp_path)
    config_path = tmp_path / "adapter_config.json"
    config = json.loads(config_path.read_text())

    config_path.write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(methods.AdapterError, match="peft_type 'IA3' is not supported"):
        methods.load_adapter(minibert.from_pretrained(dirs["bert"]), tmp_path)

    config_path.write_text(json.dumps({**config, "r": 3}))
    with pytest.raises(methods.AdapterError, match=r"lora_A.weight has shape \(4, 32\), the config implies \(3, 32\)"):
        methods.load_adapter(minibert.from_pretrained(dirs["bert"]), tmp_path)

    config_path.write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(methods.AdapterError, match="use_dora=True is not supported"):
        methods.load_adapter(minibert.from_pretrained(dirs["bert"]), tmp_path)

    config_path.write_text(json.dumps({**config, "target_modules": ["key"]}))
    with pytest.raises(methods.AdapterError, match="keys do not match the adapter config"):
        methods.load_adapter(minibert.from_pretrained(dirs["bert"]), tmp_path)

    config_path.unlink()
    with pytest.raises(methods.AdapterError, match="adapter_config.json: not found"):
        methods.load_adapter(minibert.from_pretrained(dirs["bert"]), tmp_path)


def test_save_refuses_a_model_without_adapters_or_merged(dirs, tmp_path):
    model = minibert.from_pretrained(dirs["bert"])
    with pytest.raises(methods.AdapterError, match="no adapter to save"):
        methods.save_adapter(model, tmp_path)
    methods.merge(methods.apply(model, "lora"))
    with pytest.raises(methods.AdapterError, match="call methods.unmerge"):
        methods.save_adapter(model, tmp_path)
