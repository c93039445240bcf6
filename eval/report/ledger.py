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
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = ["DEFAULT_LEDGER", "STATUSES", "Claim", "claims_for", "load_ledger", "render_claims"]

DEFAULT_LEDGER = Path(__file__).resolve().parents[2] / "conf" / "paper" / "numbers.yaml"
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
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    entries = data.get("claims") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a top-level `claims:` list (see eval/report/ledger.py)")
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
        unknown = set(entry) - {f.name for f in Claim.__dataclass_fields__.values()}
        if unknown:
            raise ValueError(f"{path}: claim {i} has unknown keys {sorted(unknown)}")
        claims.append(Claim(**{**entry, "settings": dict(entry.get("settings") or {})}))
    return claims


def claims_for(claims: Sequence[Claim], method: str, dataset: str, protocol: str,
               subset: str | None = None) -> list[Claim]:
    """The claims a row of ``method`` on ``dataset`` under ``protocol`` (and image ``subset``) is compared with."""
    return [c for c in claims if c.method == method and c.dataset == dataset and c.protocol == protocol
            and (c.subset is None or subset is None or c.subset == subset)]


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
