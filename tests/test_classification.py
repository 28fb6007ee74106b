"""Sequence classification: logits equal transformers' classifiers, adapters round-trip through PEFT's
SEQ_CLS format in both directions, trainable counts equal PEFT's, and F1 is what the formula says."""

import json
import warnings

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

import methods
import minibert
from methods.sora import SoRALinear
from tasks import metrics
from tests.conftest import TINY_BERT, TINY_DISTILBERT, hf_model, save_hf
from tests.test_methods import randomise_adapters_
from tests.test_parity import batch, max_diff

TOL = 1e-5
ARCHS = ["bert", "distilbert"]
CLASSIFIER = {"bert": "BertForSequenceClassification", "distilbert": "DistilBertForSequenceClassification"}


@pytest.fixture(scope="module")
def clf_dirs(tmp_path_factory):
    """Tiny random *classifier* checkpoints (every parameter seeded, the head included), one per arch."""
    return {arch: save_hf(hf_model(arch, CLASSIFIER[arch], seed=5), tmp_path_factory.mktemp(arch)) for arch in ARCHS}


def hf_classifier(arch, directory):
    cls = getattr(transformers, CLASSIFIER[arch])
    return cls.from_pretrained(directory, num_labels=2).eval()


def class_logits(model, arch, padded=True):
    input_ids, attention_mask, token_type_ids, _ = batch(seed=7)
    if not padded:
        attention_mask = torch.ones_like(attention_mask)
    kwargs = {"token_type_ids": token_type_ids} if arch == "bert" else {}
    with torch.no_grad():
        out = model(input_ids, attention_mask=attention_mask, **kwargs)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("padded", [True, False])
def test_logits_equal_transformers_classifier(clf_dirs, arch, padded):
    ours = minibert.from_pretrained(clf_dirs[arch], num_labels=2)
    theirs = hf_classifier(arch, clf_dirs[arch])
    a, b = class_logits(ours, arch, padded), class_logits(theirs, arch, padded)
    assert a.shape == (3, 2) and max_diff(a, b) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_a_pretrained_checkpoint_gets_a_new_head_and_says_so(legacy_bert_dir, distilbert_dir, arch):
    """bert-base-uncased's layout (pooler, no classifier): the pooler is loaded, the classifier is new.
    DistilBERT (no pooler): pre_classifier and classifier are new. Our new layers, copied into
    transformers' classifier built from the same file, give the same logits: the rest was loaded right."""
    directory = legacy_bert_dir[0] if arch == "bert" else distilbert_dir[0]
    with pytest.warns(UserWarning) as caught:
        ours = minibert.from_pretrained(directory, num_labels=2)
    messages = [str(w.message) for w in caught if "initialised with N(0, 0.02)" in str(w.message)]
    new = "classifier" if arch == "bert" else "pre_classifier or classifier"
    assert len(messages) == 1 and f"has no {new};" in messages[0]
    theirs = hf_classifier(arch, directory)
    with torch.no_grad():
        if arch == "bert":
            assert torch.equal(ours.head.dense.weight, theirs.bert.pooler.dense.weight)  # the trained pooler, loaded
        else:
            theirs.pre_classifier.load_state_dict(ours.head.dense.state_dict())
        theirs.classifier.load_state_dict(ours.head.classifier.state_dict())
        assert ours.head.classifier.weight.std() == pytest.approx(0.02, rel=0.5)  # transformers' init
    assert max_diff(class_logits(ours, arch), class_logits(theirs, arch)) <= TOL


def test_num_labels_must_match_a_classifier_checkpoint(clf_dirs):
    with pytest.raises(
        minibert.LoadError, match="the checkpoint's classifier has 2 classes but num_labels is 3; pass num_labels=2"
    ):
        minibert.from_pretrained(clf_dirs["bert"], num_labels=3)


