"""load_tokenizer gives the same ids as transformers' BertTokenizerFast, from vocab.txt or tokenizer.json."""

import json

import pytest
import transformers

import minibert

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the",
    "a",
    "cafe",
    "deja",
    "vu",
    "hello",
    "world",
    "don",
    "t",
    "'",
    ",",
    ".",
    "!",
    "?",
    "(",
    ")",
    "-",
    "una",
    "##ff",
    "##able",
    "run",
    "##ning",
    "##s",
    "日",
    "本",
    "paris",
    "is",
    "in",
    "france",
    "Paris",
    "Hello",
    "Café",
    "é",
    "##é",
    "1",
    "##9",
    "##0",
    "mask",
    "of",
]
SENTENCES = [
    "Hello, World!",
    "Café déjà vu in Paris (France).",
    "unaffable running runs xyzzy",  # pieces, and a word with no split -> [UNK]
    "日本 is  \t not\nFrance? 1990-1999",  # CJK characters, odd whitespace, digits
    "The [MASK] of Paris is [MASK].",  # special tokens inside text are kept whole
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vocab-only")
    (directory / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    return directory


@pytest.mark.parametrize("lowercase", [True, False])
def test_vocab_txt_matches_bert_tokenizer_fast(vocab_dir, tmp_path, lowercase):
    directory = vocab_dir
    if not lowercase:  # a cased model says so in tokenizer_config.json
        directory = tmp_path
        (directory / "vocab.txt").write_text((vocab_dir / "vocab.txt").read_text(encoding="utf-8"), encoding="utf-8")
        (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ours = minibert.load_tokenizer(str(directory))
    ref = transformers.BertTokenizerFast.from_pretrained(str(vocab_dir), do_lower_case=lowercase)
    for text in SENTENCES:
        assert ours.encode(text).ids == ref(text)["input_ids"], text
        assert ours.encode(text, add_special_tokens=False).ids == ref(text, add_special_tokens=False)["input_ids"]
    pair = ours.encode(SENTENCES[0], SENTENCES[1])
    expected = ref(SENTENCES[0], SENTENCES[1])
    assert pair.ids == expected["input_ids"]
    assert pair.type_ids == expected["token_type_ids"]


def test_special_tokens_and_unknown_words(vocab_dir):
    tok = minibert.load_tokenizer(str(vocab_dir))
    encoding = tok.encode("Hello xyzzy")
    assert encoding.tokens == ["[CLS]", "hello", "[UNK]", "[SEP]"]
    assert tok.token_to_id("[MASK]") == 4
    assert tok.encode("unaffable", add_special_tokens=False).tokens == ["una", "##ff", "##able"]


def test_tokenizer_json_matches_vocab_txt(vocab_dir, tmp_path):
    """A directory with only tokenizer.json (as saved by transformers) gives the same ids."""
    ref = transformers.BertTokenizerFast.from_pretrained(str(vocab_dir), do_lower_case=True)
    ref.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]
    from_json = minibert.load_tokenizer(str(tmp_path))
    from_vocab = minibert.load_tokenizer(str(vocab_dir))
    for text in SENTENCES:
        assert from_json.encode(text).ids == from_vocab.encode(text).ids == ref(text)["input_ids"]


def test_padding_and_truncation_in_tokenizer_json_are_switched_off(vocab_dir, tmp_path):
    """sentence-transformers' tokenizer.json pads every text to 128 and truncates there: not for us."""
    fixed = minibert.load_tokenizer(str(vocab_dir))
    fixed.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    fixed.enable_truncation(max_length=5)
    fixed.save(str(tmp_path / "tokenizer.json"))
    tok = minibert.load_tokenizer(str(tmp_path))
    text = " ".join(WORDS[:10])
    assert tok.encode(text).ids == minibert.load_tokenizer(str(vocab_dir)).encode(text).ids
    assert len(tok.encode(text).ids) == 12  # [CLS] + 10 words + [SEP]: neither padded to 16 nor cut to 5


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(minibert.LoadError, match="no tokenizer: expected tokenizer.json or vocab.txt"):
        minibert.load_tokenizer(str(tmp_path))


def test_vocab_without_special_tokens_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("the\na\n")
    with pytest.raises(minibert.LoadError, match=r"vocab.txt: a BERT vocabulary needs the special tokens"):
        minibert.load_tokenizer(str(tmp_path))
