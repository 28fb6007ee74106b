"""Where a dataset's files come from: a local --data-dir, or a dataset repo on the Hugging Face Hub.

Hub files are fetched with huggingface_hub into the standard HF cache, so HF_HOME, HF_ENDPOINT and
HF_HUB_OFFLINE=1 behave as they do for every other Hugging Face library, and a file already in the cache
is not downloaded again. The hub's datasets ship as parquet; `read_columns` reads the columns we use.
"""

from pathlib import Path

import pyarrow.parquet as pq
from huggingface_hub import hf_hub_download


class DataError(Exception):
    """The data could not be found or read; the message says what was expected where."""


def hub_file(repo: str, filename: str) -> Path:
    """`filename` of the dataset repo `repo`, downloaded into (or found in) the HF cache."""
    try:
        return Path(hf_hub_download(repo, filename, repo_type="dataset"))
    except Exception as e:  # offline, unreachable, or not found: all mean "use --data-dir"
        raise DataError(
            f"could not get {repo}/{filename} from the Hugging Face Hub ({type(e).__name__}); "
            "connect once to download it into the HF cache, or pass --data-dir with the files"
        ) from None


def local_file(data_dir: str, candidates: list[str], what: str) -> Path:
    """The first of `candidates` (paths relative to data_dir) that exists; else a DataError naming them."""
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        kind = "a file, not a directory" if directory.exists() else "no such directory"
        raise DataError(f"--data-dir {data_dir}: {kind}")
    for candidate in candidates:
        if (directory / candidate).is_file():
            return directory / candidate
    raise DataError(f"--data-dir {data_dir}: no {what}; expected one of {', '.join(candidates)}")


def read_columns(path: Path, columns: list[str]) -> dict[str, list]:
    """{column: values} of a parquet file."""
    try:
        table = pq.read_table(path, columns=columns)
        return {name: table.column(name).to_pylist() for name in columns}
    except (OSError, KeyError, ValueError) as e:  # pyarrow's errors subclass these
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {first_line})") from None
