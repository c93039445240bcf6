"""Run folders as inputs of a comparison: loading, comparability checks, seed groups.

A run folder (read through :class:`eval.folder.RunFolder`) holds ``metrics.json``, the per-image
records and ``run.json`` (:mod:`eval.run.identity`) with every setting that can change a
per-image result. Runs whose settings differ only in seeds (any setting whose name
ends in ``seed``, e.g. the folders of ``-m seed=0,1,2``) are one setting run several
times: their methods become one method with several seed runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

from eval.data.classes import dataset_classes
from eval.folder import FolderError, RunFolder
from eval.stats.analysis import ImageStats

__all__ = ["CompareError", "Run", "class_names", "comparable_ids", "flatten", "ids_sha256", "load_run", "method_groups",
           "method_settings", "seed_groups"]


class CompareError(FolderError):
    """Runs that cannot be compared (different datasets or images, missing files)."""


class Run(RunFolder):
    """One finished run folder as a comparison reads it (:class:`eval.folder.RunFolder`): its metrics.json,
    its evaluated records, its run.json settings (:attr:`settings`, None without one)."""

    error = CompareError

    @property
    def meta(self) -> dict[str, Any]:
        """The run's ``metrics.json`` content (:attr:`metrics`)."""
        return self.metrics

    def method_names(self) -> list[str]:
        """Methods in metrics.json order, then any others found in the records."""
        names = [m for m, v in (self.metrics.get("methods") or {}).items() if (v or {}).get("images", 1)]
        for record in self.records.values():
            names += [m for m in record["methods"] if m not in names]
        return names

    def stats(self, method: str, ids: Sequence[str]) -> ImageStats:
        """Per-image stats of ``method`` on ``ids`` (in that order)."""
        rows = []
        for image_id in ids:
            s = self.records[image_id]["methods"].get(method)
            if s is None:
                raise CompareError(f"{self.path}: image {image_id} has no stats for method {method!r} "
                                   "(the per-image records are incomplete; re-run the evaluation in this folder)")
            rows.append(s)
        try:
            return ImageStats.from_records(rows)
        except (KeyError, TypeError, ValueError) as exc:
            raise CompareError(f"{self.path}: malformed per-image stats of method {method!r}: {exc}") from exc

    def check_totals(self, method: str, stats: ImageStats) -> None:
        """Raise if ``metrics.json``'s sums of ``method`` differ from its per-image records."""
        saved = (self.metrics.get("methods") or {}).get(method)
        if not saved or "tp" not in saved:
            return
        for key, ours in (("tp", stats.tp.sum(0)), ("fp", stats.fp.sum(0)), ("fn", stats.fn.sum(0))):
            if list(map(int, saved[key])) != ours.tolist():
                raise CompareError(f"{self.path}: metrics.json {key} of {method!r} differs from the sums of the "
                                   "per-image records; re-create metrics.json from the records (re-run the "
                                   "evaluation in this folder, or eval.run.merge for shards)")
        if int(saved.get("valid", stats.valid.sum())) != int(stats.valid.sum()):
            raise CompareError(f"{self.path}: metrics.json valid of {method!r} differs from the per-image records")


def load_run(path: str | os.PathLike) -> Run:
    """Read a finished run folder (its run.json too); :class:`CompareError` naming what is missing."""
    run = Run.open(path)
    _ = run.settings  # a damaged run.json is refused now, not in the middle of a comparison
    return run


def ids_sha256(ids: Sequence[str]) -> str:
    """sha256 (hex) of an image set: its sorted ids joined by newlines (the same for any order of ``ids``)."""
    return hashlib.sha256("\n".join(sorted(map(str, ids))).encode("utf-8")).hexdigest()


def _first(ids: Sequence[str], count: int = 5) -> str:
    shown = ", ".join(ids[:count])
    return shown + (", ..." if len(ids) > count else "")


def comparable_ids(runs: list[Run], intersect: bool) -> list[str]:
    """The sorted image ids to compare on; raises :class:`CompareError` where runs differ."""
    datasets = {r.dataset for r in runs}
    if len(datasets) > 1:
        listing = ", ".join(f"{r.path} ({r.dataset})" for r in runs)
        raise CompareError(f"runs on different datasets cannot be compared: {listing}")
    common = set.intersection(*(set(r.ids) for r in runs))
    if not intersect:
        ref, problems = runs[0], []
        for run in runs[1:]:
            only_ref, only_run = sorted(set(ref.ids) - set(run.ids)), sorted(set(run.ids) - set(ref.ids))
            if only_ref or only_run:
                problems.append(f"{len(only_ref)} image(s) only in {ref.path} ({_first(only_ref)}) and "
                                f"{len(only_run)} only in {run.path} ({_first(only_run)})")
        if problems:
            raise CompareError("runs evaluated different images: " + "; ".join(problems)
                               + f". Use --intersect to compare on the {len(common)} common images.")
    if not common:
        raise CompareError("the runs have no evaluated image in common")
    return sorted(common)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"segmenter.tau": 0.5, ...}`` (leaves by dotted path)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def seed_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str] | None:
    """The settings in which ``a`` and ``b`` differ if all of them are seeds (names ending in ``seed``), else None."""
    fa, fb = flatten(a), flatten(b)
    differing = sorted(k for k in set(fa) | set(fb) if fa.get(k, "<missing>") != fb.get(k, "<missing>"))
    if all(k.rsplit(".", 1)[-1].endswith("seed") for k in differing):
        return differing
    return None


