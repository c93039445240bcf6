"""Every command shown in a README is run by a named test or by ``make demo``, and the README stays short.

Each shell command of a fenced ``bash`` / ``sh`` / ``shell`` / ``console`` block of every README (``README.md``,
``conf/README.md``, ``eval/README.md``, ``results/README.md``, ``diffseg/MMDIT.md`` and any other ``README.md``
in the tree) must have an entry in :data:`COMMANDS` naming the test functions (``tests/<file>.py::<test>``,
checked with ``ast``) or the Makefile target (``make demo``) that run it. A README command without an entry,
an entry naming a test or target that does not exist, and an entry no README shows any more all fail.
Commands that need real weights or datasets map to the tests of their offline refusal; some of those
refusals, and commands no older test ran, are run here on synthetic data and the tiny models.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAIN_README = REPO / "README.md"
NAMED_DOCS = ["README.md", "conf/README.md", "eval/README.md", "results/README.md", "diffseg/MMDIT.md",
              "diffseg/REFERENCE.md"]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
# Folders that hold no README of the project: data roots, run outputs, caches, environments.
SKIP_DIRS = {"outputs", "multirun", "node_modules", "__pycache__", "build", "dist", "site-packages"}
MAX_README_LINES = 300
MAX_LINE_CHARS = 200  # outside tables

SEG = "tests/test_segment_cli.py"
RUN_REFUSES_OFFLINE = "tests/test_readme_commands.py::test_readme_runs_needing_weights_refuse_offline_naming_them"
COMPOSES = "tests/test_configs.py::test_every_experiment_composes_and_builds"
MISSING_DATA = "tests/test_runner.py::test_missing_dataset_names_path_and_make_target"
MAKE_DRY = "tests/test_readme_commands.py::test_make_targets_run_what_the_readmes_say"

# README command (comments dropped, continuation lines joined, blanks collapsed) -> what runs it.
COMMANDS: dict[str, tuple[str, ...]] = {
    # README.md: the two commands and the quick start
    "make reproduce-coco": (MAKE_DRY,
                            "tests/test_user_faults.py::test_offline_prepare_coco_names_every_file_quickly_and_makes_no_folder",
                            "tests/test_download.py::test_prepare_coco_without_network_exits_2",
                            "tests/test_run_identity.py::test_identity_cli_gives_one_folder_per_setting"),
    "make test": (MAKE_DRY, "tests/test_first_contact.py::test_every_phony_make_target_has_a_rule"),
    "make demo": ("make demo", "tests/test_demo_cli.py::test_the_demo_run_shows_progress_per_image_and_holds_the_sweep",
                  "tests/test_demo_cli.py::test_demo_main_lists_what_it_wrote"),
    "python -m diffseg.segment photo.jpg --out masks --tiny": (
        f"{SEG}::test_segment_cli_tiny_is_the_demos_sharpened_model_with_several_segments",
        f"{SEG}::test_segment_cli_writes_masks_and_overlays"),
    "python -m eval.run dataset=folder dataset.root=DIR dataset.num_classes=N": (
        "tests/test_folder_dataset.py::test_every_method_runs_on_a_folder_and_its_totals_are_the_labels",
        "tests/test_folder_dataset.py::test_refusals_are_one_line_naming_the_layout_files_and_values"),
    # conf/README.md: sweeps
    "python -m eval.run -m experiment=coco_stuff27 methods.diffseg.segmenter.kl_threshold=0.7,0.9,1.1 cache=memory "
    "'ablation={param: kl_threshold, value: ${methods.diffseg.segmenter.kl_threshold}}'": (
        "tests/test_runner.py::test_in_run_ablation_and_cache",
        "tests/test_user_faults.py::test_sweep_rows_come_from_each_methods_recorded_setting_not_the_tag",
        "tests/test_cache.py::test_memory_entries_of_other_content_are_not_shared"),
    "python -m eval.run -m experiment=ablation_timestep": (
        COMPOSES, "tests/test_tables_sweeps.py::test_timestep_sweep_keeps_diffseg_beside_diffcut", MISSING_DATA),
    "python -m eval.tables multirun/ outputs/ --out results/": (
        "tests/test_report_cli.py::test_tables_missing_folder_exits_2_and_writes_nothing",
        "tests/test_tables.py::test_cli"),
    # conf/README.md: backbones
    "python -m eval.run -m experiment=ablation_backbone": (
        "tests/test_backbones_families.py::test_ablation_backbone_sweeps_every_backbone",
        "tests/test_tables_sweeps.py::test_backbone_sweep_rows_are_model_ids"),
    "python -m eval.run experiment=coco_stuff27 model=sdxl model.name=/path/to/local/sdxl-folder": (
        "tests/test_backbones_families.py::test_runner_end_to_end_on_a_tiny_sdxl_folder",),
    "python -m eval.run experiment=coco_stuff27 model=sdxl model.name=/ckpt/sd_xl_base_1.0.safetensors "
    "model.backbone.config=stabilityai/stable-diffusion-xl-base-1.0": (
        "tests/test_backbones_families.py::test_single_file_loads_and_gives_the_folders_maps",
        "tests/test_backbones_families.py::test_single_file_needs_its_configs_offline"),
    "python -m eval.run experiment=coco_stuff27 model=sdxl model.dtype=float16 model.backbone.variant=fp16 "
    "model.backbone.vae=madebyollin/sdxl-vae-fp16-fix": (
        RUN_REFUSES_OFFLINE, "tests/test_backbones_families.py::test_sdxl_vae_overflow_in_float16_is_upcast_or_raises"),
    # conf/README.md: DiffCut
    "python -m eval.run experiment=coco_stuff27_diffcut": (
        RUN_REFUSES_OFFLINE, "tests/test_diffcut_runner.py::test_diffcut_experiments_compose"),
    "python -m eval.run experiment=coco_stuff27 +method@methods.diffcut=diffcut": (
        RUN_REFUSES_OFFLINE, "tests/test_diffcut_runner.py::test_diffcut_row_equals_a_direct_computation"),
    "python -m eval.run experiment=coco_stuff27 +method@methods.diffcut=diffcut "
    "methods.diffcut.features.timestep=null": (
        RUN_REFUSES_OFFLINE, "tests/test_diffcut_runner.py::test_shared_pass_feeds_both_methods_with_one_unet_call"),
    # conf/README.md: MM-DiT and Seg4Diff
    "python -m eval.run experiment=coco_stuff27_seg4diff": (
        "tests/test_seg4diff_protocol.py::test_offline_refusal_names_the_weights",
        "tests/test_seg4diff_protocol.py::test_coco_run_records_equal_seg4diff_on_the_captured_maps"),
    "python -m eval.run experiment=coco_stuff27_seg4diff model=sd35_medium": (RUN_REFUSES_OFFLINE,),
    "python -m eval.run experiment=cityscapes_seg4diff": (
        "tests/test_seg4diff_protocol.py::test_offline_refusal_names_the_weights",
        "tests/test_seg4diff_protocol.py::test_cityscapes_release_and_aligned_runs_differ_as_the_crop_says"),
    "python -m eval.run experiment=cityscapes_seg4diff protocol=seg4diff_aligned": (
        "tests/test_seg4diff_protocol.py::test_cityscapes_release_and_aligned_runs_differ_as_the_crop_says",),
    "python -m eval.run experiment=demo_mmdit": ("tests/test_readme_commands.py::test_demo_mmdit_runs_offline",),
    # conf/README.md: protocols
    "python -m eval.run experiment=coco_stuff27_diffcut protocol=diffcut": (
        RUN_REFUSES_OFFLINE, "tests/test_data_benchmarks.py::test_every_method_under_diffcuts_protocol"),
    "python -m eval.run experiment=voc21 protocol=diffcut save_masks=png": (
        "tests/test_protocols.py::test_every_method_of_a_diffcut_run_is_scored_under_it",
        "tests/test_protocols.py::test_run_folder_refuses_the_other_protocol"),
    "python -m eval.rescore RUN_DIR --protocol diffcut --out RUN_DIR-diffcut": (
        "tests/test_protocols.py::test_rescore_equals_scoring_the_saved_masks",
        "tests/test_first_contact.py::test_rescore_shows_progress_per_image"),
    "python -m eval.tables RUN_DIR RUN_DIR-diffcut --out results/voc21": (
        "tests/test_tables.py::test_protocol_sensitivity_table",),
    # eval/README.md: comparisons, seeds, power, calibration
    "python -m eval.compare outputs/coco_stuff27/<fingerprint> --out results/coco_stuff27/compare": (
        "tests/test_compare.py::test_point_estimate_equals_metrics_json",
        "tests/test_compare.py::test_different_image_sets_refused_and_intersect"),
    "python -m eval.run -m experiment=coco_stuff27 seed=0,1,2": (
        "tests/test_stats.py::test_kmeans_c_seed_spread_over_three_seeds_is_reported",
        "tests/test_stats.py::test_a_method_the_seed_does_not_reach_is_not_counted_as_seed_runs"),
    "python -c \"import numpy as np; from eval.stats import calibration as sp; "
    "from eval.stats.analysis import analyse; "
    "d = sp.draw(np.random.default_rng(0), 1, 500, [sp.method(0), sp.method(1)])[0]; "
    "print(analyse({'A': d[0], 'B': d[1]}, permutations=2000)['pairs']['A vs B']['power'])\"": (
        "tests/test_readme_commands.py::test_the_power_command_prints_the_figures_the_readme_quotes",),
    "python -m eval.stats.calibration": (
        "tests/test_stats.py::test_interval_coverage_300_samples",
        "tests/test_stats.py::test_paired_test_level_300_samples",
        "tests/test_readme_commands.py::test_the_calibration_command_prints_both_figures"),
    "python -m eval.stats.calibration --only level --images 50 --samples 600 --seed 1": (
        "tests/test_stats.py::test_paired_test_level_300_samples",
        "tests/test_readme_commands.py::test_the_calibration_command_prints_both_figures"),
    # eval/README.md: the explorer
    "python -m eval.explore --model tiny --image cat.jpg [--image dog.png ...] [--port P] [--no-browser]": (
        "tests/test_explore_browser.py::test_one_image_slider_and_click",
        "tests/test_explore.py::test_resegmenting_from_kept_attention_equals_diffseg",
        "tests/test_explore.py::test_cli_help_names_the_interface"),
    "python -m eval.explore --model CompVis/stable-diffusion-v1-4 --image cat.jpg": (
        "tests/test_explore.py::test_cli_refuses_clearly",
        "tests/test_offline_loading.py::test_a_missing_hub_model_fails_at_once_naming_it_when_the_hub_is_down"),
    "python -m eval.explore RUN_DIR [--port P] [--no-browser]": (
        "tests/test_explore_browser.py::test_run_sort_and_open_image",
        "tests/test_explore.py::test_cli_port_in_use_exits_2_with_one_line"),
    "python -m eval.explore RUN_A RUN_B": (
        "tests/test_explore_browser.py::test_two_runs_without_common_methods_open_side_by_side",
        "tests/test_explore.py::test_two_runs_differences_sorted"),
    "make explore": (MAKE_DRY, "tests/test_explore_browser.py::test_run_sort_and_open_image"),
    # results/README.md: speed
    "make bench": (MAKE_DRY, "tests/test_bench.py::test_make_bench_writes_no_committed_file",
                   "tests/test_bench.py::test_bench_runs_every_stage_and_the_precision_check"),
    "python -m eval.bench --out results/bench/bench_cpu": (
        "tests/test_bench.py::test_out_does_not_drop_the_official_segmentor_row_unless_forced",),
    "python -m eval.bench --precision-only --images 4": (
        "tests/test_bench.py::test_precision_only_writes_its_own_new_file",),
    "DIFFSEG_OFFICIAL_SEGMENTOR=/path/to/segmentor.py python -m eval.bench --postprocessing-only "
    "--out results/bench/bench_cpu_postprocessing": (
        "tests/test_bench.py::test_postprocessing_only_honours_out_and_leaves_committed_results_alone",),
    "python -m eval.bench.diffcut": (
        "tests/test_readme_commands.py::test_the_diffcut_bench_runs_and_finds_identical_masks",),
    # At SD 1.x sizes it takes minutes on 2 cores: `make bench` runs it; the test checks what it asserts.
    "python -m eval.bench.explore": (
        MAKE_DRY, "tests/test_explore.py::test_resegmenting_from_kept_attention_equals_diffseg"),
    "python -m eval.bench.mmdit": (
        MAKE_DRY, "tests/test_bench_mmdit.py::test_capture_overhead_rows",
        "tests/test_bench_mmdit.py::test_peak_memory_rows"),
    # datasets/README.md
    "make data-coco": ("tests/test_download.py::test_prepare_coco_end_to_end",
                       "tests/test_user_faults.py::test_offline_prepare_coco_names_every_file_quickly_and_makes_no_folder"),
    "make data-coco COCO_ROOT=/data/coco_stuff27": (
        MAKE_DRY, "tests/test_download.py::test_prepare_coco_end_to_end"),
    "make data-cityscapes": ("tests/test_download.py::test_prepare_cityscapes_from_zips",
                             "tests/test_download.py::test_prepare_cityscapes_missing_zips"),
    "make data-voc": ("tests/test_dataset_registry.py::test_make_data_target_of_a_command_runs_its_preparation",
                      "tests/test_data_benchmarks.py::test_prepare_voc_from_the_tar"),
    "make data-context": ("tests/test_dataset_registry.py::test_make_data_target_of_a_command_runs_its_preparation",
                          "tests/test_data_benchmarks.py::test_prepare_context_builds_labels"),
    "make data-coco-object": ("tests/test_data_benchmarks.py::test_prepare_coco_object_reports_agreement",),
    "make data-ade20k": ("tests/test_dataset_registry.py::test_make_data_target_of_a_command_runs_its_preparation",
                         "tests/test_data_benchmarks.py::test_prepare_ade20k_from_the_zip"),
    "make data-voc ROOT=/data/VOC2012 PREPARE_ARGS=--quiet": (
        MAKE_DRY, "tests/test_dataset_registry.py::test_make_data_target_of_a_command_runs_its_preparation"),
}


# --------------------------------------------------------------------------------------------- extraction


def readme_files() -> list[Path]:
    """The named docs and every other ``README.md`` of the project (not data roots, outputs or environments)."""
    found = {REPO / name for name in NAMED_DOCS if (REPO / name).is_file()}
    for folder, dirs, files in os.walk(REPO):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not d.endswith(".egg-info") and here.name != "datasets")
        if "README.md" in files:
            found.add(here / "README.md")
    return sorted(found)


def _strip_comment(line: str) -> str:
    """``line`` without a shell comment: a ``#`` starting a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(text: str) -> list[tuple[int, str]]:
    """``(line number, command)`` of every command in a fenced shell block of ``text``."""
    commands, lang, pending, start = [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)", line)
        if fence:
            lang = None if lang is not None else fence.group(1).lower()
            continue
        if lang not in SHELL_LANGS:
            continue
        if not pending:
            start = number
            if lang == "console":
                if not line.lstrip().startswith("$ "):
                    continue  # output, not a command
                line = line.lstrip()[2:]
        body = _strip_comment(line).rstrip()
        if body.endswith("\\"):
            pending += body[:-1] + " "
            continue
        command = " ".join((pending + body).split())
        pending = ""
        if command:
            commands.append((start, command))
    return commands


