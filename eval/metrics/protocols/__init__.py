"""Evaluation protocols: how images and labels are cut and resized, how a prediction is brought to its label,
how masks are scored, and how tables name the numbers.

A run is made under one protocol, the config group ``protocol`` (``conf/protocol/<name>.yaml``), found by
:func:`get_protocol`; each is a :class:`Protocol` in its own module:

* ``diffseg`` (default, :mod:`.diffseg`): DiffSeg's paper and release (google/diffseg);
* ``diffcut`` (:mod:`.diffcut`): DiffCut's release (PaulCouairon/DiffCut);
* ``seg4diff`` / ``seg4diff_aligned`` (:mod:`.seg4diff`): Seg4Diff's release (cvlab-kaist/Seg4Diff,
  ``test_unsupervised``).

Adding one is a module here (a :class:`Protocol` subclass with its ``name``) and its config. The protocol is
part of a run's fingerprint, of its ``metrics.json`` (``run.protocol``) and of every table row;
:mod:`eval.rescore` re-scores saved masks under another protocol's scoring rules (the geometry of the source
run stays, and is named: :meth:`Protocol.describe`).
"""

import importlib
import pkgutil

from eval.metrics.protocols.base import (
    Protocol,
    ProtocolError,
    describe_protocol,
    geometry_differences,
    get_protocol,
    image_stats,
    protocol_from_settings,
    registered_protocols,
)
from eval.metrics.protocols.diffcut import DiffCut, DiffCutGeometry, torchvision_center_crop
from eval.metrics.protocols.diffseg import DiffSeg
from eval.metrics.protocols.seg4diff import Seg4Diff, Seg4DiffAligned, Seg4DiffGeometry, shortest_edge_size

for _module in pkgutil.iter_modules(__path__):  # a protocol module added here is found without another edit
    importlib.import_module(f"{__name__}.{_module.name}")

PROTOCOLS = registered_protocols()  # the protocols of this package, by name

__all__ = [
    "PROTOCOLS",
    "DiffCut",
    "DiffCutGeometry",
    "DiffSeg",
    "Protocol",
    "ProtocolError",
    "Seg4Diff",
    "Seg4DiffAligned",
    "Seg4DiffGeometry",
    "describe_protocol",
    "geometry_differences",
    "get_protocol",
    "image_stats",
    "protocol_from_settings",
    "registered_protocols",
    "shortest_edge_size",
    "torchvision_center_crop",
]
