"""The ledger of claimed numbers (``conf/paper/numbers.yaml``), shown beside our table rows.

Each claim is a number someone published, quoted, never ours::

    - method: DiffSeg               # as our table rows name it
      dataset: coco_stuff27         # as run.dataset names it
      protocol: diffseg             # the protocol it was scored under (conf/protocol/)
      backbone: SD 1.4
      subset: curated               # optional: curated (the 2175-image list) or all (5000), COCO only
      acc: 72.5                     # x100, null where the source gives none
      miou: 43.6
      source: "DiffSeg paper (arXiv 2308.12469), Table 1"
      status: secondary             # confirmed: read in the primary text; secondary: quoted from elsewhere
      settings: {segmenter.tau: 0.2}   # optional: per-claim settings the source states
      note: "..."                   # optional

A row is shown the claims of its method, dataset and protocol (and image set, where both
say), each with our difference (ours - claim). Rows under other protocols never get them.
A claim that names a backbone matches only rows of a model listed for it under the ledger's
``backbones:`` map (model ids or config names: ``SD 1.4: [sd14, CompVis/stable-diffusion-v1-4]``;
a row whose model is a local folder matches no such claim). A claim's ``settings`` must equal
the row's recorded settings: a DiffCut SSD-1B row never gets the SD 1.4 claim, nor an SD 1.4
row at tau 0.5 the claim made at tau 0.2. Other differences from the paper's settings are
named in the row's label (:func:`eval.run.provenance.method_label`), beside the claim.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eval.config_path import config_dir

__all__ = ["DEFAULT_LEDGER", "STATUSES", "Claim", "claims_for", "load_ledger", "render_claims"]

DEFAULT_LEDGER = config_dir() / "paper" / "numbers.yaml"
STATUSES = ("confirmed", "secondary")
_REQUIRED = ("method", "dataset", "protocol", "source", "status")


@dataclass(frozen=True, eq=False)  # compared by identity: a claim is one ledger entry
class Claim:
    """One published number (module docstring)."""

    method: str
    dataset: str
    protocol: str
    source: str
    status: str
    backbone: str | None = None
    subset: str | None = None
    acc: float | None = None
    miou: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    models: tuple[str, ...] = ()  # the model ids / config names of ``backbone`` (the ledger's ``backbones:``)

    def describe(self) -> str:
        """One line: what was claimed, under what, where, and how sure we are."""
        values = ", ".join(f"{k} {v}" for k, v in (("ACC", self.acc), ("mIoU", self.miou)) if v is not None)
        where = f"{self.method}" + (f" ({self.backbone})" if self.backbone else "")
        text = f"{where}, {self.dataset}" + (f" ({self.subset} images)" if self.subset else "")
        text += f", protocol {self.protocol}: {values}; {self.source}; {self.status}"
        if self.settings:
            text += "; settings " + ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return text + (f"; {self.note}" if self.note else "")


def load_ledger(path: str | os.PathLike | None = None) -> list[Claim]:
    """The claims of a ledger file ([] when there is none).

    Raises:
        ValueError: a claim lacks a required key, has an unknown status, or a non-numeric value
            (the message names the file and the claim's position).
    """
    path = Path(path) if path is not None else DEFAULT_LEDGER
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = data.get("claims") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level `claims:` list (see eval/report/ledger.py)")
    backbones = data.get("backbones") or {}
    if not isinstance(backbones, Mapping) or not all(isinstance(v, list) for v in backbones.values()):
        raise ValueError(f"{path}: `backbones:` must map each backbone name to a list of model ids")
    claims = []
    for i, entry in enumerate(entries):
        missing = [k for k in _REQUIRED if not entry.get(k)]
        if missing:
            raise ValueError(f"{path}: claim {i} lacks {missing}")
        if entry["status"] not in STATUSES:
            raise ValueError(f"{path}: claim {i} has status {entry['status']!r}, not one of {STATUSES}")
        for key in ("acc", "miou"):
            value = entry.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{path}: claim {i} has {key}={value!r}, not a number")
        unknown = set(entry) - ({f.name for f in Claim.__dataclass_fields__.values()} - {"models"})
        if unknown:
            raise ValueError(f"{path}: claim {i} has unknown keys {sorted(unknown)}")
        backbone = entry.get("backbone")
        if backbone is not None and backbone not in backbones:
            raise ValueError(f"{path}: claim {i} names backbone {backbone!r}, which the `backbones:` map lacks "
                             f"(known: {sorted(backbones)})")
        claims.append(Claim(**{**entry, "settings": dict(entry.get("settings") or {}),
                               "models": tuple(map(str, backbones.get(backbone) or ()))}))
    return claims


_MISSING = object()


def claims_for(claims: Sequence[Claim], method: str, dataset: str, protocol: str, subset: str | None = None,
               model: str | None = None, settings: Mapping[str, Any] | None = None) -> list[Claim]:
    """The claims a row of ``method`` on ``dataset`` under ``protocol`` (and image ``subset``) is compared with.

    ``model`` is the row's model (``run.model``); a claim naming a backbone needs it among the
    claim's ``models``. ``settings`` holds the row's recorded settings by dotted key
    (``segmenter.tau``, ``model.name``); a claim's every stated setting must be there with its
    value. ``model=None`` / ``settings=None`` skip those checks (callers without a run).
    """
    out = []
    for c in claims:
        if c.method != method or c.dataset != dataset or c.protocol != protocol:
            continue
        if c.subset is not None and subset is not None and c.subset != subset:
            continue
        if c.backbone is not None and model is not None and str(model) not in c.models:
            continue
        if c.settings and settings is not None and any(settings.get(k, _MISSING) != v for k, v in c.settings.items()):
            continue
        out.append(c)
    return out


def _diff(ours: Any, claimed: float | None) -> float | None:
    if claimed is None or ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return None
    return float(ours) - float(claimed)


def render_claims(claims: Sequence[Claim], acc: Any, miou: Any, numbers: Mapping[Claim, int]) -> tuple[str, list]:
    """The claims cell of a row and its structured form.

    ``numbers`` gives each claim its footnote number. The cell reads e.g.
    ``[1] 72.5 / 43.6 (ours -2.5 / -2.3)``; the list holds one dict per claim with the
    claim's fields plus ``d_acc`` and ``d_miou`` (ours - claim, None where either is missing).
    """
    parts, rows = [], []
    for claim in claims:
        d_acc, d_miou = _diff(acc, claim.acc), _diff(miou, claim.miou)
        shown = " / ".join("-" if v is None else f"{v:.1f}" for v in (claim.acc, claim.miou))
        diffs = " / ".join("-" if v is None else f"{v:+.1f}" for v in (d_acc, d_miou))
        parts.append(f"[{numbers[claim]}] {shown} (ours {diffs}, {claim.status})")
        rows.append({**claim.__dict__, "d_acc": d_acc, "d_miou": d_miou})
    return "; ".join(parts), rows