def seed_groups(runs: list[Run]) -> list[list[int]]:
    """Indices of runs grouped into seed replicates (a group of one is an ordinary run).

    A run joins a group when its run.json settings differ from the group's first run only
    in seeds, and in at least one seed from every member (a run with identical settings
    stays its own group: two folders of one setting are not two seeds).
    """
    groups: list[list[int]] = []
    for i, run in enumerate(runs):
        for group in groups:
            if run.settings is None or runs[group[0]].settings is None:
                continue
            if all(seed_differences(runs[j].settings, run.settings) for j in group):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def method_settings(settings: dict[str, Any] | None, method: str) -> dict[str, Any] | None:
    """What ``method``'s results depend on in a :attr:`Run.settings` (run.json's ``settings`` and
    ``data``): all of it but the other methods' nodes."""
    if settings is None:
        return None
    inner = settings.get("settings") or {}
    nodes = inner.get("methods") or {}
    mine = {k: v for k, v in nodes.items() if isinstance(v, dict) and v.get("name", k) == method}
    return {**settings, "settings": {**{k: v for k, v in inner.items() if k != "methods"}, "methods": mine}}


def _distinct_runs(group: list[Run], method: str) -> list[Run]:
    """The runs of a seed group that ran ``method`` under different settings (the first of each).

    ``-m seed=0,1,2`` changes only the methods that read ``seed`` (K-Means); a method whose own
    settings are the same in every folder (DiffSeg, DiffCut with its fixed noise seed) ran once
    per folder with identical settings: those are not seed replicates and count once.
    """
    kept: list[Run] = []
    for run in group:
        if run.settings is None or all(method_settings(k.settings, method) != method_settings(run.settings, method)
                                       for k in kept):
            kept.append(run)
    return kept


def method_groups(runs: list[Run], ids: Sequence[str],
                  notes: list[str] | None = None) -> dict[str, list[tuple[Run, str, ImageStats]]]:
    """Compared methods: key -> ``(run, method, stats)`` per seed run (one entry for an ordinary run).

    A method name found in several groups gets its (first) run folder's name as a suffix.
    Within a seed group a method keeps one run per distinct setting of its own
    (:func:`method_settings`); each method counted once that way is named in ``notes``.
    Stats are checked against each run's metrics.json when the run's images are all compared.
    """
    groups = [[runs[i] for i in g] for g in seed_groups(runs)]
    counts: dict[str, int] = {}
    for group in groups:
        for m in group[0].method_names():
            counts[m] = counts.get(m, 0) + 1
    out: dict[str, list[tuple[Run, str, ImageStats]]] = {}
    for number, group in enumerate(groups):
        for m in group[0].method_names():
            key = m if counts[m] == 1 else f"{m} [{group[0].path.name}]"
            if key in out:
                key = f"{m} [{group[0].path.name} #{number + 1}]"
            distinct = _distinct_runs(group, m)
            if len(distinct) < len(group) and notes is not None:
                notes.append(f"{key}: {len(distinct)} distinct setting(s) of its own in the {len(group)} seed folders "
                             f"({', '.join(r.path.name for r in group)}), so it counts {len(distinct)} run(s), "
                             f"not {len(group)} seeds")
            entries = []
            for run in distinct:
                stats = run.stats(m, ids)
                if len(run.ids) == len(ids):
                    run.check_totals(m, stats)
                entries.append((run, m, stats))
            out[key] = entries
    return out


def _recorded_class_names(meta: dict[str, Any]) -> tuple[str, ...] | None:
    """The class names a run's ``metrics.json`` records in its config (``config.dataset.class_names``), if any."""
    names = (((meta.get("config") or {}).get("dataset") or {}).get("class_names")
             if isinstance(meta, dict) else None)
    return tuple(str(n) for n in names) if isinstance(names, list) and names else None


def class_names(dataset: str, num_classes: int, *metas: dict[str, Any]) -> list[str]:
    """The names of the ``num_classes`` classes of runs on ``dataset``.

    ``metas``: the runs' ``metrics.json`` contents. The names their config recorded
    (``config.dataset.class_names``, e.g. of a ``dataset=folder`` run) come first, then the
    dataset's own (:func:`eval.data.classes.dataset_classes`), else ``class i``.
    :class:`CompareError` when the runs recorded different names (other labels under one name).
    """
    recorded = list(dict.fromkeys(n for n in map(_recorded_class_names, metas) if n is not None))
    if len(recorded) > 1:
        raise CompareError(f"the runs record different class names for dataset {dataset!r}: "
                           + " vs ".join(repr(list(n)) for n in recorded))
    for names in (*recorded, dataset_classes(dataset)):
        if names and len(names) == num_classes:
            return list(names)
    return [f"class {i}" for i in range(num_classes)]