def readme_commands() -> dict[str, list[str]]:
    """Every README command -> where it is shown (``path:line``)."""
    shown: dict[str, list[str]] = {}
    for path in readme_files():
        for number, command in shell_commands(path.read_text(encoding="utf-8")):
            shown.setdefault(command, []).append(f"{path.relative_to(REPO)}:{number}")
    return shown


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        names |= {f"{cls.name}::{n.name}" for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return names


def _make_rules() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.%-]+):(?!=)", text, re.MULTILINE))


# ------------------------------------------------------------------------------------------ the mapping


def test_extraction_joins_continuations_drops_comments_and_console_output():
    text = ("x\n```bash\n# only a comment\nmake demo   # the demo\npython -m a b=1 \\\n  'c={d: 2}'  # tail\n```\n"
            "```console\n$ make test\nsome output # not a command\n```\n```python\nprint('no')\n```\n"
            "```\nnot a shell block\n```\n")
    assert shell_commands(text) == [(4, "make demo"), (5, "python -m a b=1 'c={d: 2}'"), (9, "make test")]
    assert _strip_comment("echo '# kept' x # gone") == "echo '# kept' x "


def unmapped_commands(shown: dict[str, list[str]], mapping: dict[str, tuple[str, ...]]) -> list[str]:
    """``path:line: command`` of every shown command without an entry in ``mapping``."""
    return [f"{', '.join(where)}: {command}" for command, where in shown.items() if command not in mapping]


