"""A new user's first contact: the README says how to use .venv in its first lines, every .PHONY target of
the Makefile has a rule, and `eval.rescore` shows its progress."""

from __future__ import annotations

import re
from pathlib import Path

from hydra_compose import compose_eval

from eval.data.synthetic import write_synthetic_voc
from eval.rescore import main as rescore_main
from eval.run import evaluate

REPO = Path(__file__).resolve().parents[1]


def test_readme_says_how_to_use_the_venv_in_its_first_lines():
    first = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:15])
    assert "source .venv/bin/activate" in first and "make venv" in first and ".venv/bin/python" in first


def test_every_phony_make_target_has_a_rule():
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE).group(1).split()
    rules = set(re.findall(r"^([A-Za-z0-9_.%-]+):(?!=)", text, re.MULTILINE))
    assert "demo" in phony and sorted(t for t in phony if t not in rules) == []


def test_rescore_shows_progress_per_image(tmp_path, capsys):
    root = tmp_path / "voc"
    write_synthetic_voc(root, num_images=3, seed=4, size_range=(60, 90))
    run = tmp_path / "run"
    evaluate(compose_eval(["experiment=voc21", "model=tiny", "dataset.size=128", "batch_size=3", "num_workers=0",
                           "progress=false", "device=cpu", "grid_images=0", "methods=diffseg_only",
                           "save_masks=png", f"dataset.root={root}", f"paths.output_dir={run}"]))
    capsys.readouterr()
    assert rescore_main([str(run), "--protocol", "diffcut", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "rescore (diffcut)" in err and "3/3" in err
    assert rescore_main([str(run), "--protocol", "diffcut", "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "rescore (diffcut)" not in capsys.readouterr().err
