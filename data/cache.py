"""A small on-disk cache of token arrays, so that a second run skips tokenisation.

The file name is a hash of everything the arrays depend on (the tokenizer, the text, the settings), so a
change to any of them builds new arrays instead of reading stale ones. Arrays are stored with np.savez
and read back with allow_pickle=False: plain numbers only, never a pickle. A file is written to a
temporary name and renamed into place, so a crash never leaves half a cache file.
"""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from minibert.files import write_atomically


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minibert-peft"


def cached_arrays(
    cache_dir: Path | None, kind: str, key: list[str], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """build() once per distinct key, then read from cache_dir/<kind>-<hash of key>.npz (None: no cache)."""
    if cache_dir is None:
        return build()
    digest = hashlib.sha256()
    for part in key:
        digest.update(hashlib.sha256(part.encode()).digest())  # hash each part: no ambiguity at the joins
    path = Path(cache_dir) / f"{kind}-{digest.hexdigest()[:24]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: str):
        with open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" to its name
            np.savez(f, **arrays)

    write_atomically(path, save)
    return arrays
