"""Full fine-tuning: its first steps equal transformers' models trained with the same AdamW, schedule,
clipping and batches; a run saves one transformers checkpoint that transformers, evaluate.py, predict.py
and merge.py use; --resume continues it bit for bit; flags it does not use are said in one line."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file

import evaluate
import merge
import methods
import minibert
import predict
import tasks
import train
from tests.conftest import hf_model, save_hf
from tests.test_parity import batch
from tests.test_train_classification import clf_args
from training.runs import load_run_model, read_run

ARCHS = ["bert", "distilbert"]
CLASSES = {
    ("bert", "classification"): "BertForSequenceClassification",
    ("distilbert", "classification"): "DistilBertForSequenceClassification",
    ("bert", "mlm"): "BertForMaskedLM",
    ("distilbert", "mlm"): "DistilBertForMaskedLM",
}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", ["classification", "mlm"])
def test_first_steps_equal_transformers(arch, head, tmp_path):
    """Three steps of train.py's optimisation (AdamW over the method's param_groups, its learning-rate
    schedule, clipping at 1.0) on ours and on transformers' model from the same file: the same losses."""
    directory = save_hf(hf_model(arch, CLASSES[(arch, head)], seed=3), tmp_path)
    num_labels = {"num_labels": 2} if head == "classification" else {}
    ours = methods.apply(minibert.from_pretrained(directory, **num_labels), "full").eval()  # eval: no dropout
    theirs = getattr(transformers, CLASSES[(arch, head)]).from_pretrained(directory).eval()
    assert methods.count_parameters(ours) == (theirs.num_parameters(), theirs.num_parameters())
    models = {"ours": ours, "theirs": theirs}
    optimizers = {
        "ours": torch.optim.AdamW(methods.training_hooks("full", 0, 10).param_groups(ours, 0.01), lr=1e-3, fused=True),
        "theirs": torch.optim.AdamW(theirs.parameters(), lr=1e-3, weight_decay=0.01),
    }
    losses = {"ours": [], "theirs": []}
    for step in range(3):
        input_ids, attention_mask, token_type_ids, mlm_labels = batch(seed=step)
        segments = {"token_type_ids": token_type_ids} if arch == "bert" else {}
        class_labels = torch.tensor([step % 2, 1, 0])
        lr = train.learning_rate(step, 1e-3, 2, 3)  # warm-up over 2 steps, then decay
        for name, model in models.items():
            if head == "mlm" and name == "ours":
                loss = model.mlm_loss(input_ids, mlm_labels, attention_mask=attention_mask, **segments)
            elif name == "ours":
                loss = F.cross_entropy(model(input_ids, attention_mask=attention_mask, **segments), class_labels)
            else:
                labels = mlm_labels if head == "mlm" else class_labels
                loss = model(input_ids, attention_mask=attention_mask, labels=labels, **segments).loss
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            assert norm > 1.0 or step > 0  # clipping is really exercised
            for group in optimizers[name].param_groups:
                group["lr"] = lr
            optimizers[name].step()
            optimizers[name].zero_grad()
            losses[name].append(loss.item())
    assert losses["ours"] == pytest.approx(losses["theirs"], abs=1e-5), losses
    assert losses["ours"][2] != pytest.approx(losses["ours"][0], abs=1e-3)  # the weights really moved