def missing_references(mapping: dict[str, tuple[str, ...]]) -> list[str]:
    """Every reference of ``mapping`` to a test function (``ast``) or Makefile rule that does not exist."""
    rules, missing, functions = _make_rules(), [], {}
    for command, refs in mapping.items():
        if not refs:
            missing.append(f"nothing runs {command!r}")
        for ref in refs:
            if ref.startswith("make "):
                if ref.split()[1] not in rules:
                    missing.append(f"{ref} (no Makefile rule) for {command!r}")
                continue
            file, _, name = ref.partition("::")
            path = REPO / file
            if not path.is_file():
                missing.append(f"{ref} (no file) for {command!r}")
                continue
            functions.setdefault(file, _test_functions(path))
            if name not in functions[file] or not name.rpartition("::")[2].startswith("test_"):
                missing.append(f"{ref} (no such test function) for {command!r}")
    return missing


def test_every_readme_command_is_run_by_a_named_test_or_make_demo():
    shown = readme_commands()
    assert len(shown) >= 30, sorted(shown)  # the extraction found the READMEs' commands
    unmapped = unmapped_commands(shown, COMMANDS)
    assert not unmapped, "README commands no test runs (add a test, map it in COMMANDS):\n" + "\n".join(unmapped)


def test_every_mapping_is_still_shown_in_a_readme():
    stale = sorted(set(COMMANDS) - set(readme_commands()))
    assert not stale, f"COMMANDS maps commands no README shows any more: {stale}"


