"""Checkpoints: safetensors with config in metadata; pickles refused; Hub ids fail cleanly offline."""

from __future__ import annotations

import pytest
import torch

from audioguide import checkpoints as ck
from audioguide.core import AudioguideError


def test_roundtrip_file_and_directory(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    config = {"hidden": 64, "kind": "flow", "nested": {"a": [1, 2]}}
    path = ck.save_checkpoint(tmp_path / "model.safetensors", tensors, config, kind="toy-flow")
    for source in (path, tmp_path, str(tmp_path)):
        loaded = ck.load_checkpoint(source)
        assert loaded.config == config and loaded.kind == "toy-flow"
        assert torch.equal(loaded.tensors["w"], tensors["w"]) and torch.equal(loaded.tensors["b"], tensors["b"])
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("name", ["model.pt", "model.bin", "weights.ckpt"])
def test_pickles_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"not even a pickle")
    with pytest.raises(AudioguideError, match="refusing to load pickled checkpoint"):
        ck.load_checkpoint(tmp_path / name)


def test_foreign_or_corrupt_files_are_errors(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AudioguideError, match="not an audioguide checkpoint"):
        ck.load_checkpoint(tmp_path / "other.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(AudioguideError, match="not a valid safetensors file"):
        ck.load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(AudioguideError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "none.safetensors")


def test_hub_ids_are_fetched_with_huggingface_hub(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    target = ck.save_checkpoint(tmp_path / "hub.safetensors", {"w": torch.ones(1)}, {"a": 1}, "toy-flow")

    def fake(repo_id, filename):
        calls.append((repo_id, filename))
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    assert ck.load_checkpoint("someone/some-model").config == {"a": 1}
    assert calls == [("someone/some-model", "model.safetensors")]

    def offline(repo_id, filename):
        raise OSError("We couldn't connect to the Hub.\nmore lines")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(AudioguideError) as err:
        ck.load_checkpoint("someone/some-model")
    assert "cannot fetch model.safetensors from Hub repo 'someone/some-model'" in str(err.value)
    assert "\n" not in str(err.value)
