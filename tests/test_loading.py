"""Loading: the hub download path (against a loopback server) and every kind of bad input."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import minibert
from tests.test_tokenizer import SPECIAL, WORDS

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(ThreadingHTTPServer):
    """Serves repos under the hub's URL layout, /{org}/{name}/resolve/{revision}/{filename}, and logs requests."""

    def __init__(self, repos: dict[str, Path]):
        self.repos = repos
        self.log = []  # (method, repo, filename)
        super().__init__(("127.0.0.1", 0), HubHandler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.respond(send_body=False)

    def do_GET(self):
        self.respond(send_body=True)

    def respond(self, send_body):
        parts = self.path.split("?")[0].strip("/").split("/")
        kind = parts[:1] if parts[0] == "datasets" else []  # dataset repos live under /datasets/
        parts = parts[len(kind) :]
        repo, filename = "/".join(kind + parts[:2]), "/".join(parts[4:])
        self.server.log.append((self.command, repo, filename))
        if len(parts) < 5 or parts[2] != "resolve" or repo not in self.server.repos:
            return self.error(404, "RepoNotFound")
        path = self.server.repos[repo] / filename
        if not path.is_file():  # like the hub, names the commit, so the cache can remember the file is absent
            return self.error(404, "EntryNotFound", {"X-Repo-Commit": COMMIT})
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest() + '"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def error(self, status, code, headers=None):
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


def run_against_hub(repos: dict[str, Path], code: str, hf_home: Path):
    """Run `code` in a fresh Python process whose HF_ENDPOINT is a loopback FakeHub serving `repos`.
    Returns (the finished process, the server's request log)."""
    server = FakeHub(repos)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=server.url, HF_HOME=str(hf_home), PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    finally:
        server.shutdown()
        server.server_close()
    return out, server.log


@pytest.fixture
def hub(bert_dir, tmp_path):
    """A hub with some-org/tiny-bert (weights, config, vocab.txt and a decoy pytorch_model.bin)."""
    repo = tmp_path / "repo"
    shutil.copytree(bert_dir[0], repo)
    (repo / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n", encoding="utf-8")
    (repo / "pytorch_model.bin").write_bytes(b"never downloaded")
    server = FakeHub({"some-org/tiny-bert": repo})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


SCRIPT = """
import json, sys, torch, minibert
model = minibert.from_pretrained("some-org/tiny-bert")
tok = minibert.load_tokenizer("some-org/tiny-bert")
ids = torch.tensor([tok.encode("hello world").ids])
print(json.dumps({"ids": ids.tolist(), "logits": model(ids).sum().item()}))
"""


def run_user_process(env_overrides):
    """Run SCRIPT in a fresh interpreter, as a user would, with the given HF_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(env_overrides, PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_download_from_hub_then_offline(hub, bert_dir, tmp_path):
    hf_home = tmp_path / "hf-home"
    online = run_user_process({"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"})
    downloaded = {f for method, _, f in hub.log if method == "GET"}
    assert downloaded == {"config.json", "model.safetensors", "vocab.txt"}  # only what is needed; never the .bin
    assert list((hf_home / "hub").glob("models--some-org--tiny-bert/snapshots/*/model.safetensors"))

    expected_ids = minibert.load_tokenizer(str(hub.repos["some-org/tiny-bert"])).encode("hello world").ids
    with torch.no_grad():
        expected_logits = minibert.from_pretrained(bert_dir[0])(torch.tensor([expected_ids])).sum().item()
    assert online["ids"] == [expected_ids]
    assert online["logits"] == pytest.approx(expected_logits, abs=1e-4)

    hub.log.clear()
    hub.shutdown()  # offline: nothing may be asked of the server any more
    offline = run_user_process({"HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert offline == online
    assert hub.log == []


LOAD_AND_PRINT_ERROR = """
import minibert
try:
    minibert.from_pretrained("some-org/tiny-bert")
except minibert.LoadError as e:
    print(e)
"""


def test_offline_without_cache_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    code = LOAD_AND_PRINT_ERROR
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "some-org/tiny-bert/config.json: not in the Hugging Face cache" in out.stdout, out.stderr


def test_bin_only_repo_is_refused_without_downloading_it(hub, tmp_path):
    (hub.repos["some-org/tiny-bert"] / "model.safetensors").unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path), PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1")
    code = LOAD_AND_PRINT_ERROR
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "has only pytorch_model.bin" in out.stdout and "arbitrary code" in out.stdout, out.stderr
    assert ("GET", "some-org/tiny-bert", "pytorch_model.bin") not in hub.log


# ---- bad local input: one exception type, a message naming the file and the problem ----


def copy_model(bert_dir, tmp_path) -> Path:
    directory = tmp_path / "model"
    shutil.copytree(bert_dir[0], directory)
    return directory


def test_missing_directory(tmp_path):
    with pytest.raises(minibert.LoadError, match=r"nope: no such directory"):
        minibert.from_pretrained(str(tmp_path / "nope"))


def test_directory_without_weights(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    (directory / "model.safetensors").unlink()
    with pytest.raises(minibert.LoadError, match=r"model has no weights: expected model.safetensors"):
        minibert.from_pretrained(str(directory))


def test_directory_without_config(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    (directory / "config.json").unlink()
    with pytest.raises(minibert.LoadError, match=r"has no config.json"):
        minibert.from_pretrained(str(directory))


def test_truncated_safetensors(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(minibert.LoadError, match=r"model.safetensors: not a readable safetensors file"):
        minibert.from_pretrained(str(directory))


def test_garbage_safetensors(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(minibert.LoadError, match=r"model.safetensors: not a readable safetensors file"):
        minibert.from_pretrained(str(directory))


def test_bin_only_directory_is_refused(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    (directory / "model.safetensors").unlink()
    (directory / "pytorch_model.bin").write_bytes(b"a pickle we must never open")
    with pytest.raises(minibert.LoadError, match=r"only pytorch_model.bin.*pickle.*arbitrary code.*save_file"):
        minibert.from_pretrained(str(directory))


def test_config_shape_mismatch(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] += 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        minibert.LoadError, match=r"intermediate.dense.(weight|bias) has shape \(37,.*but config.json implies \(38"
    ):
        minibert.from_pretrained(str(directory))


def test_unsupported_architecture(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(minibert.LoadError, match=r"config.json: model_type 'gpt2'.*not supported"):
        minibert.from_pretrained(str(directory))


def test_invalid_config_json(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(minibert.LoadError, match=r"config.json: not valid JSON"):
        minibert.from_pretrained(str(directory))


def rewrite_weights(directory: Path, edit) -> None:
    from safetensors.torch import load_file

    state = load_file(str(directory / "model.safetensors"))
    edit(state)
    save_file(state, str(directory / "model.safetensors"))


def test_unexpected_key_is_refused(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    rewrite_weights(directory, lambda s: s.update({"qa_outputs.weight": torch.zeros(2, 32)}))
    with pytest.raises(minibert.LoadError, match=r"does not have, e.g. \['qa_outputs.weight'\]"):
        minibert.from_pretrained(str(directory))


def test_missing_encoder_key_is_refused(bert_dir, tmp_path):
    directory = copy_model(bert_dir, tmp_path)
    rewrite_weights(directory, lambda s: s.pop("bert.encoder.layer.1.output.dense.bias"))
    with pytest.raises(minibert.LoadError, match=r"missing from the checkpoint, e.g. \['layers.1.ffn_out.bias'\]"):
        minibert.from_pretrained(str(directory))


def test_untied_decoder_copy_is_refused(legacy_bert_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(legacy_bert_dir[0], directory)
    rewrite_weights(directory, lambda s: s["cls.predictions.decoder.weight"].add_(1.0))
    with pytest.raises(minibert.LoadError, match=r"cls.predictions.decoder.weight differs from the tensor it is tied"):
        minibert.from_pretrained(str(directory))


def test_sharded_checkpoint_loads(bert_dir, tmp_path):
    """model.safetensors.index.json + shards, as save_pretrained writes for big models."""
    from safetensors.torch import load_file

    directory = copy_model(bert_dir, tmp_path)
    state = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, shard_keys in shards.items():
        save_file({k: state[k] for k in shard_keys}, str(directory / name))
    weight_map = {k: name for name, shard_keys in shards.items() for k in shard_keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded = minibert.from_pretrained(str(directory))
    whole = minibert.from_pretrained(bert_dir[0])
    for (name, a), (_, b) in zip(sharded.state_dict().items(), whole.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