@pytest.fixture(scope="module")
def full_run(tiny_rich_model_dir, sentiment, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    args = clf_args(tiny_rich_model_dir, sentiment["sst2"], out, "--method", "full", "--lr", "1e-3",
                    "--save-every", "30")  # fmt: skip
    assert train.main(args) == 0
    return out


def test_a_full_run_is_a_transformers_checkpoint(full_run):
    metrics = json.loads(full_run.joinpath("metrics.json").read_text())
    assert metrics["trainable_params"] == metrics["total_params"] == metrics["exported_params"]
    assert metrics["exported_file_bytes"] == full_run.joinpath("model.safetensors").stat().st_size
    assert metrics["test_accuracy"] > 0.9, metrics["test_accuracy"]
    assert metrics["hyperparameters"]["r"] is None  # not used, not recorded as if it were
    assert not (full_run / "adapter_model.safetensors").exists()
    theirs, info = transformers.AutoModelForSequenceClassification.from_pretrained(full_run, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    assert list(theirs.config.id2label.values()) == ["negative", "positive"]
    run = read_run(full_run)
    ours = load_run_model(tasks.from_run(run), run, "cpu")
    input_ids, attention_mask, token_type_ids, _ = batch(seed=4, vocab=41)
    with torch.no_grad():
        a = ours(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        b = theirs.eval()(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
    assert (a - b).abs().max() <= 1e-5
    card = full_run.joinpath("README.md").read_text()
    assert "library_name: transformers" in card and "AutoModelForSequenceClassification.from_pretrained" in card
    assert "Saved model" in card and "N/A" not in card and "Rank (r)" not in card
    assert (full_run / "vocab.txt").is_file()  # the tokenizer travels with the model


def test_evaluate_predict_and_merge_use_a_full_run(full_run, sentiment, tmp_path, capsys):
    results = tmp_path / "results"
    argv = [str(full_run), "--data-dir", str(sentiment["sst2"]), "--output-dir", str(results),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert evaluate.main(argv) == 0
    header, row = (results / "comparison-sst2.csv").read_text().splitlines()[:2]
    measured = dict(zip(header.split(","), row.split(","), strict=True))
    metrics = json.loads(full_run.joinpath("metrics.json").read_text())
    assert measured["method"] == "full" and float(measured["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    capsys.readouterr()
    assert predict.main([str(full_run), "the cat was happy .", "the dog was sad ."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "positive" and lines[1].split()[0] == "negative"
    assert merge.main([str(full_run), str(tmp_path / "merged")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nothing to merge:"), err
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    saved = load_file(str(full_run / "model.safetensors"))
    assert merged.keys() == saved.keys() and all(torch.equal(merged[k], saved[k]) for k in saved)


def test_resume_continues_a_full_run_bit_for_bit(full_run, tiny_rich_model_dir, sentiment, tmp_path, capsys):
    """The run's checkpoint at step 30 (weights and AdamW's moments of every parameter), resumed: the same model."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full_run / "checkpoints" / "step-00000030", resumed / "checkpoints" / "step-00000030")
    shutil.copy(full_run / "train_log.jsonl", resumed / "train_log.jsonl")
    args = clf_args(tiny_rich_model_dir, sentiment["sst2"], resumed, "--method", "full", "--lr", "1e-3",
                    "--save-every", "30", "--resume")  # fmt: skip
    assert train.main(args) == 0
    assert "resumed from step 30" in capsys.readouterr().err
    ours, reference = load_file(str(resumed / "model.safetensors")), load_file(str(full_run / "model.safetensors"))
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


def test_flags_a_method_does_not_use_are_one_line(tiny_model_dir, corpus, tmp_path, capsys):
    from tests.test_train import train_args

    args = train_args(
        tiny_model_dir,
        corpus,
        tmp_path / "full",
        "--method",
        "full",
        "--max-steps",
        "2",
        "--eval-every",
        "0",
        "--save-every",
        "0",
        "--r",
        "4",
        "--alpha",
        "8",
        "--sparse-lambda",
        "1",
        "--warmup-steps",
        "1",
    )
    assert train.main(args) == 0  # a warning, not a failure
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: --method full does not use --r, --alpha, --target-modules, --sparse-lambda; ignored"]
    args = train_args(tiny_model_dir, corpus, tmp_path / "hira", "--method", "hira", "--max-steps", "2",
                      "--eval-every", "0", "--save-every", "0", "--alpha", "8")  # fmt: skip
    assert train.main(args) == 0
    assert "warning: --method hira does not use --alpha; ignored" in capsys.readouterr().err
    args = train_args(tiny_model_dir, corpus, tmp_path / "lora", "--method", "lora", "--max-steps", "2",
                      "--eval-every", "0", "--save-every", "0", "--warmup-steps", "1")  # fmt: skip
    assert train.main(args) == 0
    assert "warning" not in capsys.readouterr().err  # the method's own flags, given or not, say nothing
