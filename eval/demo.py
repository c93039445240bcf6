"""``make demo``: the whole pipeline offline, from nothing, on a CPU (6 images: 17 s wall on a quiet 2-core machine).

1. writes a small synthetic dataset in the real COCO-Stuff-27 on-disk layout
   (JPEG images, fine PNG labels with 255 = unlabelled, ids from the curated
   list's format) under ``datasets/demo_coco_stuff27``;
2. runs ``experiment=demo_kl_sweep`` with the tiny random-weight backbone: the main methods
   (DiffSeg, DiffSeg-fp32, K-Means-C, K-Means-S) and the KL-threshold sweep of DiffSeg in one
   run, so each image goes through the backbone once;
3. writes the tables, the sweep figure and the qualitative grid to ``results/demo/``, every file
   marked (from the run's provenance) as random weights on synthetic data, prints the main table
   and lists every file it wrote.

The numbers say nothing about DiffSeg: the backbone has random weights.

A fresh start (no ``--resume``) deletes only the run folder the demo itself made
(``<outputs>/coco_stuff27``, marked by :data:`DEMO_MARKER`); any other file or folder under
``--outputs`` is left alone, and a ``coco_stuff27`` folder the demo did not make is refused.

Exit status: 0 done; 2 refused settings (``--images`` out of range, ``--data`` that is not a
synthetic root, ``--outputs`` holding a run the demo did not make), before anything is written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from eval.config_path import config_dir
from eval.data.synthetic_marker import is_synthetic
from eval.folder.errors import RunMismatchError
from eval.folder.layout import QUALITATIVE_PNG
from eval.folder.run_json import read_run_json

DEMO_IDS = ["000000000139", "000000000285", "000000000632", "000000000724", "000000000776",
            "000000000785", "000000000802", "000000000872", "000000000885", "000000001000",
            "000000001268", "000000001296"]
MAX_IMAGES = len(DEMO_IDS)
EXPERIMENT = "demo_kl_sweep"  # conf/experiment/: demo.yaml's methods + the KL sweep, one backbone pass
RUN_NAME = "coco_stuff27"     # the run folder under --outputs
LIST_FILE = "Coco164kFull_Stuff_Coarse_7.txt"  # the curated list file of a COCO-Stuff-27 root
DEMO_MARKER = "WRITTEN_BY_DEMO.txt"
_MARKER_TEXT = ("Written by `python -m eval.demo` (random weights, synthetic data). A fresh demo start deletes "
                "this folder; remove this file to keep it.\n")
_LIST_LIMIT = 4  # a folder holding more files of one kind is listed as one line


class DemoError(ValueError):
    """A setting the demo refuses before writing anything (exit status 2)."""


def _run_folder_is_demos(folder: Path) -> bool:
    """True for a run folder the demo made: it holds :data:`DEMO_MARKER`, or (made before the marker existed)
    its ``run.json`` records the tiny random-weight backbone on synthetic data."""
    if (folder / DEMO_MARKER).is_file():
        return True
    try:
        stored = read_run_json(folder)
        model = stored["settings"]["model"]["name"]
        synthetic = stored["data"]["synthetic"]
    except (OSError, ValueError, KeyError, TypeError, RunMismatchError):
        return False
    return str(model).startswith("tiny-random") and synthetic is True


def _listed_ids(data_root: Path) -> list[str]:
    path = data_root / LIST_FILE
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_settings(data_root: Path, outputs: Path, num_images: int, fresh: bool) -> bool:
    """Refuse what the demo must not do (:class:`DemoError`); returns True when the dataset must be written.

    Nothing is written here.
    """
    if not 1 <= num_images <= MAX_IMAGES:
        raise DemoError(f"--images: expected an integer in [1, {MAX_IMAGES}] (the demo's synthetic ids), "
                        f"got {num_images}")
    for flag, path in (("--data", data_root), ("--outputs", outputs)):
        if path.exists() and not path.is_dir():
            raise DemoError(f"{flag} {path} is a file; give a folder (it is created when missing)")
    write_data = True
    if data_root.exists() and any(data_root.iterdir()):
        if not is_synthetic(data_root):
            raise DemoError(f"--data {data_root} holds files that are not a synthetic demo dataset; the demo only "
                            "writes and reads its own synthetic data (give an empty or new folder)")
        ids = _listed_ids(data_root) if (data_root / LIST_FILE).is_file() else []
        if ids[:num_images] == DEMO_IDS[:num_images] and len(ids) >= num_images:
            write_data = False
        elif ids != DEMO_IDS[:len(ids)]:
            raise DemoError(f"--data {data_root} is a synthetic root the demo did not write ({len(ids)} other ids); "
                            "give another folder")
    run_dir = outputs / RUN_NAME
    if fresh and run_dir.exists() and not _run_folder_is_demos(run_dir):
        raise DemoError(f"--outputs {outputs}: {run_dir} exists and was not made by the demo (no {DEMO_MARKER}); "
                        "a fresh demo deletes only its own run folder: give another --outputs")
    return write_data


def run_demo(data_root: Path, outputs: Path, results: Path, num_images: int, fresh: bool,
             overrides: Sequence[str] = ()) -> list[Path]:
    """Check the settings, write the data when missing, run the demo experiment, write the tables.

    ``overrides``: more Hydra overrides of the run (e.g. ``dataset.size=128`` for a faster one).

    Returns every path written, in order: the dataset's files (when written), the run folder's files, the
    results. Raises :class:`DemoError` (before writing anything) for refused settings.
    """
    write_data = check_settings(data_root, outputs, num_images, fresh)
    run_dir = outputs / RUN_NAME
    print(f"[demo] RANDOM WEIGHTS, SYNTHETIC DATA: a tiny untrained backbone on {num_images} synthetic images; "
          "the numbers say nothing about DiffSeg", flush=True)

    # imported after the checks: a refused setting answers at once
    from hydra import compose, initialize_config_dir

    from eval.data.synthetic import write_synthetic_coco_stuff
    from eval.report.tables import collect_runs, write_tables
    from eval.run import evaluate

    written: list[Path] = []
    if write_data:
        write_synthetic_coco_stuff(data_root, num_images=num_images, seed=0, ids=DEMO_IDS[:num_images])
        written += sorted(p for p in data_root.rglob("*") if p.is_file())
    if fresh and run_dir.exists():  # check_settings made sure it is the demo's own
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / DEMO_MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"experiment={EXPERIMENT}", f"dataset.root={data_root}", f"dataset.limit={num_images}",
            f"paths.output_dir={run_dir}", *overrides,
        ])
    print(f"[demo] {num_images} images x {len(cfg.methods)} methods (main table + KL sweep), one backbone pass "
          f"per image -> {run_dir}", flush=True)
    evaluate(cfg)
    written += sorted(p for p in run_dir.rglob("*") if p.is_file())
    results.mkdir(parents=True, exist_ok=True)
    tables = write_tables(collect_runs([run_dir]), results)
    grid = run_dir / QUALITATIVE_PNG
    if grid.exists():
        shutil.copyfile(grid, results / "qualitative_demo.png")
        tables.append(results / "qualitative_demo.png")
    main_table = results / f"{cfg.dataset.name}.md"  # the main table under the diffseg protocol
    if main_table.is_file():
        print()
        print(main_table.read_text(encoding="utf-8").rstrip())
        print()
    return written + tables


def file_listing(paths: list[Path]) -> list[str]:
    """One line per written file, except that a folder with more than a few files of one suffix is one line
    (``folder/*.png  (8 files)``)."""
    groups: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for path in paths:
        groups[(path.parent, path.suffix)].append(path)
    lines, shown = [], set()
    for path in paths:
        key = (path.parent, path.suffix)
        if len(groups[key]) > _LIST_LIMIT:
            if key not in shown:
                shown.add(key)
                lines.append(f"{path.parent / ('*' + path.suffix)}  ({len(groups[key])} files)")
        else:
            lines.append(str(path))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/demo_coco_stuff27", help="synthetic dataset root")
    parser.add_argument("--outputs", default="outputs/demo",
                        help=f"where the run folder goes (<outputs>/{RUN_NAME}; nothing else there is touched)")
    parser.add_argument("--results", default="results/demo", help="tables and figures")
    parser.add_argument("--images", type=int, default=6, help=f"number of synthetic images (1 to {MAX_IMAGES})")
    parser.add_argument("--resume", action="store_true", help="keep the earlier demo run folder (resume it)")
    args = parser.parse_args(argv)
    try:
        written = run_demo(Path(args.data), Path(args.outputs), Path(args.results), args.images,
                           fresh=not args.resume)
    except DemoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[demo] wrote {len(written)} files:")
    for line in file_listing(written):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
