"""WikiText-2: where the text comes from.

Merity, Xiong, Bradbury, Socher, "Pointer Sentinel Mixture Models", 2016 (arXiv:1609.07843), Section 4:
Wikipedia "Good" and "Featured" articles, split into train (600 articles, ~2.1M words), validation
and test (60 articles, ~0.2M words each). We use the *raw* variant (wikitext-2-raw-v1): the original
text, no <unk> replacement, which a WordPiece tokenizer handles itself.

Sources, in this order:
  --data-dir DIR  holding either the hub's parquet files ({train,validation,test}-00000-of-00001.parquet,
                  directly or under wikitext-2-raw-v1/) or the original text layout
                  (wiki.{train,valid,test}.raw, or the tokenised wiki.*.tokens);
  otherwise       the dataset repo Salesforce/wikitext on the Hugging Face Hub, downloaded with
                  huggingface_hub into the standard HF cache (HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE apply).
"""

from pathlib import Path

from data.files import DataError, hub_file, local_file, read_columns

SPLITS = ("train", "validation", "test")
HUB_REPO = "Salesforce/wikitext"
HUB_FILE = "wikitext-2-raw-v1/{split}-00000-of-00001.parquet"
TEXT_NAMES = {"train": "train", "validation": "valid", "test": "test"}  # wiki.<name>.raw in the original zip


class WikiText:
    """The corpus of --task wikitext2, as tasks/masked_lm.py reads any corpus (your files: data/user_files.py)."""

    name = "wikitext2"
    title = "WikiText-2 (masked LM)"
    test_files = {"test": "test"}  # reported split -> WikiText-2's split
    held_out = False  # WikiText-2 has its own validation split

    def load(self, data_dir: str | None, splits) -> dict[str, dict]:
        return load_wikitext(data_dir, tuple(splits))

    def source(self) -> str:
        return f"{HUB_REPO}/{HUB_FILE.split('/')[0]}"


def load_wikitext(data_dir: str | None = None, splits: tuple[str, ...] = SPLITS) -> dict[str, dict]:
    """{split: {"lines": [str, ...], "source": path}} for the given splits (default all three)."""
    return {split: load_split(split, data_dir) for split in splits}


def load_split(split: str, data_dir: str | None = None) -> dict:
    path = find_file(split, data_dir) if data_dir is not None else hub_file(HUB_REPO, HUB_FILE.format(split=split))
    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: the {split} split is empty")
    return {"lines": lines, "source": path}


def find_file(split: str, data_dir: str) -> Path:
    parquet = Path(HUB_FILE.format(split=split))
    text = TEXT_NAMES[split]
    candidates = [parquet.name, str(parquet), f"wiki.{text}.raw", f"wiki.{text}.tokens"]
    return local_file(data_dir, candidates, f"{split} split")


def read_lines(path: Path) -> list[str]:
    """The lines of a parquet file's "text" column, or of a text file."""
    if path.suffix == ".parquet":
        return read_columns(path, ["text"])["text"]
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
