"""minibert equals Hugging Face transformers on the same weights: logits, hidden states and MLM loss."""

import dataclasses

import pytest
import torch
import transformers

import minibert
from minibert.model import Bert
from tests.conftest import TINY_BERT, hf_model, save_hf

TOL = 1e-5  # max |difference| allowed in fp32


def batch(seed=0, B=3, T=12, vocab=TINY_BERT["vocab_size"]):
    """Random ids, a padding mask (rows of different lengths), segment ids, and MLM labels."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (B, T), generator=g)
    lengths = torch.tensor([T, T - 4, T - 7])[:B]
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T), 1 = real token
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)  # [PAD] = 0
    token_type_ids = (torch.arange(T)[None, :] >= (lengths[:, None] // 2)).long() * attention_mask
    labels = torch.full((B, T), -100)
    chosen = (torch.rand((B, T), generator=g) < 0.3) & (attention_mask == 1)
    labels[chosen] = input_ids[chosen]
    return input_ids, attention_mask, token_type_ids, labels


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(params=["sdpa", "explicit"])
def attention(request):
    return request.param


def load(directory, attention):
    """from_pretrained, then (for 'explicit') the same weights in a model using the written-out attention."""
    model = minibert.from_pretrained(directory)
    if attention == "sdpa":
        return model
    explicit = Bert(dataclasses.replace(model.config, attention="explicit")).eval()
    explicit.load_state_dict(model.state_dict())
    return explicit


@pytest.mark.parametrize("with_mask", [False, True])
def test_bert_logits_match_transformers(bert_dir, attention, with_mask):
    directory, ref = bert_dir
    ours = load(directory, attention)
    input_ids, attention_mask, token_type_ids, _ = batch()
    mask = attention_mask if with_mask else None
    with torch.no_grad():
        expected = ref(input_ids, attention_mask=mask, token_type_ids=token_type_ids).logits
        got = ours(input_ids, attention_mask=mask, token_type_ids=token_type_ids)
        expected_no_types = ref(input_ids, attention_mask=mask).logits
        got_no_types = ours(input_ids, attention_mask=mask)
    assert got.shape == expected.shape == (3, 12, TINY_BERT["vocab_size"])
    assert max_diff(got, expected) <= TOL
    assert max_diff(got_no_types, expected_no_types) <= TOL
    assert max_diff(got, got_no_types) > 1e-3  # the segment ids really change the result


@pytest.mark.parametrize("with_mask", [False, True])
def test_distilbert_logits_match_transformers(distilbert_dir, attention, with_mask):
    directory, ref = distilbert_dir
    ours = load(directory, attention)
    input_ids, attention_mask, _, _ = batch()
    mask = attention_mask if with_mask else None
    with torch.no_grad():
        expected = ref(input_ids, attention_mask=mask).logits
        got = ours(input_ids, attention_mask=mask)
    assert max_diff(got, expected) <= TOL


def test_padding_mask_changes_the_result(bert_dir):
    directory, _ = bert_dir
    ours = minibert.from_pretrained(directory)
    input_ids, attention_mask, _, _ = batch()
    with torch.no_grad():
        assert max_diff(ours(input_ids, attention_mask=attention_mask), ours(input_ids)) > 1e-3


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_mlm_loss_matches_transformers(arch, bert_dir, distilbert_dir, attention):
    directory, ref = bert_dir if arch == "bert" else distilbert_dir
    ours = load(directory, attention)
    input_ids, attention_mask, token_type_ids, labels = batch(seed=3)
    kwargs = {"token_type_ids": token_type_ids} if arch == "bert" else {}
    with torch.no_grad():
        expected = ref(input_ids, attention_mask=attention_mask, labels=labels, **kwargs).loss
        got = ours.mlm_loss(input_ids, labels, attention_mask=attention_mask, **kwargs)
    assert abs(got.item() - expected.item()) <= TOL


def test_mlm_loss_gradients_match_transformers(bert_dir):
    directory, ref = bert_dir
    ours = minibert.from_pretrained(directory)
    input_ids, attention_mask, token_type_ids, labels = batch(seed=4)
    ref.zero_grad()
    ref(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels).loss.backward()
    ours.mlm_loss(input_ids, labels, attention_mask=attention_mask, token_type_ids=token_type_ids).backward()
    pairs = {
        "embeddings.word.weight": ref.bert.embeddings.word_embeddings.weight,  # embedding + tied decoder
        "layers.1.attention.query.weight": ref.bert.encoder.layer[1].attention.self.query.weight,
        "layers.0.ffn_norm.bias": ref.bert.encoder.layer[0].output.LayerNorm.bias,
        "head.bias": ref.cls.predictions.bias,
    }
    params = dict(ours.named_parameters())
    for name, theirs in pairs.items():
        assert max_diff(params[name].grad, theirs.grad) <= TOL, name
    ref.zero_grad()


def test_mlm_head_runs_only_at_labelled_positions(bert_dir):
    directory, _ = bert_dir
    ours = minibert.from_pretrained(directory)
    input_ids, attention_mask, _, labels = batch(seed=5)
    seen = []
    ours.head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    with torch.no_grad():
        ours.mlm_loss(input_ids, labels, attention_mask=attention_mask)
    n_labelled = int((labels != -100).sum())
    assert 0 < n_labelled < labels.numel()
    assert seen == [(n_labelled, TINY_BERT["vocab_size"])]


def test_mlm_loss_without_labels_is_zero_not_nan(bert_dir):
    directory, _ = bert_dir
    ours = minibert.from_pretrained(directory)
    input_ids, _, _, _ = batch()
    loss = ours.mlm_loss(input_ids, torch.full_like(input_ids, -100))
    loss.backward()
    assert loss.item() == 0.0
    assert ours.embeddings.word.weight.grad.abs().sum().item() == 0.0


def test_explicit_attention_equals_sdpa_form(bert_dir):
    """The written-out softmax(QK^T/sqrt(d))V and F.scaled_dot_product_attention agree, masked or not."""
    directory, _ = bert_dir
    sdpa, explicit = load(directory, "sdpa"), load(directory, "explicit")
    input_ids, attention_mask, token_type_ids, _ = batch(seed=6)
    with torch.no_grad():
        for mask in (None, attention_mask):
            a = sdpa(input_ids, attention_mask=mask, token_type_ids=token_type_ids)
            b = explicit(input_ids, attention_mask=mask, token_type_ids=token_type_ids)
            assert max_diff(a, b) <= TOL


def test_bert_model_checkpoint_loads_encoder_and_warns_about_head(tmp_path):
    """A bare BertModel checkpoint (keys without 'bert.', no MLM head): the encoder matches, the head is new."""
    ref = hf_model("bert", "BertModel", seed=7)
    directory = save_hf(ref, tmp_path)
    with pytest.warns(UserWarning, match="no masked-LM head"):
        ours = minibert.from_pretrained(directory)
    input_ids, attention_mask, token_type_ids, _ = batch()
    with torch.no_grad():
        expected = ref(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        got = ours.encode(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    assert max_diff(got, expected) <= TOL
    assert torch.equal(ours.head.bias, torch.zeros_like(ours.head.bias))  # freshly initialised, not garbage
    assert torch.equal(ours.head.norm.weight, torch.ones_like(ours.head.norm.weight))


def test_bert_for_pretraining_checkpoint_loads(tmp_path):
    """BertForPreTraining (MLM + next-sentence heads): the pooler and NSP head are skipped on purpose."""
    ref = hf_model("bert", "BertForPreTraining", seed=8)
    directory = save_hf(ref, tmp_path)
    ours = minibert.from_pretrained(directory)
    input_ids, attention_mask, token_type_ids, _ = batch()
    with torch.no_grad():
        expected = ref(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).prediction_logits
        got = ours(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    assert max_diff(got, expected) <= TOL


def test_legacy_gamma_beta_checkpoint_with_pooler_and_nsp_loads(legacy_bert_dir, attention):
    directory, ref = legacy_bert_dir
    ours = load(directory, attention)
    input_ids, attention_mask, token_type_ids, _ = batch()
    with torch.no_grad():
        expected = ref(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
        got = ours(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    assert max_diff(got, expected) <= TOL


def test_dtype_and_device_arguments(bert_dir):
    directory, _ = bert_dir
    model = minibert.from_pretrained(directory, dtype=torch.bfloat16, device="cpu")
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    input_ids, attention_mask, _, _ = batch()
    with torch.no_grad():
        assert model(input_ids, attention_mask=attention_mask).dtype == torch.bfloat16


def test_distilbert_rejects_token_type_ids(distilbert_dir):
    directory, _ = distilbert_dir
    model = minibert.from_pretrained(directory)
    input_ids, _, token_type_ids, _ = batch()
    with pytest.raises(ValueError, match="no token-type embedding"):
        model(input_ids, token_type_ids=token_type_ids)


# The hub's config.json of the two real models (as published), for the full-size parameter counts.
BERT_BASE_UNCASED = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "transformers_version": "4.6.0.dev0",
    "type_vocab_size": 2,
    "use_cache": True,
    "vocab_size": 30522,
}
DISTILBERT_BASE_UNCASED = {
    "activation": "gelu",
    "architectures": ["DistilBertForMaskedLM"],
    "attention_dropout": 0.1,
    "dim": 768,
    "dropout": 0.1,
    "hidden_dim": 3072,
    "initializer_range": 0.02,
    "max_position_embeddings": 512,
    "model_type": "distilbert",
    "n_heads": 12,
    "n_layers": 6,
    "pad_token_id": 0,
    "qa_dropout": 0.1,
    "seq_classif_dropout": 0.2,
    "sinusoidal_pos_embds": False,
    "tie_weights_": True,
    "transformers_version": "4.10.0.dev0",
    "vocab_size": 30522,
}


@pytest.mark.parametrize(
    "hf_config, hf_class, expected",
    [
        (BERT_BASE_UNCASED, "BertForMaskedLM", 109_514_298),
        (DISTILBERT_BASE_UNCASED, "DistilBertForMaskedLM", 66_985_530),
    ],
)
def test_full_size_parameter_counts(hf_config, hf_class, expected):
    with torch.device("meta"):  # shapes only, no memory
        ours = Bert(minibert.BertConfig.from_hf_dict(hf_config))
        config_cls = transformers.BertConfig if hf_config["model_type"] == "bert" else transformers.DistilBertConfig
        ref = getattr(transformers, hf_class)(config_cls(**hf_config))
    assert ours.num_parameters() == expected
    assert ref.num_parameters() == expected  # the number Hugging Face reports for the same config
