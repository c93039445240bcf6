"""The typed run spec: what a run is, as frozen dataclasses built once from the composed config.

:func:`eval.spec.build.build_spec` turns Hydra's composed config into a :class:`RunSpec`; every
component of a run (datasets, passes, methods, identity, provenance, the runner) reads the spec,
never the config. Mapping fields (``node``, ``params``, ``backbone``...) hold plain, resolved
dicts (Hydra's ``instantiate`` takes them as they are); a spec is frozen: its fields cannot be
reassigned, and its dicts are the config's values, to be read, not changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CacheSpec", "DataSpec", "FeaturePass", "MethodSpec", "ModelSpec", "ProtocolSpec", "RunOptions",
           "RunSpec"]


@dataclass(frozen=True)
class FeaturePass:
    """The UNet pass a feature method needs: timestep and DiffCut's shared seeded noise."""

    timestep: int | None  # None: the run's attention pass (one UNet pass feeds both captures)
    noise_seed: int


@dataclass(frozen=True)
class ModelSpec:
    """The backbone: ``node`` is the whole ``model`` config (resolved), ``backbone`` its ``_target_`` node."""

    name: str
    kind: str  # "unet" or "mmdit"
    dtype: str | None
    timestep: int | None
    size: int | None
    noise: bool
    noise_seed: int | None
    head_chunk: int | None
    joint_layers: tuple[Any, ...]
    query_chunk: int | None  # image queries per chunk of the MM-DiT capture (None: one chunk)
    backbone: dict[str, Any]
    node: dict[str, Any]

    @property
    def random_weights(self) -> bool:
        """True unless the configured loader reads a checkpoint (only ``from_pretrained`` does)."""
        return not str(self.backbone.get("_target_", "")).endswith(".from_pretrained")


@dataclass(frozen=True)
class DataSpec:
    """The benchmark: ``node`` is the whole ``dataset`` config (resolved; :func:`eval.run.build.build_dataset`)."""

    name: str
    size: int  # side of the labels the masks are scored at
    num_classes: int
    background: int | None
    limit: int | None
    shard: str | None
    subset: Any
    node: dict[str, Any]


@dataclass(frozen=True)
class ProtocolSpec:
    """The run's protocol by name, with its config (``params``: the resolved ``protocol`` node, ``name`` included)."""

    name: str
    params: dict[str, Any]

    @property
    def geometry(self) -> dict[str, Any] | None:
        """The ``_target_`` node of the protocol's geometry; None: the dataset's own."""
        return self.params.get("geometry")


@dataclass(frozen=True)
class MethodSpec:
    """One method of the run: its config entry ``key``, table ``name``, resolved ``node`` and the segmenter built
    from ``node["segmenter"]`` (built once, by :func:`eval.spec.build.build_spec`, which is how it is checked)."""

    key: str
    name: str
    node: dict[str, Any]
    segmenter: Any
    weights: dict[int, float] | None  # its aggregation weights (its own, else the run's; None = proportional)
    ablation: dict[str, Any] | None
    features: FeaturePass | None
    output_size: int | None
    clusters_from_labels: bool
    text_attention: bool


@dataclass(frozen=True)
class CacheSpec:
    """The attention cache (:mod:`eval.run.cache`)."""

    mode: str
    max_gb: float
    dir: str | None


@dataclass(frozen=True)
class RunOptions:
    """How a run goes (none of these changes a per-image number, except ``device`` and ``seed`` through the config)."""

    output_dir: str | None
    device: str
    batch_size: int
    num_workers: int
    grid_images: int
    progress: bool
    save_masks: str | None  # None, "png" or "coco"
    max_skipped: float | None
    max_unknown_label_fraction: float
    allow_code_change: bool
    seed: int | None
    cache: CacheSpec


@dataclass(frozen=True)
class RunSpec:
    """A whole run. ``config`` is the resolved composed config (kept in ``metrics.json``); ``hydra_files`` the
    ``.hydra/`` files of a command-line run (file name -> YAML text), empty otherwise."""

    run_name: str
    ablation: dict[str, Any] | None
    model: ModelSpec
    data: DataSpec
    protocol: ProtocolSpec
    aggregation: dict[str, Any] | None  # the ``aggregation`` node ({name, weights})
    methods: tuple[MethodSpec, ...]
    options: RunOptions
    config: dict[str, Any] = field(repr=False)
    hydra_files: tuple[tuple[str, str], ...] = ()
