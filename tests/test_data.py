"""data/: reading WikiText (both layouts, and the hub), packing blocks, the cache, and BERT's masking."""

import numpy as np
import pytest
import torch

import data
import minibert
from tests.test_loading import run_against_hub


def test_both_layouts_give_the_same_lines(corpus):
    text = data.load_wikitext(str(corpus["text"]))
    parquet = data.load_wikitext(str(corpus["parquet"]))
    for split in data.SPLITS:
        strip = [line.rstrip("\n") for line in parquet[split]["lines"]]
        assert text[split]["lines"] == strip == corpus["lines"][split]
    assert text["validation"]["source"].name == "wiki.valid.raw"


def test_blocks_are_cls_pieces_sep_in_text_order(corpus, tiny_model_dir):
    tok = minibert.load_tokenizer(str(tiny_model_dir))
    lines = corpus["lines"]["train"]
    blocks = data.build_blocks(lines, tok, max_seq_len=16)
    pieces = [i for line in lines if line.strip() for i in tok.encode(line.strip(), add_special_tokens=False).ids]
    assert blocks.shape == (len(pieces) // 14, 16)
    assert (blocks[:, 0] == tok.token_to_id("[CLS]")).all() and (blocks[:, -1] == tok.token_to_id("[SEP]")).all()
    assert blocks[:, 1:-1].reshape(-1).tolist() == pieces[: blocks.shape[0] * 14]  # no padding, nothing reordered


def test_blocks_are_cached_by_tokenizer_text_and_length(corpus, tiny_model_dir, tmp_path, monkeypatch):
    tok = minibert.load_tokenizer(str(tiny_model_dir))
    lines = corpus["lines"]["validation"]
    first = data.build_blocks(lines, tok, 16, tmp_path)
    assert len(list(tmp_path.glob("blocks-*.npz"))) == 1
    monkeypatch.setattr(data.blocks, "pack", lambda *a: pytest.fail("the cache was not used"))
    assert np.array_equal(data.build_blocks(lines, tok, 16, tmp_path), first)
    monkeypatch.undo()
    data.build_blocks(lines, tok, 32, tmp_path)  # another block size: another cache file
    data.build_blocks(lines[:-5], tok, 16, tmp_path)  # other text: another cache file
    assert len(list(tmp_path.glob("blocks-*.npz"))) == 3


def test_masking_statistics():
    vocab = data.MaskingVocab(size=1000, mask_id=4, special_ids=[0, 1, 2, 3, 4])
    ids = torch.randint(5, 1000, (256, 128), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    out = data.mask_tokens(ids, vocab, data.seeded_generator(0, 0, 0))
    chosen = out["labels"] != data.IGNORE
    assert chosen[:, 0].sum() == 0 and chosen[:, -1].sum() == 0  # specials never chosen
    assert abs(chosen[:, 1:-1].float().mean().item() - 0.15) < 0.01
    assert torch.equal(out["labels"][chosen], ids[chosen])
    assert torch.equal(out["input_ids"][~chosen], ids[~chosen])
    became = out["input_ids"][chosen]
    masked = (became == 4).float().mean().item()
    unchanged = (became == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.03 and abs(unchanged - 0.1) < 0.02  # and ~10% random tokens


def test_masks_are_reproducible_and_fresh_per_step(corpus, tiny_model_dir):
    tok = minibert.load_tokenizer(str(tiny_model_dir))
    vocab = data.MaskingVocab.from_tokenizer(tok)
    assert vocab.mask_id == tok.token_to_id("[MASK]") and vocab.special_ids == [0, 1, 2, 3, 4]
    blocks = torch.from_numpy(data.build_blocks(corpus["lines"]["test"], tok, 16)).long()
    assert torch.equal(data.eval_masks(blocks, vocab)["labels"], data.eval_masks(blocks, vocab)["labels"])
    a = data.mask_tokens(blocks, vocab, data.seeded_generator(0, 1, 5))["labels"]
    b = data.mask_tokens(blocks, vocab, data.seeded_generator(0, 1, 5))["labels"]
    c = data.mask_tokens(blocks, vocab, data.seeded_generator(0, 2, 5))["labels"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_data_dirs_are_clear_errors(corpus, tmp_path):
    with pytest.raises(data.DataError, match="nope: no such directory"):
        data.load_wikitext(str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match=r"no train split; expected one of .*wiki.train.raw"):
        data.load_wikitext(str(tmp_path))
    (tmp_path / "wiki.train.raw").write_text("\n \n")
    with pytest.raises(data.DataError, match="wiki.train.raw: the train split is empty"):
        data.load_wikitext(str(tmp_path))
    broken = tmp_path / "broken" / "wikitext-2-raw-v1"
    broken.mkdir(parents=True)
    (broken / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(data.DataError, match="train-00000-of-00001.parquet: cannot be read"):
        data.load_wikitext(str(broken.parent), splits=("train",))


def test_download_from_the_hub(corpus, tmp_path):
    """The dataset repo Salesforce/wikitext, served under the hub's URL layout on loopback."""
    code = "import data; s = data.load_wikitext(); print(len(s['test']['lines']), s['test']['source'])"
    out, _ = run_against_hub({"datasets/Salesforce/wikitext": corpus["parquet"]}, code, tmp_path)
    assert out.returncode == 0, out.stderr
    count, source = out.stdout.split()
    assert int(count) == len(corpus["lines"]["test"]) and source.startswith(str(tmp_path))
