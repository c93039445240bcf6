"""Loading from the hub with no network: one short probe, then the local cache only, so a missing model
fails at once in one message naming it, and a cached one still loads."""

from __future__ import annotations

import shutil
import socket

import pytest

import diffseg.backbone
from diffseg.backbone import BackboneLoadError, StableDiffusionBackbone, hub_unreachable
from diffseg.testing.tiny import save_tiny_pretrained

DOWN = "the Hugging Face hub cannot be reached (huggingface.co: name resolution failed)"


@pytest.fixture
def hub_down(monkeypatch):
    """The hub probe reports no network; every UNet load's ``local_files_only`` is recorded."""
    probes, unet_loads = [], []
    monkeypatch.setattr(diffseg.backbone, "hub_unreachable", lambda *a, **k: probes.append(1) or DOWN)
    real = diffseg.backbone.UNet2DConditionModel.from_pretrained

    def recorded(*args, **kwargs):
        unet_loads.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(diffseg.backbone.UNet2DConditionModel, "from_pretrained", recorded)
    return probes, unet_loads


def test_a_missing_hub_model_fails_at_once_naming_it_when_the_hub_is_down(tmp_path, hub_down):
    probes, unet_loads = hub_down
    with pytest.raises(BackboneLoadError) as info:
        StableDiffusionBackbone.from_pretrained("acme/not-cached", cache_dir=tmp_path / "hf", device="cpu")
    message = str(info.value)
    assert "'acme/not-cached'" in message and "unet/" in message
    assert "not in the local Hugging Face cache" in message and DOWN in message
    assert probes == [1] and unet_loads == [True]  # one probe, then local files only: no retries on the network


def test_a_cached_hub_model_loads_when_the_hub_is_down(tmp_path, hub_down):
    probes, unet_loads = hub_down
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--acme--tiny"
    shutil.copytree(save_tiny_pretrained(tmp_path / "saved"), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    backbone = StableDiffusionBackbone.from_pretrained("acme/tiny", cache_dir=tmp_path / "hf", device="cpu")
    assert backbone.pretrained and backbone.name == "acme/tiny" and backbone.family.name == "sd1"
    assert probes == [1] and unet_loads == [True]


def test_local_folders_and_offline_mode_are_not_probed(tmp_path, monkeypatch):
    monkeypatch.setattr(diffseg.backbone, "hub_unreachable", lambda *a, **k: pytest.fail("probed"))
    folder = save_tiny_pretrained(tmp_path / "model")
    assert StableDiffusionBackbone.from_pretrained(folder, device="cpu").name == str(folder)
    with pytest.raises(BackboneLoadError, match="offline mode is on"):
        StableDiffusionBackbone.from_pretrained("acme/x", local_files_only=True, cache_dir=tmp_path / "hf")


def test_hub_probe_names_the_host_that_does_not_answer(monkeypatch):
    with socket.socket() as sock:  # a port on this machine that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    reason = hub_unreachable(timeout=2.0)
    assert reason is not None and "cannot be reached" in reason and "127.0.0.1" in reason
