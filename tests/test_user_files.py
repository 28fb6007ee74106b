"""Your own files (data/tables.py, data/labels.py, data/user_files.py): every format gives the same rows,
messy files lose and merge none, columns and the kind of task are guessed as documented, classes are
sorted, pairs are tokenised as BertTokenizerFast tokenises them, and each kind of bad input is one clear line."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import transformers

import data
import minibert
import tasks
from data import user_files
from data.files import DataError
from tests.conftest import CORPUS_WORDS

ROWS = [
    {"sentence": 'a "quoted, word', "label": "pos"},  # an unbalanced quote and a comma inside the text
    {"sentence": "the cat sat", "label": "neg"},
    {"sentence": "naïve café", "label": "pos"},
    {"sentence": "the end", "label": "neutral"},
]


def write(path, rows, columns=None):
    """Write rows (dicts) in the format of path's extension; CSV quoted as RFC 4180, TSV not quoted at all."""
    columns = columns or list(rows[0])
    suffix = path.suffix
    if suffix == ".parquet":
        pq.write_table(pa.table({c: [r[c] for r in rows] for c in columns}), path)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".tsv":
        lines = ["\t".join(columns)] + ["\t".join(str(r[c]) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] for r in rows])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_rows(tmp_path, suffix):
    table = data.read_table(write(tmp_path / f"train{suffix}", ROWS))
    assert len(table) == 4 and list(table.columns) == ["sentence", "label"]
    assert table.columns["sentence"] == [r["sentence"] for r in ROWS]  # nothing merged, nothing lost
    split = user_files.labelled_split(table, data.DataFiles(str(table.path)), ("neg", "neutral", "pos"))
    assert split.labels.tolist() == [2, 0, 2, 1] and split.pairs is None


