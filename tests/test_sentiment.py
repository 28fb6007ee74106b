"""data/ for classification: SST-2 and IMDB files (both layouts, the hub), the split policy, tokenisation
with truncation and its cache, and the length-bucketed batches."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import data
import minibert
from tests.conftest import sentiment_rows
from tests.test_loading import run_against_hub

SST2, IMDB = data.DATASETS["sst2"], data.DATASETS["imdb"]


def test_split_policy(sentiment):
    texts, labels = sentiment_rows(1400, 0)
    splits = data.load_labelled(SST2, str(sentiment["sst2"]))
    assert len(splits["validation"].texts) == 872 and len(splits["train"].texts) == 1400 - 872
    # validation + train is the training file, each row once; the slice does not depend on anything but the file
    both = sorted(splits["validation"].texts + splits["train"].texts)
    assert both == sorted(texts)
    again = data.load_labelled(SST2, str(sentiment["sst2"]), splits=("validation",))
    assert again["validation"].texts == splits["validation"].texts
    # test = the official validation file, labelled; the hidden-label test file is never read
    assert splits["test"].source.endswith("validation-00000-of-00001.parquet")
    assert set(splits["test"].labels.tolist()) == {0, 1}
    imdb = data.load_labelled(IMDB, str(sentiment["imdb"]))
    assert len(imdb["validation"].texts) == 1000 and imdb["test"].source.endswith("test-00000-of-00001.parquet")


def test_files_directly_in_data_dir(sentiment, tmp_path):
    for name in ("train", "validation"):
        (tmp_path / f"{name}-00000-of-00001.parquet").write_bytes(
            (sentiment["sst2"] / "data" / f"{name}-00000-of-00001.parquet").read_bytes()
        )
    flat, nested = data.load_labelled(SST2, str(tmp_path)), data.load_labelled(SST2, str(sentiment["sst2"]))
    assert flat["validation"].texts == nested["validation"].texts


def test_bad_files(sentiment, tmp_path):
    with pytest.raises(data.DataError, match=r"no sst2 file train-00000-of-00001.parquet; expected one of"):
        data.load_labelled(SST2, str(tmp_path))
    table = pa.table({"sentence": ["good", "bad", "odd"] * 400, "label": [1, 0, 2] * 400})
    pq.write_table(table, tmp_path / "train-00000-of-00001.parquet")
    with pytest.raises(data.DataError, match=r"row 3 has label 2, outside the sst2 classes \(0 = negative, 1 = pos"):
        data.load_labelled(SST2, str(tmp_path))
    with pytest.raises(data.DataError, match="a file, not a directory"):
        data.load_labelled(SST2, str(tmp_path / "train-00000-of-00001.parquet"))


def test_download_from_the_hub(sentiment, tmp_path):
    """The dataset repo stanfordnlp/sst2, served under the hub's URL layout on loopback."""
    code = "import data; s = data.load_labelled(data.DATASETS['sst2']); print(len(s['test'].texts))"
    out, log = run_against_hub({"datasets/stanfordnlp/sst2": sentiment["sst2"]}, code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 300
    assert not any("test-00000" in path for _, _, path in log)  # the hidden-label file is never fetched


def test_examples_are_cls_text_sep_truncated_and_cached(sentiment, tiny_model_dir, tmp_path):
    tok = minibert.load_tokenizer(str(tiny_model_dir))
    texts, labels = sentiment_rows(50, 3)
    examples = data.encode_examples(texts, np.array(labels), tok, 16, tmp_path)
    for i, text in enumerate(texts):
        pieces = tok.encode(text, add_special_tokens=False).ids[:14]
        assert examples.ids[examples.offsets[i] : examples.offsets[i + 1]].tolist() == [2, *pieces, 3]
    assert examples.truncated == sum(len(tok.encode(t, add_special_tokens=False).ids) > 14 for t in texts) > 0
    assert len(list(tmp_path.glob("examples-*.npz"))) == 1
    again = data.encode_examples(texts, np.array(labels), tok, 16, tmp_path)  # from the cache
    assert np.array_equal(again.ids, examples.ids) and again.truncated == examples.truncated
    batch = examples.batch([0, 1, 2], pad_id=0)
    longest = int(examples.lengths[:3].max())
    assert batch["input_ids"].shape == (3, longest) and batch["attention_mask"].sum(1).tolist() == list(
        examples.lengths[:3]
    )
    assert torch.equal(batch["labels"], torch.tensor(labels[:3]))


def test_buckets_cover_every_example_once_and_pad_less():
    lengths = np.random.default_rng(0).integers(5, 512, size=2003)
    batches = data.bucketed_batches(lengths, 32, data.seeded_generator(0, 0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(2003))  # every example exactly once
    assert sum(len(b) < 32 for b in batches) <= len(lengths) // (32 * 50) + 1  # short batches: one per bucket
    shuffled = list(torch.randperm(2003, generator=torch.Generator().manual_seed(0)).numpy().reshape(-1)[:1984]
                    .reshape(-1, 32))  # fmt: skip
    assert data.padding_fraction(lengths, batches) < 0.1 < data.padding_fraction(lengths, shuffled)
    again = data.bucketed_batches(lengths, 32, data.seeded_generator(0, 0))
    other_epoch = data.bucketed_batches(lengths, 32, data.seeded_generator(0, 1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded: resumable
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other_epoch, strict=True))
