"""The README's Python example runs as written (with the tiny backbone standing in for SD v1.4)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffseg.backbone import StableDiffusionBackbone
from diffseg.testing.tiny import tiny_backbone

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_segments_an_image(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Segment one image", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 5
    monkeypatch.setattr(StableDiffusionBackbone, "from_pretrained", staticmethod(lambda *a, **k: tiny_backbone()))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)).save("cat.jpg")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    mask = scope["mask"]
    assert mask.shape == (512, 512) and mask.dtype == torch.long and mask.min() >= 0
    assert set(scope["maps"]) == {64, 32, 16, 8}
