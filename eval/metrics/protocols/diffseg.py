"""DiffSeg's protocol (its paper, arXiv 2308.12469, and google/diffseg), the default: ``protocol=diffseg``.

Geometry: the dataset's own (:class:`eval.data.geometry.CentreCropGeometry`): centre crop to ``min(h, w)``
(offset ``(longer - shorter) // 2``), images bilinear to the backbone's input size, labels ``nearest-exact``
at ``dataset.size`` (512). Scoring: per image, every class (background included where the dataset has one)
matched to one segment by the Hungarian algorithm, boundary, unlabelled and unknown pixels ignored; ACC and
mIoU from the summed counts (:meth:`eval.metrics.protocols.base.Protocol.image_stats`).
"""

from __future__ import annotations

from typing import Any

from eval.metrics.protocols.base import Protocol, ProtocolError

__all__ = ["DiffSeg"]


class DiffSeg(Protocol):
    """``protocol=diffseg``: every default of :class:`~eval.metrics.protocols.base.Protocol`.

    Args:
        geometry: must be None (the config's ``geometry: null``): the dataset reads with its own.
    """

    name = "diffseg"
    geometry_text = "centre crop to min(h, w) (offset floor), labels nearest-exact at dataset.size"

    def __init__(self, geometry: Any = None):
        if geometry is not None:
            raise ProtocolError("protocol=diffseg reads with the dataset's own geometry (protocol.geometry: null); "
                                f"got {geometry!r}")