def test_every_mapped_test_function_and_make_target_exists():
    missing = missing_references(COMMANDS)
    assert not missing, "\n".join(missing)


def test_the_checks_catch_an_unmapped_command_a_missing_test_and_a_missing_target():
    shown = {"make demo": ["README.md:3"], "python -m eval.new_tool": ["eval/README.md:9"]}
    assert unmapped_commands(shown, COMMANDS) == ["eval/README.md:9: python -m eval.new_tool"]
    bad = {"a": ("tests/test_readme_commands.py::test_no_such_thing",), "b": ("make no-such-target",),
           "c": ("tests/test_no_such_file.py::test_x",), "d": ("tests/test_readme_commands.py::readme_files",),
           "e": (), "f": ("make demo", "tests/test_readme_commands.py::test_every_mapping_is_still_shown_in_a_readme")}
    assert [line.split(" (")[0] for line in missing_references(bad)] == [
        "tests/test_readme_commands.py::test_no_such_thing", "make no-such-target",
        "tests/test_no_such_file.py::test_x", "tests/test_readme_commands.py::readme_files", "nothing runs 'e'"]


# ------------------------------------------------------------------------------------------ README size


def test_readme_is_at_most_300_lines_with_no_long_lines_outside_tables():
    lines = MAIN_README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    for name in ["README.md", "conf/README.md", "eval/README.md", "results/README.md"]:
        long = [(i, len(line)) for i, line in enumerate((REPO / name).read_text(encoding="utf-8").splitlines(), 1)
                if len(line) > MAX_LINE_CHARS and not line.lstrip().startswith("|")]
        assert not long, f"{name}: lines over {MAX_LINE_CHARS} characters outside tables: {long}"