def test_messy_files_bom_crlf_quotes(tmp_path):
    # a UTF-8 byte-order mark, CRLF line ends, an unbalanced quote in a TSV field (GLUE's files have them)
    tsv = tmp_path / "train.tsv"
    tsv.write_bytes('\ufeffsentence\tlabel\r\nhe said "hi\t1\r\nthe cat\t0\r\n\r\nshe said bye"\t1\r\n'.encode())
    table = data.read_table(tsv)
    assert list(table.columns) == ["sentence", "label"] and len(table) == 3
    assert table.columns["sentence"] == ['he said "hi', "the cat", 'she said bye"']
    assert [table.where(i) for i in range(3)] == ["line 2", "line 3", "line 5"]  # the blank line 4 is not a row
    # CSV: a quoted field may hold a comma, a newline and a doubled quote; the next row's line is still right
    csv = tmp_path / "train.csv"
    csv.write_text('text,label\n"a, b\nc ""d""",1\nplain,0\n"x",1,extra\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.csv: line 5 has 3 comma-separated fields, the header \(line 1\) has 2"):
        data.read_table(csv)
    csv.write_text('text,label\n"a, b\nc ""d""",1\nplain,0\n', encoding="utf-8")
    table = data.read_table(csv)
    assert table.columns["text"] == ['a, b\nc "d"', "plain"] and table.where(1) == "line 4"


def test_column_defaults_and_pairs(tmp_path):
    cases = {
        ("sentence1", "sentence2", "label"): ("sentence1", "sentence2"),
        ("premise", "hypothesis", "label"): ("premise", "hypothesis"),
        ("question", "sentence", "label"): ("question", "sentence"),  # QNLI: the question first
        ("question1", "question2", "label"): ("question1", "question2"),
        ("idx", "text", "score"): ("text", None),
    }
    for columns, expected in cases.items():
        path = write(tmp_path / "f.jsonl", [dict.fromkeys(columns, "x")])
        table = data.read_table(path)
        assert user_files.text_columns(table, data.DataFiles(str(path))) == expected
    path = write(tmp_path / "f.jsonl", [{"body": "x", "cls": "a"}])
    table = data.read_table(path)
    with pytest.raises(DataError, match=r"no text column found among body, cls; name it with --text-column"):
        user_files.text_columns(table, data.DataFiles(str(path)))
    with pytest.raises(DataError, match=r"no label column found among body, cls; name it with --label-column"):
        user_files.label_column(table, data.DataFiles(str(path)))
    named = data.DataFiles(str(path), text_column="body", label_column="cls")
    assert user_files.text_columns(table, named) == ("body", None) and user_files.label_column(table, named) == "cls"


def test_kind_inference_and_sorted_classes(tmp_path):
    from data import labels

    assert labels.class_names(["b", "c", "a", "b"]) == ("a", "b", "c")  # sorted, as run_glue.py sorts them
    assert labels.class_names([10, 2, "1", 2.0]) == ("1", "2", "10")  # numbers by value, 2.0 is class "2"
    assert labels.infer_kind([1, 0, 1]) == "classification"
    assert labels.infer_kind(["0.5", "3", "4.2"]) == "regression"
    assert labels.infer_kind(["pos", "neg"]) == "classification"
    rows = [{"text": "a", "label": v} for v in (0.5, 1, 4.25)]
    assert isinstance(tasks.from_files(data.DataFiles(str(write(tmp_path / "r.jsonl", rows)))), tasks.Regression)
    (tmp_path / "t.txt").write_text("one line\nanother\n", encoding="utf-8")
    assert tasks.from_files(data.DataFiles(str(tmp_path / "t.txt"))).kind == "mlm"
    task = tasks.from_files(data.DataFiles(str(write(tmp_path / "c.csv", ROWS))))
    assert task.label_names == ("neg", "neutral", "pos") and task.metrics == ("accuracy", "macro_f1")


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    return transformers.BertTokenizerFast(str(tiny_model_dir / "vocab.txt"))


@pytest.mark.parametrize("max_seq_len", [64, 12, 9, 5])
def test_pairs_equal_bert_tokenizer_fast(tiny_model_dir, hf_tokenizer, max_seq_len):
    """[CLS] a [SEP] b [SEP] and segment ids 0/1, truncated longest_first: the same ids as transformers."""
    rng = np.random.default_rng(0)
    words = [w for w in CORPUS_WORDS]
    pairs = [(" ".join(rng.choice(words, n)), " ".join(rng.choice(words, m))) for n, m in
             [(3, 4), (10, 2), (2, 10), (6, 6), (7, 5), (5, 7), (1, 30), (20, 20)]]  # fmt: skip
    tok = minibert.load_tokenizer(str(tiny_model_dir))
    firsts, seconds = [a for a, _ in pairs], [b for _, b in pairs]
    examples = data.encode_examples(firsts, np.zeros(len(pairs)), tok, max_seq_len, pairs=seconds)
    batch = examples.batch(list(range(len(pairs))), pad_id=0)
    theirs = hf_tokenizer(firsts, seconds, truncation=True, max_length=max_seq_len, padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert batch["token_type_ids"].tolist() == theirs["token_type_ids"].tolist()
    assert batch["attention_mask"].tolist() == theirs["attention_mask"].tolist()
    if max_seq_len < 64:
        assert examples.truncated > 0


def test_truncate_pair_rule():
    assert data.truncate_pair(3, 4, 10) == (3, 4)  # fits: nothing cut
    assert data.truncate_pair(3, 20, 9) == (3, 6)  # the shorter fits in half: kept whole
    assert data.truncate_pair(10, 10, 15) == (7, 8)  # both halved; the odd piece to the second on a tie
    assert data.truncate_pair(20, 8, 9) == (5, 4)  # the odd piece to the longer


def test_split_policy_for_files(tmp_path):
    rows = [{"text": f"the cat {i}", "label": i % 3} for i in range(50)]
    files = data.DataFiles(str(write(tmp_path / "train.csv", rows)))
    task = tasks.from_files(files)
    splits = task.dataset.load(None, ("train", "validation"))
    assert len(splits["validation"]) == 5 and len(splits["train"]) == 45  # 10% held out
    again = task.dataset.load(None, ("validation",))
    assert again["validation"].texts == splits["validation"].texts  # fixed: the same slice every time
    assert task.test_splits == ()  # no test file: no test split
    with_val = data.DataFiles(files.train, validation=str(write(tmp_path / "dev.csv", rows[:7])))
    loaded = tasks.from_files(with_val).dataset.load(None, ("train", "validation"))
    assert len(loaded["train"]) == 50 and len(loaded["validation"]) == 7


def test_masked_lm_on_a_table_column(tmp_path):
    rows = [{"id": i, "body": f"the cat sat on the mat {i}"} for i in range(20)]
    files = data.DataFiles(str(write(tmp_path / "notes.parquet", rows)), text_column="body")
    task = tasks.from_files(files, "mlm")
    loaded = task.corpus.load(None, ("train",))
    assert loaded["train"]["lines"] == [r["body"] for r in rows] and task.test_splits == ()


def test_empty_texts_are_skipped_and_counted(tmp_path):
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(["a b", "", "c", "   ", "d", "e"] * 5)]
    task = tasks.from_files(data.DataFiles(str(write(tmp_path / "train.jsonl", rows))))
    split = task.dataset.load(None, ("train",))["train"]
    assert len(split) == 18 and split.skipped_empty == 2 * 5 and split.first_skipped == "line 2"


BAD = [  # (file name, content, message)
    ("no_header.csv", "great movie,1\nawful,0\n", "the first line ('great movie', '1') is not a header row"),
    ("empty.csv", "", "empty.csv: the file is empty"),
    ("header_only.tsv", "sentence\tlabel\n", "a header (sentence, label) and no rows"),
    ("fields.tsv", "sentence\tlabel\nfine\t1\ntoo\tmany\t1\n", "line 3 has 3 tab-separated fields"),
    ("fields.csv", "sentence,label\nfine,1\nfew\n", "line 3 has 1 comma-separated fields"),
    ("mixed.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n', "mixed label types"),
    ("nolabel.csv", "text,label\na,1\nb,\n", "line 3 has no label in column 'label'"),
    ("column.csv", "txt,label\na,1\nb,0\n", "no text column found among txt, label"),
    ("json.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "line 2 is a JSON list, not an object"),
    ("broken.jsonl", '{"text": "a", "label": 1}\n{"text": \n', "line 2 is not valid JSON"),
    ("one_class.csv", "text,label\na,1\nb,1\n", "a classifier needs at least two classes"),
    ("data.xlsx", "x", "unknown format '.xlsx'"),
]


@pytest.mark.parametrize("name, content, message", BAD, ids=[b[0] for b in BAD])
def test_bad_files_say_what_and_where(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as error:
        tasks.from_files(data.DataFiles(str(path)), "classification")
    assert message in str(error.value) and str(path) in str(error.value)


def test_bad_labels_and_bytes(tmp_path):
    bad_utf8 = tmp_path / "latin1.csv"
    bad_utf8.write_bytes("text,label\ncafé,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: not valid UTF-8 at byte 14 \(line 2\)"):
        data.read_table(bad_utf8)
    train = write(tmp_path / "train.csv", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    test = write(tmp_path / "test.csv", [{"text": "a", "label": "pos"}, {"text": "c", "label": "meh"}])
    task = tasks.from_files(data.DataFiles(str(train), test=str(test)))
    with pytest.raises(DataError, match=r"test.csv: line 3 has label 'meh', which the training file never has"):
        task.dataset.load(None, ("test",))
    scores = write(tmp_path / "scores.csv", [{"text": "a", "score": "0.5"}, {"text": "b", "score": "high"}])
    with pytest.raises(DataError, match=r"mixed label types in column 'score'"):
        tasks.from_files(data.DataFiles(str(scores)))
    with pytest.raises(DataError, match=r"line 3 has label 'high' in column 'score', not a number"):
        tasks.from_files(data.DataFiles(str(scores)), "regression").dataset.load(None, ("train",))
    missing = data.DataFiles(str(train), label_column="lable")
    message = (
        r"no column 'lable'; the columns are text, label \(the closest: 'label'\)\. Name the right one with --label"
    )
    with pytest.raises(DataError, match=message):
        tasks.from_files(missing)
    with pytest.raises(DataError, match=r"t.txt: read as a table .*, but its first line \('a'\) has no tab or comma"):
        (tmp_path / "t.txt").write_text("a\n", encoding="utf-8")
        tasks.from_files(data.DataFiles(str(tmp_path / "t.txt")), "classification")
