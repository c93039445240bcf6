"""Non-maximum suppression of proposal maps into a label mask (diffseg/REFERENCE.md section 1, step 7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nms_mask"]


def nms_mask(proposals: torch.Tensor, output_size: int = 512, chunk: int = 32) -> torch.Tensor:
    """Label each pixel with the index of the largest upsampled proposal.

    Each proposal is bilinearly upsampled (half-pixel centres, no antialiasing,
    as ``tf.image.resize``) to ``output_size`` in float32; ties go to the lower
    index (first maximum, like ``tf.math.argmax``). Proposals are processed in
    chunks so at most ``chunk`` full-size maps exist at once.

    Args:
        proposals: ``(P, S, S)`` or ``(P, S*S)`` maps of one image.
        output_size: side of the output mask.

    Returns:
        ``LongTensor(output_size, output_size)`` with values in ``[0, P)``;
        all zeros when ``P == 0``.
    """
    count = proposals.shape[0]
    device = proposals.device
    if count == 0:
        return torch.zeros(output_size, output_size, dtype=torch.long, device=device)
    side = int(round((proposals[0].numel()) ** 0.5))
    maps = proposals.reshape(count, 1, side, side).float()
    best_value = best_index = None
    for start in range(0, count, chunk):
        part = maps[start : start + chunk]
        if side != output_size:
            part = F.interpolate(part, size=(output_size, output_size), mode="bilinear", align_corners=False)
        value, index = part[:, 0].max(dim=0)
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value  # strict: earlier proposals win ties
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + start, best_index)
    return best_index
