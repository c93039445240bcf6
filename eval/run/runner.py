"""The evaluation runner: ``python -m eval.run experiment=coco_stuff27``.

:func:`evaluate` is a plain function of a run spec (:mod:`eval.spec`; tests call it
directly); :func:`main` is the thin Hydra entry point, which builds the spec once. Data flow per batch:

    loader (workers: decode + pre-process) -> backbone (one UNet pass, attention
    captured; or the attention cache) -> aggregation, once per distinct weight
    setting -> every configured method -> the sinks (:mod:`eval.run.sinks`: the metric's
    per-image matching stats, masks, samples, label checks, records appended to
    ``per_image.jsonl``) -> totals -> ``metrics.json`` (atomic).

A run started again in the same output folder skips the images already done
(skipped images are tried again); totals are recomputed from the records, so they
equal an uninterrupted run's. The folder belongs to one set of settings
(:mod:`eval.run.identity`): other settings are refused before any work. The numbers in
``metrics.json`` rest on the images the invocation selected (``dataset.limit``,
``dataset.shard``) and carry their provenance (:mod:`eval.run.provenance`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.handlers
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from tqdm.auto import tqdm

from diffseg.backbone import BackboneLoadError
from diffseg.devices import resolve_device
from diffseg.preprocess import LabelFormatError
from eval.atomic import write_text_atomic
from eval.config_path import config_dir
from eval.data.loader import Batch, DuplicateIdsError, build_loader
from eval.folder import layout
from eval.instantiate import build_dataset
from eval.metrics import HungarianSegmentationMetric
from eval.metrics.protocols import Protocol, ProtocolError
from eval.run.build import build_protocol
from eval.run.distributed import Dist, export_slurm_env, process_group, split
from eval.run.identity import (
    IDENTITY_FILE,
    CodeVersionError,
    ContentMismatchError,
    RunIdentity,
    RunMismatchError,
    check_code_version,
    check_contents,
    check_run_folder,
    code_id,
    file_digests,
    identity_of,
    read_run_json,
    versions,
)
from eval.run.interrupt import GracefulStop, RunInterrupted
from eval.run.joint_passes import check_backbone, make_passes
from eval.run.mask_files import MaskWriter, prune_mask_parts
from eval.run.methods import build_methods
from eval.run.passes import BackbonePasses
from eval.run.provenance import banner, build_provenance, tally
from eval.run.qualitative import QualitativeSamples
from eval.run.records import METRICS_FILE, RunRecords, load_run_records, write_metrics
from eval.run.run_folder import FolderLock, FolderLockedError, RunFolderError, remove_if_new_and_empty, storage_error
from eval.run.sinks import (
    MaskSink,
    MetricSink,
    Predictions,
    ProgressSink,
    RecordsSink,
    SamplesSink,
    Sink,
    UnknownLabelSink,
    inference_on_dataset,
)
from eval.run.unknown_labels import UnknownLabelsError
from eval.spec import RunSpec, SettingError, build_spec

__all__ = ["NoImagesError", "evaluate", "main", "run_cli", "versions"]

log = logging.getLogger(__name__)


class NoImagesError(RuntimeError):
    """A run that would report numbers resting on no image (or on too few, see ``max_skipped``)."""


def _run_info(spec: RunSpec, protocol: Protocol) -> dict[str, Any]:
    label = {"protocol_label": protocol.describe()} if protocol.describe() != protocol.name else {}  # tables show it
    return {
        "name": spec.run_name,
        "dataset": spec.data.name,
        "model": spec.model.name,
        "protocol": protocol.name,
        **label,
        "subset": spec.data.subset,
        "ablation": spec.ablation,
        "shard": spec.data.shard,
        "limit": spec.data.limit,
    }


def _random_weights(spec: RunSpec, source: BackbonePasses) -> bool:
    """True unless the backbone's weights came from a checkpoint.

    Asked of the built backbone; when every map came from the cache (no backbone built),
    decided from the configured loader (only ``from_pretrained`` loads real weights).
    """
    if source.backbone is not None:
        return not bool(getattr(source.backbone, "pretrained", False))
    return spec.model.random_weights


def _check_records(records: dict[str, dict[str, Any]], fingerprint: str, out_dir: Path) -> None:
    stale = sorted(i for i, r in records.items() if r.get("fp") != fingerprint)
    if stale:
        raise RunMismatchError(
            f"{out_dir}: {len(stale)} per-image record(s) (first: {stale[0]}) were made under another "
            f"fingerprint than the folder's {fingerprint}; results of different settings are never mixed: "
            "start a new folder.")


class _RunLog:
    """The run's log in ``<out_dir>/run.log``, and no log file for a refused run.

    Until :meth:`start` (called once the folder is claimed) the log lines are kept in memory;
    :meth:`start` writes them to ``run.log`` and the rest follows as it happens. A run refused
    before that writes no log file (unless Hydra already writes to ``run.log`` itself).
    """

    def __init__(self, active: bool):
        self.active = active
        self.buffer: logging.handlers.MemoryHandler | None = None
        self.handler: logging.Handler | None = None

    def __enter__(self) -> _RunLog:
        if self.active:
            root = logging.getLogger()
            self.buffer = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1,
                                                         flushOnClose=False)
            root.addHandler(self.buffer)
            if root.level > logging.INFO or root.level == logging.NOTSET:
                root.setLevel(logging.INFO)
        return self

    def start(self, out_dir: Path) -> None:
        """Write the lines kept so far to ``out_dir/run.log`` and log there from now on."""
        if self.buffer is None:
            return
        root = logging.getLogger()
        path = (out_dir / layout.LOG_FILE).resolve()
        if not any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in root.handlers):
            self.handler = logging.FileHandler(path, encoding="utf-8")
            self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
            self.buffer.setTarget(self.handler)
            self.buffer.flush()
            root.addHandler(self.handler)
        root.removeHandler(self.buffer)
        self.buffer.close()
        self.buffer = None

    def __exit__(self, *exc_info: object) -> None:
        root = logging.getLogger()
        if self.buffer is not None:  # refused before the folder was claimed: the kept lines are dropped
            root.removeHandler(self.buffer)
            self.buffer.close()
        if self.handler is not None:
            root.removeHandler(self.handler)
            self.handler.close()


@dataclass
class _Plan:
    """What a run is, built before anything is written: its methods, data, protocol and identity."""

    methods: list[Any]
    dataset: Any
    protocol: Protocol
    identity: RunIdentity
    selected: list[str]


def evaluate(spec: RunSpec | Any, hydra_config: Any = None) -> dict[str, Any]:
    """Run every method of ``spec`` on its dataset and write the run folder.

    ``spec``: a :class:`~eval.spec.RunSpec` (a composed config is made one by
    :func:`eval.spec.build_spec`, with ``hydra_config``, Hydra's own config of a command-line run).

    Writes ``run.json`` (the run's identity, :mod:`eval.run.identity`), ``per_image.jsonl``
    (appended after each batch; ``per_image.rank<k>.jsonl`` per rank under torchrun),
    ``metrics.json`` (with its provenance record, :mod:`eval.run.provenance`), ``run.log``,
    optionally ``masks/<method>/<id>.png``, ``qualitative.png``, and ``.hydra/`` (the composed
    config, Hydra's config and the overrides, of a command-line run: :attr:`RunSpec.hydra_files`). Under ``torchrun``
    each rank evaluates its share of the images (:mod:`eval.run.distributed`) and rank 0
    alone writes ``run.json``, ``metrics.json``, the log and the grid.

    Everything that can refuse the run is checked before anything is written: the settings,
    the data, and an existing folder's identity, records and files (read only). A refused run
    leaves no folder behind, and an existing folder exactly as it was (the checks are repeated
    under the folder's lock, where a refusal can only come from another run writing meanwhile).

    Raises:
        SettingError: a setting is outside its allowed range (:mod:`eval.spec.build`; before anything is written).
        RunMismatchError: the folder holds results of other settings, or of images outside this
            run's selection (before anything is written).
        NoImagesError: no image could be evaluated, or more than ``max_skipped`` were skipped.
        RunInterrupted: SIGTERM/SIGINT; the batch in flight was finished and recorded.

    Returns:
        The ``metrics.json`` content (on every rank).
    """
    if not isinstance(spec, RunSpec):
        spec = build_spec(spec, hydra_config)
    if spec.options.output_dir is None:
        raise SettingError("paths.output_dir: expected the run folder, got None")
    export_slurm_env()
    device = resolve_device(spec.options.device)
    with process_group(device) as ctx:  # destroyed when the run ends (no gloo thread outlives it)
        out_dir = Path(ctx.broadcast(spec.options.output_dir))  # rank 0's folder for every rank
        with _RunLog(ctx.is_main) as run_log:
            plan = _plan(spec, device)
            seen = _check_folder(out_dir, plan, spec, ctx)  # read only: a refusal writes nothing
            out_dir.mkdir(parents=True, exist_ok=True)
            if not ctx.is_main:
                _remove_stray_folder(Path(spec.options.output_dir), out_dir)
            with _hold_folder(out_dir, ctx):
                records = _claim_folder(out_dir, plan, spec, ctx, seen)
                if ctx.is_main:
                    run_log.start(out_dir)
                    _save_hydra_files(out_dir, spec)
                return _evaluate(spec, out_dir, device, ctx, plan, records)


def _save_hydra_files(out_dir: Path, spec: RunSpec) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` of this invocation, once the folder is claimed.

    Hydra's own copy (``hydra.output_subdir``) is off (conf/hydra/default.yaml): it is written
    before the run starts, so a refused run would rewrite the files of the folder it was refused from.
    """
    for name, text in spec.hydra_files:
        write_text_atomic(out_dir / layout.HYDRA_DIR / name, text)


@contextlib.contextmanager
def _hold_folder(out_dir: Path, ctx: Dist):
    """Rank 0 holds the folder's exclusive lock for the run; every rank raises when it is taken or unusable."""
    lock = FolderLock(out_dir)
    error = None
    if ctx.is_main:
        try:
            lock.acquire()
        except RunFolderError as exc:
            error = (isinstance(exc, FolderLockedError), str(exc))
    error = ctx.broadcast(error)
    if error is not None:
        raise (FolderLockedError if error[0] else RunFolderError)(error[1])
    try:
        yield
    finally:
        lock.release()


def _plan(spec: RunSpec, device: torch.device) -> _Plan:
    """Methods, dataset, protocol and identity of a run (nothing written)."""
    methods = build_methods(spec)
    protocol = build_protocol(spec.config)
    dataset = build_dataset(spec.data.node, protocol.geometry)
    check_backbone(spec, methods, protocol)
    return _Plan(methods, dataset, protocol, identity_of(spec, dataset, device), list(dataset.ids))


def _check_selection(out_dir: Path, records: dict[str, dict[str, Any]], selected: list[str], spec: RunSpec) -> None:
    """Refuse a selection that leaves out images the folder holds results of (a smaller ``dataset.limit``, say):
    the folder's ``metrics.json`` would rest on fewer images than its records."""
    chosen = set(selected)
    outside = sorted(i for i, r in records.items() if "methods" in r and i not in chosen)
    if outside:
        raise RunMismatchError(
            f"{out_dir} holds results of {len(outside)} image(s) outside this run's selection of {len(selected)} "
            f"(first: {outside[0]}; dataset.limit={spec.data.limit}, dataset.shard="
            f"{spec.data.shard}): its metrics.json rests on every image it holds results of. Run again "
            "with a selection that covers them (the folder's dataset.limit, a larger one or null), or start a new "
            "folder.")


def _folder_problem(out_dir: Path, plan: _Plan, spec: RunSpec, records: dict[str, dict[str, Any]],
                    check_files: bool, quiet: bool = False) -> dict[str, Any] | None:
    """Check an existing folder against the run (nothing written while it holds records); its run.json or None.

    Raises :class:`RunMismatchError` (or a subclass) on the first problem.
    """
    if not records:
        return None
    identity = plan.identity
    stored = check_run_folder(out_dir, identity, has_records=True)
    _check_records(records, identity.fingerprint, out_dir)
    _check_selection(out_dir, records, plan.selected, spec)
    versions_found = check_code_version(out_dir, stored, records, identity.code, spec.options.allow_code_change)
    if len(set(versions_found) | {identity.code_id}) > 1 and not quiet:
        log.warning("code versions: this run is %s; the folder's records were made by %s "
                    "(allow_code_change=true): every record carries its version", identity.code_id,
                    ", ".join(versions_found))
    if check_files:
        check_contents(out_dir, records, plan.dataset, plan.selected)
    return stored


def _raise_on_all_ranks(ctx: Dist, check) -> Any:
    """Run ``check()`` on rank 0; its RunMismatchError is raised on every rank; returns rank 0's result there."""
    error, value = None, None
    if ctx.is_main:
        try:
            value = check()
        except RunMismatchError as exc:
            error = (type(exc).__name__, str(exc))
    error = ctx.broadcast(error)
    if error is not None:
        kinds = {k.__name__: k for k in (CodeVersionError, ContentMismatchError)}
        raise kinds.get(error[0], RunMismatchError)(error[1])
    return value


def _check_folder(out_dir: Path, plan: _Plan, spec: RunSpec, ctx: Dist) -> dict[str, dict[str, Any]] | None:
    """Before the folder is written: rank 0 checks an existing folder (read only); returns the records it checked."""

    def check() -> dict[str, dict[str, Any]]:
        records = load_run_records(out_dir) if out_dir.is_dir() else {}
        _folder_problem(out_dir, plan, spec, records, check_files=True, quiet=True)
        return records

    return _raise_on_all_ranks(ctx, check)


def _claim_folder(out_dir: Path, plan: _Plan, spec: RunSpec, ctx: Dist,
                  seen: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Records of the folder, after rank 0 checked (or wrote) its identity under the lock; every rank raises on a
    mismatch.

    ``seen`` are the records :func:`_check_folder` checked; when the folder still holds exactly
    those, their files are not hashed again. A folder without records gets this run's ``run.json``,
    and its COCO mask part files lose the lines of images without a record (left by a run
    stopped between writing masks and records), so a resumed run never takes a stale mask.
    """
    records = load_run_records(out_dir)

    def claim() -> None:
        if _folder_problem(out_dir, plan, spec, records, check_files=records != seen) is None:
            check_run_folder(out_dir, plan.identity, has_records=False)  # writes run.json
        prune_mask_parts(out_dir, records)

    _raise_on_all_ranks(ctx, claim)
    ctx.barrier()  # every rank has read the records before any rank appends to them
    return records


def _new_record(image_id: str, identity: RunIdentity, batch_size: int, dataset: Any) -> dict[str, Any]:
    """The bookkeeping part of an evaluated image's record: fingerprint, code version, batch size, files."""
    record: dict[str, Any] = {"id": image_id, "fp": identity.fingerprint, "code": identity.code_id,
                              "batch_size": batch_size, "threads": torch.get_num_threads()}
    if hasattr(dataset, "image_path") and hasattr(dataset, "label_path"):
        record["root"] = str(getattr(dataset, "root", ""))
        record["files"] = file_digests(dataset, image_id)
    record["methods"] = {}
    return record


@dataclass
class _RunEnd:
    """What the end of a run needs (:func:`_finish`): the run, its sinks, its totals and its timing."""

    spec: RunSpec
    out_dir: Path
    plan: _Plan
    source: BackbonePasses
    sinks: list[Sink]
    ctx: Dist
    totals: dict[str, dict[str, Any]]
    timing: dict[str, Any]


def _evaluate(spec: RunSpec, out_dir: Path, device: torch.device, ctx: Dist, plan: _Plan,
              records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The claimed folder's run: every image not done yet through the methods and the sinks, then metrics.json."""
    done, todo = _assign_images(out_dir, ctx, plan, records)
    metric = MetricSink({m.name: HungarianSegmentationMetric(spec.data.num_classes, spec.data.background,
                                                             plan.protocol, sync_on_compute=False)
                         for m in plan.methods},
                        {m.name: m.ablation for m in plan.methods})
    if ctx.is_main:  # rank 0 replays the images already done, every rank adds its own
        metric.replay(records[i] for i in done)
    loader = build_loader(plan.dataset, batch_size=spec.options.batch_size, num_workers=spec.options.num_workers,
                          pin_memory=device.type == "cuda")
    source = make_passes(spec, device, plan.methods, plan.protocol)
    if source.needs_backbone and plan.dataset.ids:
        source.load()  # load (or fail on missing weights) before the loader starts
    sinks = _sinks(spec, out_dir, ctx, plan, metric)
    start = time.perf_counter()
    with GracefulStop() as stop:
        inference_on_dataset(_predictor(source, plan.methods, device, spec.data.num_classes), loader, metric,
                             sinks, after_batch=stop.check)
    timing = {"seconds": round(time.perf_counter() - start, 3), "images_this_invocation": len(todo)}
    return _finish(_RunEnd(spec, out_dir, plan, source, sinks, ctx, metric.totals(sync=ctx.active), timing))


def _assign_images(out_dir: Path, ctx: Dist, plan: _Plan,
                   records: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """This rank's share of the images not done yet becomes the dataset's ids; returns (done, not done) of all ranks."""
    done = [i for i in plan.selected if "methods" in records.get(i, {})]
    todo = [i for i in plan.selected if "methods" not in records.get(i, {})]
    plan.dataset.ids = split(todo, ctx)
    if ctx.is_main:
        log.info("run folder: %s (fingerprint %s)", out_dir, plan.identity.fingerprint)
        if done:
            log.info("resuming: %d of %d images already done", len(done), len(plan.selected))
        if ctx.active:
            log.info("data-parallel: %d ranks, %d images to do, about %d each", ctx.world_size, len(todo),
                     len(plan.dataset.ids))
    return done, todo


def _predictor(source: BackbonePasses, methods: list[Any], device: torch.device,
               num_classes: int) -> Callable[[Batch], Predictions]:
    """Batch -> every method's masks, with the labels on ``device`` (one protocol per run: one label set)."""
    names = [m.name for m in methods]

    def predict(batch: Batch) -> Predictions:
        labels = batch.labels.to(device, non_blocking=True)
        with torch.inference_mode():
            scored = dict.fromkeys(names, labels)
            maps, features = source(batch.images, batch.ids)
            masks = source.segment(methods, maps, features, scored, num_classes)
        return Predictions(masks, labels)

    return predict


def _sinks(spec: RunSpec, out_dir: Path, ctx: Dist, plan: _Plan, metric: MetricSink) -> list[Sink]:
    """The run's sinks, in the order that keeps the folder resumable (:mod:`eval.run.sinks`)."""
    pixels = spec.data.size ** 2
    rank = ctx.rank if ctx.active else None
    masks = MaskWriter(out_dir, spec.options.save_masks, spec.data.num_classes, spec.data.background,
                       plan.protocol.name, rank=rank)
    samples = QualitativeSamples(spec.options.grid_images if ctx.is_main else 0, [m.name for m in plan.methods])
    records = RunRecords(out_dir, layout.records_file(rank))
    new_record = functools.partial(_new_record, identity=plan.identity, batch_size=spec.options.batch_size,
                                   dataset=plan.dataset)
    total = len(plan.selected) if not ctx.active else len(plan.dataset.ids)
    bar = tqdm(total=total, initial=total - len(plan.dataset.ids), unit="img",
               disable=not spec.options.progress or not ctx.is_main,
               desc=spec.run_name + (f" [rank 0 of {ctx.world_size}]" if ctx.active else ""))
    return [
        MaskSink(masks),
        SamplesSink(samples, out_dir / layout.QUALITATIVE_PNG, list(getattr(plan.dataset, "classes", []) or []),
                    lambda result: banner([result])),
        UnknownLabelSink(pixels, spec.options.max_unknown_label_fraction, out_dir / METRICS_FILE),
        RecordsSink(records, new_record, plan.identity.fingerprint, pixels),
        ProgressSink(bar, metric),
    ]


def _finish(end: _RunEnd) -> dict[str, Any]:
    """metrics.json from the synced totals (rank 0), then the sinks' files; refuses numbers resting on nothing
    (every rank)."""
    outcome: dict[str, Any] | None = None
    if end.ctx.is_main:
        records = load_run_records(end.out_dir)  # every rank's records, all appended before the sync
        mine = [records[i] for i in end.plan.selected if i in records]
        try:
            outcome = _write_result(end, mine)
        except UnknownLabelsError as exc:
            outcome = {"refused": str(exc)}
        if "result" in outcome:
            for sink in end.sinks:
                sink.finish(outcome["result"])
            log.info("%s -> %s", outcome["tail"], end.out_dir)
    outcome = end.ctx.broadcast(outcome)
    if "error" in outcome:
        raise NoImagesError(outcome["error"])
    if "refused" in outcome:
        raise UnknownLabelsError(outcome["refused"])
    return outcome["result"]


def _too_few(end: _RunEnd, evaluated: int, skipped: int) -> str | None:
    """Why the run's numbers would rest on nothing (or on too few images), or None."""
    selected, path = len(end.plan.selected), end.out_dir / METRICS_FILE
    if evaluated == 0:
        return (f"no image was evaluated ({selected} selected, {skipped} skipped: see run.log); "
                f"nothing written to {path}")
    max_skipped = end.spec.options.max_skipped
    if max_skipped is not None and skipped > float(max_skipped) * selected:
        return (f"{skipped} of {selected} images were skipped, more than max_skipped={max_skipped}; "
                f"nothing written to {path} (a run in the same folder retries them)")
    return None


def _write_result(end: _RunEnd, mine: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"result": metrics.json content, "tail": last log line}`` once written, or ``{"error": message}``.

    Raises:
        UnknownLabelsError: a sink's summary refused the run (nothing written).
    """
    spec, out_dir, identity, selected = end.spec, end.out_dir, end.plan.identity, len(end.plan.selected)
    evaluated = sum("methods" in r for r in mine)
    skipped = len(mine) - evaluated
    counted = {name: m["images"] for name, m in end.totals.items()}
    if any(n != evaluated for n in counted.values()):
        raise RuntimeError(f"{out_dir}: metric totals {counted} disagree with the {evaluated} evaluated records")
    error = _too_few(end, evaluated, skipped)
    if error is not None:
        return {"error": error}
    sections: dict[str, Any] = {"timing": end.timing}
    for sink in end.sinks:
        sections.update(sink.summary(mine))
    if end.source.cache.mode != "none":
        sections["cache"] = end.source.cache.summary()
    folder_code = code_id(read_run_json(out_dir / IDENTITY_FILE).get("code") or {})
    provenance = build_provenance(identity.fingerprint, identity.settings, identity.data,
                                  _random_weights(spec, end.source), evaluated=evaluated, skipped=skipped,
                                  selected=selected, code_versions=tally(mine, "code", folder_code),
                                  batch_sizes=tally(mine, "batch_size"), threads=tally(mine, "threads"),
                                  image_list=getattr(end.plan.dataset, "image_list", lambda: None)())
    result = write_metrics(
        out_dir, end.totals, mine, run=_run_info(spec, end.plan.protocol), provenance=provenance,
        config=spec.config, code=identity.code, versions=versions(), **sections,
    )
    for name, s in result["methods"].items():
        log.info("%-14s ACC %5.1f  mIoU %5.1f  segments/img %.2f  images %d", name, s.get("acc") or 0.0,
                 s.get("miou") or 0.0, s.get("mean_segments") or 0.0, s.get("images", 0))
    for note in provenance["notes"]:
        log.warning("note: %s", note)
    tail = f"{evaluated} of {selected} selected images evaluated"
    tail += f", {skipped} skipped (listed in metrics.json; a run in the same folder retries them)" if skipped else ""
    return {"result": result, "tail": tail}


def _quiet_rank() -> None:
    """On ranks other than 0: no log file (rank 0 alone writes run.log)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def _remove_stray_folder(own: Path, shared: Path) -> None:
    """Hydra gives every torchrun process a time-stamped folder unless ``hydra.run.dir`` is set;
    the run uses rank 0's, so another rank's own folder is removed when it holds only Hydra's files."""
    if own.resolve() == shared.resolve() or not own.is_dir():
        return
    if {p.name for p in own.iterdir()} <= {layout.HYDRA_DIR, layout.LOG_FILE}:
        shutil.rmtree(own, ignore_errors=True)


_HYDRA_PLAIN = re.compile(r"[A-Za-z0-9_/.:+@%-]+")


def hydra_quote(value: str) -> str:
    """``value`` as a Hydra override value that parses back to exactly ``value``.

    Plain paths stay as they are; anything else (spaces, non-ASCII, quotes, ``=``,
    ``,``, ``${``) is double-quoted with Hydra's escapes: ``\\"`` for a quote, doubled
    backslashes before a quote or at the end, and ``\\${`` so the config does not
    interpolate it.
    """
    if _HYDRA_PLAIN.fullmatch(value):
        return value
    text = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', value)
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f'"{text}"'


def _resume_command(out_dir: Path) -> str:
    """The command that continues this run in ``out_dir`` (same overrides, same folder), quoted for a POSIX shell.

    The folder is quoted for Hydra's override parser (:func:`hydra_quote`) and the whole
    override for the shell, so a path with spaces or non-ASCII characters resumes as printed.
    The interpreter is the one running now (``sys.executable``, so a copy-paste outside an activated venv
    still has the packages), shortened to ``python`` only when that name on PATH is this very file
    (compared unresolved: a venv's python links to the system one but has other packages).
    """
    python = sys.executable or "python"
    on_path = shutil.which("python")
    if on_path is not None and os.path.abspath(on_path) == os.path.abspath(python):
        python = "python"
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
    except ValueError:  # not started through Hydra
        overrides = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "-"))]
    return shlex.join([python, "-m", "eval.run", *overrides, f"hydra.run.dir={hydra_quote(str(out_dir))}"])


def run_cli(spec: RunSpec | Any, hydra_config: Any = None) -> int:
    """:func:`evaluate` as the command line runs it: its exit status, with one line on stderr for a refusal.

    Exit status: 0 done; 1 no image evaluated (or too many skipped); 2 a setting outside
    its allowed range (:mod:`eval.spec.build`, before the folder is created), missing data or
    weights, a folder holding results of other settings, code versions, files or images, a folder
    in use by another run, a duplicated id, an unusable ``run.json``, a full disk or an
    unwritable folder, unreadable or unknown labels (one clear line on stderr, no
    traceback); 128 + signal on SIGTERM/SIGINT, after the batch in flight was recorded,
    with the folder and the command that resumes. A refused run leaves its folder as it was:
    one that Hydra created for it is removed again while it is empty.
    """
    out_dir = Path(str(spec.options.output_dir if isinstance(spec, RunSpec) else spec["paths"]["output_dir"]))
    export_slurm_env()
    if int(os.environ.get("RANK", "0")) > 0:
        _quiet_rank()
    try:
        evaluate(spec, hydra_config)
    except (FileNotFoundError, BackboneLoadError, RunMismatchError, ProtocolError, RunFolderError,
            DuplicateIdsError, SettingError, UnknownLabelsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        remove_if_new_and_empty(out_dir)
        return 2
    except LabelFormatError as exc:  # raised in a loader worker: its message carries the worker's traceback
        print(f"error: {str(exc).strip().splitlines()[-1]}", file=sys.stderr)
        return 2
    except NoImagesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (RunInterrupted, KeyboardInterrupt) as exc:
        code = exc.exit_code if isinstance(exc, RunInterrupted) else 130
        print(f"interrupted ({exc or 'SIGINT'}): every finished batch is recorded in {out_dir}\n"
              f"resume with: {_resume_command(out_dir)}", file=sys.stderr)
        return code
    except OSError as exc:
        message = storage_error(exc, out_dir)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: Any) -> None:
    """Hydra entry point; all work is in :func:`evaluate` (exit statuses: :func:`run_cli`)."""
    from hydra.core.hydra_config import HydraConfig

    status = run_cli(cfg, HydraConfig.get())
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
