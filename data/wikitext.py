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

import pyarrow.parquet as pq
from huggingface_hub import hf_hub_download

SPLITS = ("train", "validation", "test")
HUB_REPO = "Salesforce/wikitext"
HUB_FILE = "wikitext-2-raw-v1/{split}-00000-of-00001.parquet"
TEXT_NAMES = {"train": "train", "validation": "valid", "test": "test"}  # wiki.<name>.raw in the original zip


class DataError(Exception):
    """The data could not be found or read; the message says what was expected where."""


def load_wikitext(data_dir: str | None = None, splits: tuple[str, ...] = SPLITS) -> dict[str, dict]:
    """{split: {"lines": [str, ...], "source": path}} for the given splits (default all three)."""
    return {split: load_split(split, data_dir) for split in splits}


def load_split(split: str, data_dir: str | None = None) -> dict:
    path = find_file(split, data_dir) if data_dir is not None else download(split)
    lines = read_lines(path)
    if not any(line.strip() for line in lines):
        raise DataError(f"{path}: the {split} split is empty")
    return {"lines": lines, "source": path}


def find_file(split: str, data_dir: str) -> Path:
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such directory")
    parquet = Path(HUB_FILE.format(split=split)).name
    text = TEXT_NAMES[split]
    candidates = [
        directory / parquet,
        directory / "wikitext-2-raw-v1" / parquet,
        directory / f"wiki.{text}.raw",
        directory / f"wiki.{text}.tokens",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"--data-dir {data_dir}: no {split} split; expected one of {', '.join(p.name for p in candidates[1:])} "
        f"(the parquet file also under wikitext-2-raw-v1/)"
    )


def download(split: str) -> Path:
    filename = HUB_FILE.format(split=split)
    try:
        return Path(hf_hub_download(HUB_REPO, filename, repo_type="dataset"))
    except Exception as e:  # offline, unreachable, or not found: all mean "use --data-dir"
        raise DataError(
            f"could not get {HUB_REPO}/{filename} from the Hugging Face Hub ({type(e).__name__}); "
            "connect once to download it into the HF cache, or pass --data-dir with the WikiText-2 files"
        ) from None


def read_lines(path: Path) -> list[str]:
    """The lines of a parquet file's "text" column, or of a text file."""
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path, columns=["text"])
            return table.column("text").to_pylist()
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, KeyError, ValueError) as e:  # pyarrow errors subclass these
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {first_line})") from None
