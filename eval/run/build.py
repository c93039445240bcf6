"""The run's protocol from its (resolved, plain) config (``conf/protocol``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eval.metrics.protocols import Protocol, protocol_from_settings

__all__ = ["build_protocol", "protocol_settings"]


def protocol_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``protocol`` node of a run's resolved config (``{"name": "diffseg", "geometry": None}`` without one)."""
    node = config.get("protocol")
    if node is None:
        return {"name": "diffseg", "geometry": None}
    return dict(node)


def build_protocol(config: Mapping[str, Any]) -> Protocol:
    """The :class:`~eval.metrics.protocols.Protocol` of a run's resolved config, checked against its
    ``dataset.size`` and ``batch_size`` (:class:`~eval.metrics.protocols.ProtocolError` naming what to change)."""
    protocol = protocol_from_settings(protocol_settings(config))
    protocol.check(int(config["dataset"]["size"]), int(config.get("batch_size") or 1))
    return protocol
