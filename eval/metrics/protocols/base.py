"""What a protocol is (:class:`Protocol`) and how one is found by name (:func:`get_protocol`).

A protocol says how a run's images and labels are cut and resized (its geometry, given to the dataset
when it is built), how a prediction is brought to its label (:meth:`Protocol.prediction_size`,
:meth:`Protocol.fit`), how each image is scored (:meth:`Protocol.image_stats`) and how tables and
provenance name it (:meth:`Protocol.describe`). Each one is a subclass in its own module of this package,
with one config, ``conf/protocol/<name>.yaml``, whose ``protocol`` node holds its ``name`` and its
constructor's settings (or a ``_target_`` naming a class outside this package).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from eval.data.geometry import Geometry
from eval.metrics.functional import NUM_CLASSES, hungarian_image_stats

__all__ = ["Protocol", "ProtocolError", "describe_protocol", "geometry_differences", "get_protocol", "image_stats",
           "protocol_from_settings", "registered_protocols"]

_REGISTRY: dict[str, type[Protocol]] = {}
_PACKAGE = __name__.rpartition(".")[0]  # eval.metrics.protocols: where a protocol's module is looked for by name


class ProtocolError(ValueError):
    """A run's protocol cannot be applied as configured (the message says what to change)."""


class Protocol:
    """One evaluation protocol. Subclasses set :attr:`name` (registered under it) and :attr:`geometry_text`.

    The defaults are DiffSeg's: the dataset's own geometry (:class:`~eval.data.geometry.CentreCropGeometry`
    at ``dataset.size``), predictions made at their label's size, and every class matched once per image by
    the Hungarian algorithm with ignore and unknown label values left out
    (:func:`~eval.metrics.functional.hungarian_image_stats`).
    """

    name: ClassVar[str]
    geometry_text: ClassVar[str]  # its geometry in words (provenance notes of a re-scored run)
    max_batch_size: ClassVar[int | None] = None  # images that keep their own sizes do not stack
    integer_pixels: ClassVar[bool] = False  # True: its images are uint8 values before the backbone

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return
        known = _REGISTRY.get(cls.name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"protocol name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}")
        _REGISTRY[cls.name] = cls

    _geometry: Geometry | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, geometry={self._geometry!r})"

    # ------------------------------------------------------------------------------------------- geometry
    @property
    def geometry(self) -> Geometry | None:
        """The geometry the run's dataset is built with; None = the dataset's own (DiffSeg's at ``dataset.size``)."""
        return self._geometry

    @property
    def label_size(self) -> int | None:
        """Side of every label when the protocol fixes it (``dataset.size`` must then equal it), else None."""
        return None

    def check(self, dataset_size: int, batch_size: int) -> None:
        """Refuse a run whose ``dataset.size`` or ``batch_size`` this protocol cannot score (:class:`ProtocolError`)."""
        side = self.label_size
        if side is not None and int(dataset_size) != side:
            raise ProtocolError(
                f"protocol={self.name} scores labels and masks at {side} x {side}, but dataset.size={dataset_size}; "
                "change protocol.size (dataset.size follows it), not dataset.size")
        batch = self.max_batch_size
        if batch is not None and int(batch_size) > batch:
            raise ProtocolError(f"protocol={self.name} keeps each image at its own size, so a batch holds {batch} "
                                f"image(s); set batch_size={batch} (got {batch_size})")

    # ------------------------------------------------------------------------------------ prediction -> label
    def prediction_size(self, label_size: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` a prediction for a label of ``label_size`` is made at (by default the label's)."""
        return int(label_size[0]), int(label_size[1])

    def fit(self, masks: torch.Tensor, label_size: tuple[int, int]) -> torch.Tensor:
        """Masks ``(B, H', W')`` at :meth:`prediction_size` -> ``(B, h, w)`` at the label's size (identity here)."""
        return masks

    # ---------------------------------------------------------------------------------------------- scoring
    def image_stats(self, preds: Any, labels: Any, num_classes: int = NUM_CLASSES,
                    background: int | None = None) -> list[dict[str, Any]]:
        """Per-image ``{"tp", "fp", "fn", "valid", "segments"}`` of a batch: preds and labels ``(B, H, W)``
        integer tensors; ``background`` is the dataset's background class (None: none), unused here."""
        return hungarian_image_stats(preds, labels, num_classes)

    # -------------------------------------------------------------------------------------------- naming
    def describe(self, geometry_of: str | None = None) -> str:
        """How tables and provenance name numbers scored under this protocol: its name, or
        ``"<name> scoring, <other> geometry"`` for masks made under ``geometry_of``'s geometry (a re-scoring)."""
        return describe_protocol(self.name, geometry_of)


def describe_protocol(scoring: str, geometry_of: str | None = None) -> str:
    """:meth:`Protocol.describe` of the protocol named ``scoring`` (also for a stored run, by its names)."""
    return scoring if not geometry_of or geometry_of == scoring else f"{scoring} scoring, {geometry_of} geometry"


def registered_protocols() -> tuple[str, ...]:
    """The names of the protocols imported so far (every one of this package once it is imported), sorted."""
    return tuple(sorted(_REGISTRY))


def _registered(name: str) -> type[Protocol]:
    if name not in _REGISTRY and name.isidentifier() and importlib.util.find_spec(f"{_PACKAGE}.{name}") is not None:
        importlib.import_module(f"{_PACKAGE}.{name}")  # a protocol module added to this package
    if name not in _REGISTRY:
        raise ProtocolError(f"protocol must be one of {registered_protocols()}, got {name!r}")
    return _REGISTRY[name]


def _target_class(target: str) -> type[Protocol]:
    module, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError) as exc:
        raise ProtocolError(f"protocol._target_ {target!r} cannot be imported ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Protocol)):
        raise ProtocolError(f"protocol._target_ {target!r} is not a Protocol class")
    return cls


def get_protocol(name: str | None = None, **params: Any) -> Protocol:
    """The protocol ``name`` built with ``params`` (its config node's other keys).

    The class is ``params["_target_"]`` when given, else the protocol registered as ``name`` (a module
    ``eval/metrics/protocols/<name>.py`` is imported to find it). A ``geometry`` mapping saved by a run from
    before protocols were objects names its old class as ``_target_``: that key is dropped.

    Raises:
        ProtocolError: unknown name, a ``_target_`` of another name, or settings the protocol does not take.
    """
    target = params.pop("_target_", None)
    cls = _target_class(target) if target is not None else _registered(str(name))
    if name is not None and cls.name != name:
        raise ProtocolError(f"protocol.name is {name!r} but {cls.__module__}.{cls.__qualname__} is {cls.name!r}")
    if isinstance(params.get("geometry"), Mapping):
        params["geometry"] = {k: v for k, v in params["geometry"].items() if k != "_target_"}
    try:
        return cls(**params)
    except TypeError as exc:
        raise ProtocolError(f"protocol={cls.name}: {exc}") from None


def protocol_from_settings(settings: Mapping[str, Any] | None) -> Protocol:
    """The protocol of a run's ``protocol`` settings as a plain mapping (``{"name": ..., ...}``; none: DiffSeg's)."""
    params = dict(settings or {})
    return get_protocol(str(params.pop("name", "diffseg")), **params)


def image_stats(preds: Any, labels: Any, num_classes: int = NUM_CLASSES, background: int | None = None,
                protocol: Protocol | str = "diffseg") -> list[dict[str, Any]]:
    """Per-image matching stats of a batch under ``protocol``'s scoring (:meth:`Protocol.image_stats`).

    ``protocol`` is a :class:`Protocol` or a registered name (built with its defaults: scoring needs no
    geometry). See :func:`eval.metrics.functional.hungarian_image_stats` for the record format.
    """
    if not isinstance(protocol, Protocol):
        protocol = get_protocol(protocol)
    return protocol.image_stats(preds, labels, num_classes, background)


def geometry_differences(source: str, target: str) -> list[str]:
    """Where a run made under ``source`` differs in geometry from one made under ``target`` (empty if none)."""
    if source == target:
        return []

    def text(name: str) -> str:
        cls = _REGISTRY.get(name)
        return cls.geometry_text if cls is not None else name

    return [f"geometry of {source} ({text(source)}), not of {target} ({text(target)})"]
