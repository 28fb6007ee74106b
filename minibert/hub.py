"""Find a model's files: in a local directory, or on the Hugging Face Hub through the standard HF cache.

`name_or_path` is either a directory laid out like a hub snapshot (config.json, model.safetensors,
tokenizer.json and/or vocab.txt) or a hub repo id such as "bert-base-uncased". Repo files are fetched
one by one with `huggingface_hub.hf_hub_download`, so only the files needed are downloaded, a file
already in the cache is not downloaded again, and HF_HOME, HF_ENDPOINT and HF_HUB_OFFLINE=1 behave as
they do for every other Hugging Face library.

Weights are read from safetensors only. A `pytorch_model.bin` is a Python pickle, and unpickling a
file can run arbitrary code, so it is refused with instructions to convert it once.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import _CACHED_NO_EXIST, file_exists, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from minibert.errors import LoadError

CONVERT_HINT = (
    'Convert it once, from a source you trust, with: python -c "import torch, safetensors.torch as st; '
    "sd = torch.load('pytorch_model.bin', weights_only=True); "
    "st.save_file({k: v.clone().contiguous() for k, v in sd.items()}, 'model.safetensors')\""
)


@dataclass
class ModelFiles:
    config: Path  # config.json
    weights: list[Path]  # model.safetensors, or the shards listed by model.safetensors.index.json


@dataclass
class TokenizerFiles:
    tokenizer_json: Path | None  # tokenizer.json (a serialized `tokenizers` pipeline), if present
    vocab: Path | None  # vocab.txt (one WordPiece per line), used when there is no tokenizer.json
    tokenizer_config: Path | None  # tokenizer_config.json, read for do_lower_case with vocab.txt


def model_files(name_or_path: str) -> ModelFiles:
    """The config and safetensors files of a model, downloaded into the HF cache if it is a repo id."""
    config = fetch(name_or_path, "config.json")
    if config is None:
        raise LoadError(f"{_where(name_or_path)} has no config.json; a model needs config.json and model.safetensors")
    single = fetch(name_or_path, "model.safetensors")
    if single is not None:
        return ModelFiles(config, [single])
    index = fetch(name_or_path, "model.safetensors.index.json")
    if index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
            raise LoadError(f"{index}: not a valid safetensors index ({e!r})") from None
        weights = [fetch(name_or_path, shard) for shard in shards]
        missing = [shard for shard, path in zip(shards, weights, strict=True) if path is None]
        if missing:
            raise LoadError(f"{index} lists shards that {_where(name_or_path)} does not have: {missing}")
        return ModelFiles(config, weights)
    if _has_file(name_or_path, "pytorch_model.bin"):
        raise LoadError(
            f"{_where(name_or_path)} has only pytorch_model.bin and no model.safetensors. minibert reads "
            "safetensors only: a .bin file is a Python pickle, and loading a pickle can run arbitrary code. "
            + CONVERT_HINT
        )
    raise LoadError(f"{_where(name_or_path)} has no weights: expected model.safetensors (or a sharded index)")


def tokenizer_files(name_or_path: str) -> TokenizerFiles:
    """tokenizer.json if the model has one; else vocab.txt (and tokenizer_config.json if present)."""
    tokenizer_json = fetch(name_or_path, "tokenizer.json")
    if tokenizer_json is not None:
        return TokenizerFiles(tokenizer_json, None, None)
    vocab = fetch(name_or_path, "vocab.txt")
    if vocab is None:
        raise LoadError(f"{_where(name_or_path)} has no tokenizer: expected tokenizer.json or vocab.txt")
    return TokenizerFiles(None, vocab, fetch(name_or_path, "tokenizer_config.json"))


def read_json_object(path: Path, error: type[Exception] = LoadError) -> dict:
    """The JSON object in `path`; a missing, malformed or non-object file raises `error` naming the file."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise error(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def fetch(name_or_path: str, filename: str) -> Path | None:
    """Local path of `filename` in the model, or None if the model has no such file.

    A directory is read in place. Anything else is taken as a hub repo id and the file is downloaded
    into (or found in) the HF cache.
    """
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    if local.exists():
        raise LoadError(f"{name_or_path}: a file, not a model directory (one with config.json, model.safetensors)")
    if _looks_like_path(name_or_path):
        parent = Path(name_or_path).expanduser().parent
        inside = f" ({parent}/ is a folder here, with no {Path(name_or_path).name} in it)" if parent.is_dir() else ""
        raise LoadError(
            f"{name_or_path}: no such directory{inside}, and a path is not a hub repo id like "
            "'bert-base-uncased'; pass the folder that holds config.json and model.safetensors"
        )
    try:
        return Path(hf_hub_download(name_or_path, filename))
    except LocalEntryNotFoundError:
        # Offline (HF_HUB_OFFLINE=1) or the hub unreachable, and the file not in the cache. If an earlier
        # online call learnt that the repo has no such file, the cache remembers that too.
        if try_to_load_from_cache(name_or_path, filename) is _CACHED_NO_EXIST:
            return None
        raise LoadError(
            f"{name_or_path}/{filename}: not in the Hugging Face cache and the hub cannot be reached "
            "(offline, or HF_HUB_OFFLINE=1). Connect once to download it, or pass a local directory."
        ) from None
    except EntryNotFoundError:
        return None
    except RepositoryNotFoundError:
        raise LoadError(
            f"{name_or_path}: neither a local directory nor a model repo on the hub (or a private/gated repo "
            "you are not logged in for)"
        ) from None
    except RevisionNotFoundError as e:
        raise LoadError(f"{name_or_path}: revision not found on the hub ({e})") from None
    except (HfHubHTTPError, OSError) as e:
        raise LoadError(f"{name_or_path}/{filename}: download failed: {e}") from None


def _has_file(name_or_path: str, filename: str) -> bool:
    """Whether the model has `filename`, without downloading it (a HEAD request for a repo)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return (local / filename).is_file()
    try:
        return file_exists(name_or_path, filename)
    except Exception:  # offline or unreachable: we cannot tell, and only the error message depends on it
        return False


def _where(name_or_path: str) -> str:
    return f"directory {name_or_path}" if Path(name_or_path).expanduser().is_dir() else f"repo {name_or_path}"


def _looks_like_path(name: str) -> bool:
    """Repo ids are 'name' or 'org/name'; anything else ('./x', '/abs/x', 'a/b/c', '~/x') is a path, and so is
    'org/name' when 'org' is a folder here ('models/mine': a typo in a local path, not a hub id to retry)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name or name == "":
        return True
    return "/" in name and Path(name).parent.is_dir()