def peft_classifier(arch, directory, adapter_dir):
    """transformers' classifier + PEFT loading our adapter, as the model card says; fails on any key warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = peft.PeftModel.from_pretrained(hf_classifier(arch, directory), str(adapter_dir)).eval()
    assert [str(w.message) for w in caught if "key" in str(w.message).lower()] == []
    return model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "hira", "sparse_lora", "qlora", "dora", "qdora"])
def test_peft_loads_our_seq_cls_adapter(clf_dirs, arch, method, tmp_path):
    ours = minibert.from_pretrained(clf_dirs[arch], num_labels=2)
    methods.apply(ours, method, r=4, **({"sparse_lambda": 1.0} if method == "sparse_lora" else {}))
    randomise_adapters_(ours, seed=2).eval()
    if method == "sparse_lora":  # prune some ranks: the export is the smaller LoRA plus the head
        layers = [m for m in ours.modules() if isinstance(m, SoRALinear)]
        with torch.no_grad():
            layers[0].gate[:2] = 0.0
    methods.save_adapter(ours, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    head = ["classifier"] if arch == "bert" else ["pre_classifier", "classifier"]
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == head
    assert {f"base_model.model.{m}.{p}" for m in head for p in ("weight", "bias")} <= load_file(
        str(tmp_path / "adapter_model.safetensors")
    ).keys()
    theirs = peft_classifier(arch, clf_dirs[arch], tmp_path)
    reloaded = methods.load_adapter(minibert.from_pretrained(clf_dirs[arch], num_labels=2), tmp_path)
    assert max_diff(class_logits(reloaded, arch), class_logits(theirs, arch)) <= TOL
    if method not in methods.QUANTISED:  # their own base is 4-bit; the file goes on the full-precision base
        assert max_diff(class_logits(reloaded, arch), class_logits(ours, arch)) <= TOL


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "hira", "dora"])
def test_peft_seq_cls_adapter_loads_into_ours(clf_dirs, arch, method, tmp_path):
    targets = ["query", "value"] if arch == "bert" else ["q_lin", "v_lin"]
    extra = {} if arch == "bert" else {"modules_to_save": ["pre_classifier"]}
    if method == "hira":
        config = peft.HiraConfig(task_type="SEQ_CLS", r=4, target_modules=targets, **extra)
    else:
        config = peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=targets, use_dora=method == "dora", **extra)
    theirs = randomise_adapters_(peft.get_peft_model(hf_classifier(arch, clf_dirs[arch]), config), seed=3).eval()
    theirs.save_pretrained(tmp_path)
    ours = methods.load_adapter(minibert.from_pretrained(clf_dirs[arch], num_labels=2), tmp_path)
    assert max_diff(class_logits(ours, arch), class_logits(theirs, arch)) <= TOL
    trained = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert "head.classifier.weight" in trained and ("head.dense.weight" in trained) == (arch == "distilbert")


@pytest.mark.parametrize("arch", ARCHS)
def test_head_only_run_loads_into_transformers(clf_dirs, arch, tmp_path):
    ours = minibert.from_pretrained(clf_dirs[arch], num_labels=2)
    methods.apply(ours, "head")
    randomise_adapters_(ours, seed=4)
    methods.save_adapter(ours, tmp_path)
    theirs = hf_classifier(arch, clf_dirs[arch])
    stored = load_file(str(tmp_path / "head_model.safetensors"))
    head = ["classifier"] if arch == "bert" else ["pre_classifier", "classifier"]
    assert sorted(stored) == sorted(f"{m}.{p}" for m in head for p in ("weight", "bias"))  # exactly the head
    with torch.no_grad():
        for name, tensor in stored.items():  # the card's snippet; get_parameter raises for an unknown name
            theirs.get_parameter(name).copy_(tensor)
    assert max_diff(class_logits(ours, arch), class_logits(theirs, arch)) <= TOL
    reloaded = methods.load_adapter(minibert.from_pretrained(clf_dirs[arch], num_labels=2), tmp_path)
    assert max_diff(class_logits(reloaded, arch), class_logits(ours, arch)) <= TOL


def test_adapter_and_model_task_must_agree(clf_dirs, bert_dir, tmp_path):
    ours = methods.apply(minibert.from_pretrained(clf_dirs["bert"], num_labels=2), "lora", r=4)
    methods.save_adapter(ours, tmp_path)
    with pytest.raises(methods.AdapterError, match="load the base model with num_labels"):
        methods.load_adapter(minibert.from_pretrained(bert_dir[0]), tmp_path)
    with pytest.raises(methods.AdapterError, match="head"):
        methods.apply(minibert.from_pretrained(bert_dir[0]), "head")
    with pytest.raises(methods.AdapterError, match=r"match no linear layer"):  # the head is never an adapter target
        methods.apply(minibert.from_pretrained(clf_dirs["bert"], num_labels=2), "lora", target_modules=["classifier"])


# ---- counts: the figures of the published comparison, and PEFT's own trainable count ----


def full_size(arch):
    if arch == "bert":
        return transformers.BertConfig()  # bert-base-uncased's shapes
    return transformers.DistilBertConfig()  # distilbert-base-uncased's shapes


@pytest.mark.parametrize(
    "arch, trainable, total", [("distilbert", 739_586, 67_102_466), ("bert", 296_450, 109_778_690)]
)
def test_counts_equal_peft(arch, trainable, total, tmp_path):
    hf_config = full_size(arch)
    hf_config.num_labels = 2
    (tmp_path / "config.json").write_text(hf_config.to_json_string())
    with torch.device("meta"):
        config = minibert.BertConfig.from_json_file(tmp_path / "config.json")
        config.num_labels = 2
        ours = methods.apply(minibert.BertClassifier(config), "lora", r=8)
        targets = ["query", "value"] if arch == "bert" else ["q_lin", "v_lin"]
        theirs = peft.get_peft_model(
            getattr(transformers, CLASSIFIER[arch])(hf_config),
            peft.LoraConfig(task_type="SEQ_CLS", r=8, target_modules=targets,
                            modules_to_save=None if arch == "bert" else ["pre_classifier"]),
        )  # fmt: skip
    assert methods.count_parameters(ours) == (trainable, total)
    assert sum(p.numel() for p in theirs.parameters() if p.requires_grad) == trainable
    # PEFT's print_trainable_parameters counts the head twice (the original and its trainable copy):
    head = sum(p.numel() for n, p in ours.named_parameters() if n.startswith("head.") and p.requires_grad)
    assert sum(p.numel() for p in theirs.parameters()) == total + head


def test_f1_by_hand():
    # labels      1 1 1 0 0 0 1 0
    # predicted   1 0 1 1 0 0 1 1   -> positive: TP 3, FP 2, FN 1; negative: TP 2, FP 1, FN 2
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0])
    predictions = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1])
    assert metrics.accuracy(predictions, labels) == 5 / 8
    assert metrics.f1(predictions, labels) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # 6/9
    assert metrics.f1(predictions, labels, positive=0) == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # 4/7
    assert metrics.macro_f1(predictions, labels, 2) == pytest.approx((6 / 9 + 4 / 7) / 2)
    assert metrics.f1(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)) == 0.0  # 0/0 -> 0


def test_tiny_configs_are_what_the_fixtures_use():
    assert TINY_BERT["hidden_size"] == TINY_DISTILBERT["dim"] == 32  # the shapes in the messages above


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["lora", "hira", "sparse_lora", "qlora", "dora", "qdora"])
@pytest.mark.parametrize("num_labels", [3, 1])  # three classes; one output: regression
def test_peft_loads_k_class_and_regression_adapters(legacy_bert_dir, distilbert_dir, arch, method, num_labels,
                                                    tmp_path):  # fmt: skip
    """PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=K), run):
    the head's new layers come from the adapter file, so the logits equal ours."""
    directory = legacy_bert_dir[0] if arch == "bert" else distilbert_dir[0]
    with pytest.warns(UserWarning, match="initialised with N"):
        ours = minibert.from_pretrained(directory, num_labels=num_labels)
    methods.apply(ours, method, r=4, **({"sparse_lambda": 1.0} if method == "sparse_lora" else {}))
    randomise_adapters_(ours, seed=6).eval()
    methods.save_adapter(ours, tmp_path)
    extra = {"problem_type": "regression"} if num_labels == 1 else {}
    base = transformers.AutoModelForSequenceClassification.from_pretrained(directory, num_labels=num_labels, **extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theirs = peft.PeftModel.from_pretrained(base.eval(), str(tmp_path)).eval()
    assert [str(w.message) for w in caught if "key" in str(w.message).lower()] == []
    with pytest.warns(UserWarning, match="initialised with N"):
        reloaded = methods.load_adapter(minibert.from_pretrained(directory, num_labels=num_labels), tmp_path)
    a, b = class_logits(reloaded, arch), class_logits(theirs, arch)
    assert a.shape == (3, num_labels) and max_diff(a, b) <= TOL
    if method not in methods.QUANTISED:
        assert max_diff(a, class_logits(ours, arch)) <= TOL
