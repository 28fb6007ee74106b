"""NF4 against bitsandbytes (byte for byte), Linear4bit, and QLoRA (accuracy, gradients, memory)."""

import json

import bitsandbytes.functional as bnb
import pytest
import torch
import torch.nn.functional as F

import methods
import minibert
import quant
from methods.lora import LoRALinear
from minibert.model import Bert
from quant.nf4 import DOUBLE_QUANT_BLOCKSIZE, NF4_CODE, NF4Tensors, nf4_levels, nf4_levels_fast
from tests.test_parity import BERT_BASE_UNCASED, DISTILBERT_BASE_UNCASED, batch


def test_codes_equal_bitsandbytes():
    assert torch.equal(quant.NF4_CODE, bnb.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(quant.DYNAMIC_CODE, bnb.create_dynamic_map())
    assert quant.NF4_CODE[0] == -1.0 and quant.NF4_CODE[7] == 0.0 and quant.NF4_CODE[-1] == 1.0
    assert (quant.NF4_CODE < 0).sum() == 7 and (quant.NF4_CODE > 0).sum() == 8


def hard_weights(shape, blocksize, seed):
    """Random normal weights with an all-zero block, and a block made of exact level midpoints."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g).reshape(-1)
    if w.numel() >= 3 * blocksize:
        w[:blocksize] = 0.0  # an all-zero block
        code = quant.NF4_CODE
        midpoints = ((code[:-1] + code[1:]) / 2).repeat(blocksize)[: blocksize - 1]
        w[blocksize : 2 * blocksize - 1] = midpoints * 2.0  # on the midpoints once scaled by absmax 2 (exact)
        w[2 * blocksize - 1] = -2.0  # the block's absmax
    return w.reshape(shape)


SHAPES = [(64, 48), (37, 13), (3, 5), (1000,), (1,), (96, 200)]


@pytest.mark.parametrize("blocksize", [64, 128])
@pytest.mark.parametrize("shape", SHAPES)
def test_nf4_bytes_and_dequantisation_equal_bitsandbytes(shape, blocksize):
    w = hard_weights(shape, blocksize, seed=sum(shape))
    ours = quant.quantize_nf4(w, blocksize=blocksize, double_quant=False)
    packed, state = bnb.quantize_4bit(w, blocksize=blocksize, compress_statistics=False, quant_type="nf4")
    assert ours.packed.dtype == torch.uint8 and ours.packed.numel() == (w.numel() + 1) // 2
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.absmax, state.absmax)
    # bitsandbytes 0.50.2's CPU dequantize_4bit is wrong for some 2-D shapes on some CPUs (errors of 2.0 on
    # N(0,1) weights for (64, 48) here) although its bytes are right; the same bytes quantised from the
    # flattened weight take its 1-D path, which is correct everywhere, so compare with that.
    flat_packed, flat_state = bnb.quantize_4bit(w.reshape(-1), blocksize=blocksize, compress_statistics=False,
                                                quant_type="nf4")  # fmt: skip
    assert torch.equal(flat_packed.reshape(-1), packed.reshape(-1))
    assert torch.equal(ours.dequantize(), bnb.dequantize_4bit(flat_packed, flat_state).reshape(shape))


@pytest.mark.parametrize("numel", [1, 2, 7, 4096])
def test_the_fast_gather_equals_the_plain_one(numel):
    """nf4_levels_fast (one gather per byte) is an optimisation of nf4_levels (one per weight), bit for bit."""
    packed = torch.randint(
        0, 256, ((numel + 1) // 2,), generator=torch.Generator().manual_seed(numel), dtype=torch.uint8
    )
    plain = nf4_levels(packed, numel)
    assert plain.shape == (numel,) and torch.equal(nf4_levels_fast(packed, numel), plain)
    assert plain[0] == NF4_CODE[int(packed[0]) >> 4]  # the first weight is the first byte's high nibble


def test_midpoints_go_to_the_lower_level():
    w = torch.cat([(quant.NF4_CODE[:-1] + quant.NF4_CODE[1:]) / 2, torch.tensor([1.0])])  # absmax 1
    q = quant.quantize_nf4(w, blocksize=64, double_quant=False)
    index = torch.stack([q.packed >> 4, q.packed & 15], dim=1).reshape(-1)[: w.numel()]
    assert index.tolist() == list(range(15)) + [15]


@pytest.mark.parametrize("blocksize", [64, 128])
@pytest.mark.parametrize("shape", [(256, 256), (300, 70), (1000,)])
def test_double_quantisation_against_bitsandbytes(shape, blocksize):
    """4-bit bytes identical. The 8-bit absmax codes: we take the exact nearest level; bitsandbytes' CPU
    quantiser uses a lookup table that picks the neighbouring code for a few values. So we require codes
    within one step, differing for under 2% of the blocks, dequantised weights bit-identical in every
    block whose code agrees, and elsewhere off by at most one step of the 8-bit code times |level|."""
    w = hard_weights(shape, blocksize, seed=7)
    ours = quant.quantize_nf4(w, blocksize=blocksize, double_quant=True)
    packed, state = bnb.quantize_4bit(w, blocksize=blocksize, compress_statistics=True, quant_type="nf4")
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.absmax_offset, state.offset)
    assert ours.absmax.dtype == torch.uint8 and ours.absmax.numel() == state.absmax.numel()
    code_step = (ours.absmax.int() - state.absmax.int()).abs()
    assert code_step.max() <= 1 and (code_step > 0).float().mean() < 0.02
    theirs = bnb.dequantize_4bit(packed, state).reshape(-1)
    mine = ours.dequantize().reshape(-1)
    same = (code_step == 0).repeat_interleave(blocksize)[: w.numel()]
    assert torch.equal(mine[same], theirs[same])
    largest_step = (quant.DYNAMIC_CODE[1:] - quant.DYNAMIC_CODE[:-1]).max() * ours.absmax_scale.max()
    assert (mine - theirs).abs().max() <= largest_step + 1e-6


def test_double_quantisation_storage_is_4_127_bits_per_weight():
    w = torch.randn(768, 3072)
    q = quant.quantize_nf4(w, blocksize=64, double_quant=True)
    stored = q.packed.numel() + q.absmax.numel() + 4 * q.absmax_scale.numel() + 4
    assert 8 * stored / w.numel() == pytest.approx(4 + 8 / 64 + 32 / (64 * DOUBLE_QUANT_BLOCKSIZE), abs=1e-4)
    single = quant.quantize_nf4(w, blocksize=64, double_quant=False)
    assert 8 * (single.packed.numel() + 4 * single.absmax.numel()) / w.numel() == 4.5


def test_bad_input_is_a_clear_error():
    with pytest.raises(quant.QuantError, match="only float weights can be quantised, got torch.int64"):
        quant.quantize_nf4(torch.arange(64))
    for blocksize in (48, 16, 0):
        with pytest.raises(quant.QuantError, match=f"blocksize must be a power of two >= 32, got {blocksize}"):
            quant.quantize_nf4(torch.randn(64), blocksize=blocksize)
    q = quant.quantize_nf4(torch.randn(8, 16), blocksize=64, double_quant=False)
    wrong = NF4Tensors(q.packed, q.absmax, None, None, torch.Size([8, 17]), 64)
    with pytest.raises(quant.QuantError, match=r"64 packed torch.uint8 values cannot hold a weight of shape \(8, 17\)"):
        quant.dequantize_nf4(wrong)


# ---- Linear4bit ----


def test_linear4bit_forward_and_gradients():
    torch.manual_seed(0)
    linear = torch.nn.Linear(96, 40)
    layer = quant.Linear4bit.from_linear(linear, blocksize=64, double_quant=True, compute_dtype=torch.float32)
    x = torch.randn(3, 5, 96, requires_grad=True)
    y = layer(x)
    expected = F.linear(x, layer.weight_nf4.dequantize(), linear.bias)
    assert torch.equal(y, expected)
    half_widest_gap = (quant.NF4_CODE[1:] - quant.NF4_CODE[:-1]).max() / 2  # the worst rounding, relative to absmax
    assert (layer.weight_nf4.dequantize() - linear.weight).abs().max() <= half_widest_gap * linear.weight.abs().max()
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not b.requires_grad for b in layer.buffers())
    assert [p.requires_grad for p in layer.parameters()] == [False]  # only the (frozen) bias is a parameter


def test_linear4bit_keeps_the_input_dtype():
    layer = quant.Linear4bit.from_linear(torch.nn.Linear(64, 64).to(torch.bfloat16), compute_dtype=torch.float32)
    assert layer(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


# ---- QLoRA ----


def logits(model, seed=0):
    input_ids, attention_mask, token_type_ids, _ = batch(seed=seed)
    with torch.no_grad():
        return model(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)


def test_qlora_logits_stay_close_to_fp32(bert_dir):
    fp32 = logits(minibert.from_pretrained(bert_dir[0]))
    qlora = methods.apply(minibert.from_pretrained(bert_dir[0]), "qlora", r=4, alpha=8)
    assert all(isinstance(m, quant.Linear4bit) for name, m in qlora.named_modules() if name.endswith("ffn_in"))
    got = logits(qlora)
    # Measured on this tiny random model (hidden 32, weights ~N(0, 0.2), every linear in 4 bits): cosine
    # 0.973, max |Δ| 1.28 on logits up to 3.8. Real checkpoints fare better (larger blocks of smooth
    # weights); this bound catches a wrong code, scale or nibble order, which give cosines near 0.
    cosine = F.cosine_similarity(got.flatten(), fp32.flatten(), dim=0).item()
    assert cosine > 0.95, cosine


def test_qlora_gradients_reach_only_the_lora_factors(bert_dir):
    model = methods.apply(minibert.from_pretrained(bert_dir[0]), "qlora", r=4).train()
    input_ids, attention_mask, _, labels = batch(seed=2)
    model.mlm_loss(input_ids, labels, attention_mask=attention_mask).backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_A", "lora_B")) for name in trainable)
    assert all(p.grad is not None for name, p in model.named_parameters() if name.endswith("lora_B"))
    assert all(p.grad is None for name, p in model.named_parameters() if name not in trainable)


def test_qlora_refuses_merge_and_saves_a_plain_lora(bert_dir, tmp_path):
    model = methods.apply(minibert.from_pretrained(bert_dir[0]), "qlora", r=4, alpha=8)
    with pytest.raises(methods.AdapterError, match="cannot merge into a Linear4bit"):
        methods.merge(model)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, LoRALinear):
                layer.lora_B.normal_()
    methods.save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "LORA"
    reloaded = methods.load_adapter(minibert.from_pretrained(bert_dir[0]), tmp_path)
    ours = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert {n: p for n, p in reloaded.named_parameters() if p.requires_grad}.keys() == ours.keys()
    assert all(torch.equal(p, ours[n]) for n, p in reloaded.named_parameters() if p.requires_grad)


def test_qlora_bad_options(bert_dir):
    with pytest.raises(methods.AdapterError, match=r"has no option\(s\) \['sparse_lambda'\]"):
        methods.apply(minibert.from_pretrained(bert_dir[0]), "qlora", sparse_lambda=1.0)
    with pytest.raises(quant.QuantError, match="blocksize must be a power of two"):
        methods.apply(minibert.from_pretrained(bert_dir[0]), "qlora", blocksize=100)


@pytest.mark.parametrize(
    "hf_config, limit_mb, trainable, total",
    [(BERT_BASE_UNCASED, 100, 294_912, 109_809_210), (DISTILBERT_BASE_UNCASED, 75, 147_456, 67_132_986)],
)
def test_qlora_memory_of_the_full_size_models(hf_config, limit_mb, trainable, total):
    """Random weights at full size; embeddings, LayerNorms and biases in bf16 as in the QLoRA recipe."""
    torch.manual_seed(0)
    model = Bert(minibert.BertConfig.from_hf_dict(hf_config)).to(torch.bfloat16)
    full_mb = quant.model_bytes(model) / 1e6  # 219 MB (BERT), 134 MB (DistilBERT) in bf16
    methods.apply(model, "qlora", r=8, alpha=16)
    qlora_mb = quant.model_bytes(model) / 1e6
    assert qlora_mb <= limit_mb, (full_mb, qlora_mb)
    assert methods.count_parameters(model) == (trainable, total)  # 4-bit weights counted as the weights they hold


def test_linear4bit_backward_equals_autograd_through_the_dequantised_weight():
    """The custom backward (which re-dequantises instead of storing W) gives autograd's input gradient."""
    torch.manual_seed(1)
    layer = quant.Linear4bit.from_linear(torch.nn.Linear(64, 32), compute_dtype=torch.float32)
    x = torch.randn(4, 7, 64, requires_grad=True)
    layer(x).square().sum().backward()
    x_ref = x.detach().clone().requires_grad_(True)
    F.linear(x_ref, layer.weight_nf4.dequantize(), layer.bias).square().sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
