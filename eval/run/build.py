"""The run's protocol from its composed config (``conf/protocol``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from eval.metrics.protocols import Protocol, protocol_from_settings

__all__ = ["build_protocol", "protocol_settings"]


def protocol_settings(cfg: DictConfig) -> dict[str, Any]:
    """The run's ``protocol`` node as a plain dict (``{"name": "diffseg", "geometry": None}`` without one)."""
    node = cfg.get("protocol")
    if node is None:
        return {"name": "diffseg", "geometry": None}
    return OmegaConf.to_container(node, resolve=True)


def build_protocol(cfg: DictConfig) -> Protocol:
    """The run's :class:`~eval.metrics.protocols.Protocol` (``conf/protocol``), checked against ``dataset.size``
    and ``batch_size`` (:class:`~eval.metrics.protocols.ProtocolError` naming what to change)."""
    protocol = protocol_from_settings(protocol_settings(cfg))
    protocol.check(int(cfg.dataset.size), int(cfg.get("batch_size") or 1))
    return protocol