def test_readme_links_to_each_detail_readme_and_they_exist():
    text = MAIN_README.read_text(encoding="utf-8")
    for name in ["conf/README.md", "eval/README.md", "results/README.md", "datasets/README.md", "diffseg/MMDIT.md"]:
        assert f"]({name})" in text and (REPO / name).is_file(), name
    assert "Old run folders" in text and "eval.rescore" in text


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors of the headings of ``path`` (lower case, punctuation dropped, spaces to dashes)."""
    headings = re.findall(r"^#+\s+(.*)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_of_the_readmes_resolves():
    broken = []
    for name in ["README.md", "conf/README.md", "eval/README.md", "results/README.md"]:
        doc = REPO / name
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists() or (anchor and anchor not in _anchors(path)):
                broken.append(f"{name}: {target}")
    assert not broken, broken


def test_conf_readme_names_every_config_option():
    text = (REPO / "conf" / "README.md").read_text(encoding="utf-8")
    groups = ["dataset", "model", "method", "methods", "aggregation", "cache", "protocol", "experiment",
              "hydra/launcher"]
    missing = [f"{group}/{path.stem}" for group in groups for path in sorted((REPO / "conf" / group).glob("*.yaml"))
               if f"`{path.stem}`" not in text]
    assert not missing, f"conf/README.md does not name these config options: {missing}"


# ------------------------------------------------------------------------- commands no other test ran


def _make_dry_run(target: str, *variables: str) -> list[str]:
    # Under `make test` the outer make's MAKELEVEL / MAKEFLAGS would make this one print "Entering directory".
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", target, "STAMP=", "PY=python", *variables],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


def _in_order(lines: list[str], wanted: list[str]) -> bool:
    text, at = "\n".join(lines), 0
    for part in wanted:
        at = text.find(part, at)
        if at < 0:
            return False
    return True


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_targets_run_what_the_readmes_say():
    """The README's descriptions of the make targets, from the commands make would run (``make -n``)."""
    coco = _make_dry_run("reproduce-coco")
    assert _in_order(coco, ["datasets/prepare.py coco --root datasets/coco_stuff27 --downloads datasets/downloads",
                            "-m eval.run.identity experiment=coco_stuff27", "--prefix outputs/coco_stuff27",
                            "-m eval.run experiment=coco_stuff27 dataset.root=datasets/coco_stuff27 hydra.run.dir=",
                            "-m eval.compare $run_dir --out results/coco_stuff27/compare",
                            "-m eval.tables $run_dir --out results/coco_stuff27"]), coco
    assert _in_order(_make_dry_run("test", "TEST_SEED=7"),
                     ["python -m ruff check .", "python -m pytest -q -p randomly --randomly-seed=7"])
    assert _in_order(_make_dry_run("bench"),
                     ["python -m eval.bench", "python -m eval.bench.diffcut", "python -m eval.bench.mmdit",
                      "python -m eval.bench.explore"])
    assert _in_order(_make_dry_run("explore", "EXPLORE_STAMP="),
                     ["python -m eval.demo", "python -m eval.explore outputs/demo/coco_stuff27"])
    assert _make_dry_run("demo") == ["python -m eval.demo"]
    # datasets/README.md: the roots move with COCO_ROOT= / ROOT=, a command's options pass with PREPARE_ARGS=
    assert _make_dry_run("data-coco", "COCO_ROOT=/data/coco_stuff27") == [
        "python datasets/prepare.py coco --root /data/coco_stuff27 --downloads datasets/downloads --subset curated"]
    assert _make_dry_run("data-voc", "ROOT=/data/VOC2012", "PREPARE_ARGS=--quiet") == [
        "python datasets/prepare.py voc --root /data/VOC2012 --downloads datasets/downloads --quiet"]


