"""merge.py: a run folded into one transformers checkpoint, for every method, both architectures and every
head (two classes, three, regression, masked LM): transformers loads it with no missing or unexpected key and
gives our adapted model's logits; minibert.from_pretrained loads it too."""

import csv

import pytest
import torch
import transformers

import merge
import minibert
import tasks
import train
from tests.conftest import corpus_lines, sentiment_rows
from training.runs import load_run_model, read_run

TOL = 1e-4  # fp32


@pytest.fixture(scope="module")
def label_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-files")
    texts, labels = sentiment_rows(120, 0)
    heads = {
        "binary": [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)],
        "three": [{"text": t, "label": ("calm", "joy", "grief")[i % 3]} for i, t in enumerate(texts)],
        "regression": [{"text": t, "label": f"{2.5 * y + 0.1 * (i % 3):.2f}"} for i, (t, y) in
                       enumerate(zip(texts, labels, strict=True))],
    }  # fmt: skip
    paths = {}
    for head, rows in heads.items():
        paths[head] = root / f"{head}.csv"
        with paths[head].open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    (root / "text.txt").write_text("\n".join(corpus_lines(200, 0)) + "\n", encoding="utf-8")
    paths["mlm"] = root / "text.txt"
    return paths


def a_run(model_dir, data_file, out_dir, method):
    """Four steps at a large learning rate: every adapter factor far from its zero initialisation."""
    argv = ["--method", method, "--model", str(model_dir), "--train-file", str(data_file), "--output-dir", str(out_dir),
            "--max-steps", "4", "--warmup-steps", "1", "--lr", "5e-2", "--eval-every", "0", "--save-every", "0",
            "--max-seq-len", "24", "--batch-size", "8", "--target-modules", "query,value" if "distil" not in
            str(model_dir) else "q_lin,v_lin", "--cache-dir", str(out_dir.parent / "cache")]  # fmt: skip
    if method == "sparse_lora":
        argv += ["--sparse-lambda", "1e-5"]
    assert train.main(argv) == 0
    return read_run(out_dir)


def ids_and_mask():
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, 41, (3, 12), generator=g)  # the tiny vocabulary has 41 entries
    input_ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(input_ids)
    mask[1, 8:] = 0  # padding
    return input_ids, mask


CASES = [(method, head) for method in ("lora", "sparse_lora", "hira", "qlora", "dora", "qdora", "head", "full")
         for head in ("binary", "three", "regression", "mlm") if (method, head) != ("head", "mlm")]  # fmt: skip


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("method, head", CASES)  # "head" trains a classifier's head only: no masked-LM run
def test_merged_model_loads_in_transformers_with_our_logits(
    arch, method, head, label_files, tiny_model_dir, tiny_distilbert_model_dir, tmp_path
):
    model_dir = tiny_model_dir if arch == "bert" else tiny_distilbert_model_dir
    run = a_run(model_dir, label_files[head], tmp_path / "run", method)
    out = tmp_path / "merged"
    assert merge.main([run["run_dir"], str(out)]) == 0
    ours = load_run_model(tasks.from_run(run), run, "cpu")  # the adapted model, unmerged
    input_ids, mask = ids_and_mask()
    auto = transformers.AutoModelForMaskedLM if head == "mlm" else transformers.AutoModelForSequenceClassification
    theirs, info = auto.from_pretrained(out, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    with torch.no_grad():
        expected = ours(input_ids, attention_mask=mask)
        got = theirs.eval()(input_ids, attention_mask=mask).logits
        again = minibert.from_pretrained(str(out))(input_ids, attention_mask=mask)
    if head == "mlm":
        expected, got, again = expected[mask.bool()], got[mask.bool()], again[mask.bool()]  # real tokens only
    assert (expected - got).abs().max() <= TOL and (expected - again).abs().max() <= TOL
    if head != "mlm":
        num_labels = {"binary": 2, "three": 3, "regression": 1}[head]
        assert theirs.config.num_labels == num_labels and expected.shape[-1] == num_labels
        if head == "regression":
            assert theirs.config.problem_type == "regression"
        else:
            assert list(theirs.config.id2label.values()) == run["label_names"]
    card = (out / "README.md").read_text()
    assert ("NF4-dequantised" in card) == (method in ("qlora", "qdora"))


def test_merge_refuses_an_existing_directory_and_a_bad_run(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert merge.main([str(tmp_path), str(tmp_path / "full")]) == 2
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"  # nothing lost
    assert merge.main([str(tmp_path / "nope"), str(tmp_path / "new")]) == 2
    assert "no such run directory" in capsys.readouterr().err and not (tmp_path / "new").exists()
