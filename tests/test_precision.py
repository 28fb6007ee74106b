"""--precision: fp32, or bf16 matmuls under autocast with fp32 weights (training/device.py). fp32 is what
every other test compares with the reference libraries; these check that bf16 is really used when asked
for, only then, and that it computes the same function to bf16's precision (8 bits of mantissa)."""

import csv
import json

import pytest
import torch
import torch.nn.functional as F

import evaluate
import methods
import minibert
import predict
import train
from tests.test_methods import randomise_adapters_
from tests.test_new_user import T, t_csv
from training.device import autocast, choose_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_bf16_on_cuda_and_fp32_on_the_cpu():
    assert choose_precision("auto", CPU) == "fp32" and choose_precision("auto", CUDA) == "bf16"
    assert choose_precision("bf16", CPU) == "bf16" and choose_precision("fp32", CUDA) == "fp32"


def test_autocast_runs_the_matmuls_in_bf16_only_when_asked():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(2, 8)
    with autocast(CPU, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(CPU, "fp32"):
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32  # the weights themselves stay fp32


@pytest.mark.filterwarnings("ignore:.*has no pre_classifier")  # the tiny model's new head: said, and expected
@pytest.mark.parametrize("method", ["full", "lora", "sparse_lora", "hira", "dora", "qlora", "qdora"])
def test_bf16_computes_the_same_loss_and_gradients(tiny_distilbert_model_dir, method):
    """One batch through the tiny classifier, adapted by each method, in both precisions: the same loss and
    gradient direction, to bf16's precision (a relative error of 2^-8 per product, averaged over many).
    QLoRA's 4-bit layer has its own backward, which must take autocast's bf16 gradient (it once did not)."""
    torch.manual_seed(0)
    model = methods.apply(minibert.from_pretrained(tiny_distilbert_model_dir, num_labels=2), method).eval()
    if method != "full":  # B = 0 at the start would leave A without a gradient to compare
        randomise_adapters_(model)
    ids, labels = torch.randint(5, model.config.vocab_size, (8, 16)), torch.randint(0, 2, (8,))
    losses, grads = {}, {}
    for precision in ("fp32", "bf16"):
        model.zero_grad()
        with autocast(CPU, precision):
            losses[precision] = F.cross_entropy(model(ids).float(), labels)
        losses[precision].backward()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert losses["bf16"].item() == pytest.approx(losses["fp32"].item(), rel=2e-2)
    assert F.cosine_similarity(grads["bf16"], grads["fp32"], dim=0) > 0.99
    assert not torch.equal(grads["bf16"], grads["fp32"])  # bf16 was really used


def test_train_evaluate_and_predict_at_each_precision(tiny_distilbert_model_dir, tmp_path):
    """The same 2-step run in fp32 (the CPU's auto) and in bf16: each records its precision, their losses
    and test metrics agree to bf16's precision, and evaluate.py and predict.py take the flag too."""
    table = t_csv(tmp_path / "t.csv")
    runs = {}
    for precision in ("auto", "bf16"):
        out = tmp_path / precision
        assert train.main(T(tiny_distilbert_model_dir, table, out, "--precision", precision, "--log-every", "1")) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        runs[precision] = metrics | {"losses": [line["loss"] for line in log if line["split"] == "train"]}
    assert runs["auto"]["hyperparameters"]["precision"] == "fp32"
    assert runs["bf16"]["hyperparameters"]["precision"] == "bf16"
    assert runs["bf16"]["losses"] == pytest.approx(runs["auto"]["losses"], rel=2e-2)
    assert runs["bf16"]["losses"] != runs["auto"]["losses"]
    assert runs["bf16"]["test_loss"] == pytest.approx(runs["auto"]["test_loss"], rel=2e-2)

    predictions = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"predictions-{precision}.jsonl"
        argv = [str(tmp_path / "bf16"), "--file", str(table), "--output", str(out), "--precision", precision]
        assert predict.main(argv) == 0
        predictions[precision] = [json.loads(line)["probability"] for line in out.read_text().splitlines()]
    assert predictions["bf16"] == pytest.approx(predictions["fp32"], abs=2e-2)
    assert predictions["bf16"] != predictions["fp32"]
    compared = tmp_path / "compared"
    assert evaluate.main([str(tmp_path / "bf16"), "--output-dir", str(compared), "--precision", "bf16"]) == 0
    (table_path,) = compared.glob("comparison-*.csv")
    rows = list(csv.DictReader(table_path.open()))
    assert float(rows[0]["test_loss"]) == pytest.approx(runs["bf16"]["test_loss"], rel=1e-6)  # as train.py scored it