def _readme_command(doc: str, starts: str) -> str:
    found = [c for _, c in shell_commands((REPO / doc).read_text(encoding="utf-8")) if c.startswith(starts)]
    assert len(found) == 1, found
    return found[0]


def _power(command: str, images: int) -> dict:
    argv = shlex.split(command.replace(", 1, 500, [", f", 1, {images}, ["))
    assert argv[:2] == ["python", "-c"]
    out = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out.strip())


def test_the_power_command_prints_the_figures_the_readme_quotes():
    """eval/README.md: 0.29 points and 42 images for 1 mIoU at 500 images; 0.12 and 32 at 2000."""
    command = _readme_command("eval/README.md", "python -c ")
    at_500, at_2000 = _power(command, 500)["miou"], _power(command, 2000)["miou"]
    assert (round(at_500["mdd"], 2), at_500["images_for_1_point"]) == (0.29, 42)
    assert (round(at_2000["mdd"], 2), at_2000["images_for_1_point"]) == (0.12, 32)
    text = (REPO / "eval" / "README.md").read_text(encoding="utf-8")
    assert "0.29 points, i.e. 42 images for 1 mIoU (2000 images: 0.12, 32 images)" in " ".join(text.split())


def test_the_calibration_command_prints_both_figures(capsys):
    """``python -m eval.stats.calibration`` with the README's options, on a few samples (the full sizes are the
    ``slow`` tests of tests/test_stats.py)."""
    from eval.stats.calibration import main

    argv = shlex.split(_readme_command("eval/README.md", "python -m eval.stats.calibration --only"))[3:]
    assert argv == ["--only", "level", "--images", "50", "--samples", "600", "--seed", "1"]
    assert main([*argv[:-4], "--samples", "4", "--resamples", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "4 samples (seed 1), 30 resamples" in out
    assert re.search(r"rejections equal-iou n=50: studentised mIoU \d\.\d{3}", out)
    assert re.search(r"rejections exchangeable n=50: studentised mIoU \d\.\d{3}", out) and "coverage" not in out
    assert main(["--only", "coverage", "--images", "50", "--samples", "3", "--resamples", "30"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"coverage moderate n=50: mIoU \d\.\d{3}", out) and "rejections" not in out


def test_the_diffcut_bench_runs_and_finds_identical_masks(tmp_path, capsys):
    """``python -m eval.bench.diffcut`` on one small feature map: both paths, the ratio, identical masks."""
    from eval.bench.diffcut import main

    out = tmp_path / "diffcut.json"
    assert main(["--images", "1", "--side", "8", "--clusters", "2", "--channels", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["all_identical"] is True and len(result["rows"]) == 1
    assert result["rows"][0]["clusters_fast"] == result["rows"][0]["clusters_naive"] >= 2
    assert result["speedup"] == pytest.approx(result["rows"][0]["naive_s"] / result["rows"][0]["fast_s"])
    assert "masks identical on all images: yes" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # never overwrites
        main(["--images", "1", "--side", "8", "--clusters", "2", "--channels", "16", "--out", str(out)])


FAST = ["num_workers=0", "progress=false", "device=cpu", "grid_images=0", "dataset.limit=1"]


def _overrides(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "eval.run"] and "-m" not in argv[3:], command
    return argv[3:]


@pytest.mark.parametrize("command", sorted(c for c, refs in COMMANDS.items() if RUN_REFUSES_OFFLINE in refs))
def test_readme_runs_needing_weights_refuse_offline_naming_them(command, tmp_path, monkeypatch, capsys):
    """The README's ``python -m eval.run ...`` on a synthetic root with no weights and the hub offline: exit 2
    with one line naming the model, nothing evaluated."""
    from hydra_compose import compose_eval

    from eval.data.synthetic import write_synthetic_coco_stuff
    from eval.run import run_cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    root, out = tmp_path / "coco", tmp_path / "out"
    write_synthetic_coco_stuff(root, num_images=1, seed=0)
    (root / "val2017_all.txt").write_text((root / "Coco164kFull_Stuff_Coarse_7.txt").read_text())  # subset=all
    cfg = compose_eval([*_overrides(command), f"dataset.root={root}", f"paths.output_dir={out}", *FAST])
    assert run_cli(cfg) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and cfg.model.name in err[0] and "offline" in err[0], err
    assert not (out / "metrics.json").exists()


def test_demo_mmdit_runs_offline(tmp_path):
    """``python -m eval.run experiment=demo_mmdit``: every method of the MM-DiT path on the demo's kind of data,
    tiny random SD3, scored under protocol=seg4diff and marked as random weights on synthetic data."""
    from hydra_compose import compose_eval

    from eval.data.synthetic import write_synthetic_coco_stuff
    from eval.run import evaluate

    root = tmp_path / "demo_coco_stuff27"
    write_synthetic_coco_stuff(root, num_images=2, seed=3)
    overrides = _overrides(_readme_command("conf/README.md", "python -m eval.run experiment=demo_mmdit"))
    result = evaluate(compose_eval([*overrides, f"dataset.root={root}", f"paths.output_dir={tmp_path / 'run'}",
                                    "progress=false", "grid_images=0"]))
    assert result["run"]["protocol"] == "seg4diff"
    assert list(result["methods"]) == ["Seg4Diff", "DiffSeg", "DiffSeg-fp32", "K-Means-C", "K-Means-S"]
    assert all(m["images"] == 2 and m["valid"] > 0 and 0 <= m["miou"] <= 100 for m in result["methods"].values())
    assert result["provenance"]["random_weights"] and result["provenance"]["synthetic_data"]
