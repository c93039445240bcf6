"""``hydra.utils.instantiate`` for the runner's nodes, with the target's own error kept.

Targets receive plain dicts and lists (``_convert_="all"``): no component sees a Hydra config object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate

__all__ = ["DESCRIPTIVE_KEYS", "build", "build_dataset"]

# Keys of a ``conf/dataset`` node that describe the benchmark (read by the runner, the methods and the
# tables) rather than construct it; :func:`build_dataset` checks them against the dataset it builds.
DESCRIPTIVE_KEYS = ("name", "num_classes", "background", "kl_threshold")


def build(node: Mapping[str, Any], **kwargs: Any) -> Any:
    """Instantiate ``node``; re-raise the target's own error, not Hydra's wrapper.

    The dataset's missing-root error names the path and the ``make`` target; the
    backbone's load error names the model and what could not be fetched. Hydra's
    ``InstantiationException`` would bury both.
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (OSError, ValueError, RuntimeError)):
            raise cause from None
        raise


def build_dataset(node: Mapping[str, Any], geometry: Any = None) -> Any:
    """The dataset of a ``conf/dataset`` node: its ``_target_`` called with every key but :data:`DESCRIPTIVE_KEYS`.

    A config saved by an older run (the class in a nested ``dataset:`` block) builds that block.
    A class that takes some of them as settings (its ``described_keys``, e.g. the folder dataset's
    ``num_classes``) gets them. The node's ``num_classes`` and ``background`` must be the dataset's own
    (a config that disagrees with its dataset class is a ``ValueError`` naming both values). ``geometry``
    (an :class:`eval.data.geometry.Geometry`: the run's protocol's) is given to the constructor;
    None: the dataset's own.
    """
    params = dict(node)
    if "_target_" not in params and isinstance(params.get("dataset"), dict):  # a config saved before the node
        params = {**{k: params[k] for k in DESCRIPTIVE_KEYS if k in params}, **params["dataset"]}  # was flattened
    described = {key: params.pop(key) for key in DESCRIPTIVE_KEYS if key in params}
    taken = getattr(get_class(params["_target_"]), "described_keys", ()) if "_target_" in params else ()
    extra = {"geometry": geometry} if geometry is not None else {}
    dataset = build({**params, **{k: described[k] for k in taken if k in described}}, **extra)
    for key in ("num_classes", "background"):
        if key in described and getattr(dataset, key, None) != described[key]:
            raise ValueError(f"conf/dataset/{described.get('name')}.yaml says {key}: {described[key]}, but "
                             f"{type(dataset).__name__} has {getattr(dataset, key, None)}: correct the config")
    return dataset
