"""convert.checkpoint.read_checkpoint: both PyTorch pickle formats (zip ones memory-mapped), safetensors, the
wrappers and prefixes of training frameworks, and refusals that name the file."""
import pytest
import torch
from safetensors.torch import save_file

from shiftsr.convert.checkpoint import CheckpointError, read_checkpoint

TENSORS = {"conv.weight": torch.arange(12.0).view(3, 4), "conv.bias": torch.ones(3)}


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize("wrap", ["plain", "lightning", "ddp"])
def test_tensors_come_back_from_either_pickle_format_and_any_wrapper(tmp_path, zip_format, wrap):
    state = {"plain": dict(TENSORS), "lightning": {"state_dict": dict(TENSORS), "epoch": 7},
             "ddp": {f"module.{key}": value for key, value in TENSORS.items()}}[wrap]
    path = tmp_path / "model.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    read = read_checkpoint(path)
    assert sorted(read) == sorted(TENSORS) and all(torch.equal(read[key], TENSORS[key]) for key in TENSORS)


def test_safetensors_and_refusals_name_the_file(tmp_path):
    save_file(TENSORS, tmp_path / "model.safetensors")
    assert torch.equal(read_checkpoint(tmp_path / "model.safetensors")["conv.bias"], TENSORS["conv.bias"])
    with pytest.raises(CheckpointError, match="missing.pth: no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="broken.pth"):
        read_checkpoint(tmp_path / "broken.pth")
