"""Cost of the MM-DiT joint-attention capture: ``python -m eval.bench.mmdit``.

Two sections, each against a baseline measured in the same run:

* capture overhead: one pass of a tiny SD3 transformer (random weights, the real structure:
  :func:`diffseg.testing.tiny_mmdit.build_tiny_transformer`, position table widened for the latent
  side) on seeded inputs, plain (the baseline) and inside :func:`diffseg.capture_joint_attention` (one
  block, as Seg4Diff reads block 9; and every block). Times are seconds per pass measured by
  :class:`torch.utils.benchmark.Timer` after an untimed warm-up (:func:`eval.bench.timing.timed`);
  ratio = captured / plain (higher = the capture costs more). The tiny model's blocks are cheap (2
  heads of 8 channels) next to the probabilities the capture computes, so the ratio is an upper
  bound for SD3's real blocks at the same token count, not SD3's overhead;
* peak memory of one captured layer's probability computation
  (:func:`diffseg.joint_attention.joint_probabilities`) at SD3's size (4096 image + 154 text tokens,
  24 heads of 64, batch 1, float32, random q/k), in query chunks (the default 256) and unchunked (the
  baseline): on the CPU (Linux) the rise of the resident-set high-water mark above the resident set before
  the call, the mark reset just before it, in a fresh process per setting (:func:`cpu_peak_in_this_process`;
  tracemalloc does not see torch's allocations); on CUDA ``torch.cuda.max_memory_allocated`` above the
  memory allocated before the call.
  Each row also gives the computed bound (:func:`diffseg.joint_attention.joint_capture_peak_bytes`).

Output: a table on stdout; ``--out FILE`` also writes the numbers as JSON (refuses to overwrite an
existing file).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from diffseg.devices import resolve_device
from diffseg.joint_attention import (
    DEFAULT_QUERY_CHUNK,
    capture_joint_attention,
    joint_capture_peak_bytes,
    joint_probabilities,
)
from eval.bench.cli import add_common_options, run_and_report
from eval.bench.provenance import run_provenance
from eval.bench.report import header_lines
from eval.bench.timing import device_info, timed
from eval.markdown import markdown_rows

__all__ = ["capture_overhead", "main", "probability_peak_memory", "run_bench"]

_MIB = 2.0 ** 20


def capture_overhead(side: int = 64, text_tokens: int = 154, repeats: int = 3, device: str | None = "cpu",
                     seed: int = 0) -> dict[str, Any]:
    """Seconds per pass of the tiny SD3 transformer, plain and captured; ``side`` is the latent side
    ((side / 2)^2 image tokens)."""
    # diffusers is imported here only: the memory rows' fresh processes import this module without it
    from diffseg.testing.tiny_mmdit import build_tiny_transformer, tiny_transformer_inputs

    dev = resolve_device(device)
    model = build_tiny_transformer("sd3", seed, pos_embed_max_size=max(16, side // 2)).to(dev)
    inputs = {k: v.to(dev) if isinstance(v, torch.Tensor) else v
              for k, v in tiny_transformer_inputs(model, text_tokens=text_tokens, seed=seed, side=side).items()}
    blocks = len(model.transformer_blocks)

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(**inputs)[0]

    def captured(layers: list[int]) -> torch.Tensor:
        with torch.no_grad(), capture_joint_attention(model, layers):
            return model(**inputs)[0]

    reference, plain_s = timed(plain, repeats=repeats)
    rows = [{"pass": "plain (baseline)", "layers": 0, "seconds": plain_s, "ratio": 1.0, "output_unchanged": True}]
    for what, layers in ((f"capture block {blocks - 1}", [blocks - 1]),
                         (f"capture all {blocks} blocks", list(range(blocks)))):
        out, seconds = timed(lambda layers=layers: captured(layers), repeats=repeats)
        rows.append({"pass": what, "layers": len(layers), "seconds": seconds, "ratio": seconds / plain_s,
                     "output_unchanged": bool(torch.equal(out, reference))})
    return {"model": "tiny SD3 transformer (random weights; 3 joint blocks, 2 heads of 8)", "latent_side": side,
            "image_tokens": (side // 2) ** 2, "text_tokens": text_tokens, "repeats": repeats,
            "device": device_info(dev), "rows": rows}


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def cpu_peak_in_this_process(image_tokens: int, text_tokens: int, heads: int, head_dim: int,
                             query_chunk: int | None) -> float:
    """MiB the resident set rises above its size before one :func:`joint_probabilities` call (q/k held).

    The high-water mark (``VmHWM``) is reset to the current resident set just before the call (Linux:
    ``/proc/self/clear_refs``), so an earlier peak (importing torch) does not hide the call's. Run it in a
    fresh process: memory an earlier call freed into the allocator would be counted as already resident.
    """
    generator = torch.Generator().manual_seed(0)
    length = image_tokens + text_tokens
    query = torch.randn(1, heads, length, head_dim, generator=generator)
    key = torch.randn(1, heads, length, head_dim, generator=generator)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")  # reset the peak resident set size to the current one
    joint_probabilities(query, key, slice(0, image_tokens), slice(image_tokens, length), query_chunk)
    return (_status_kib("VmHWM") - before) / 1024.0


def _cpu_peak(image_tokens: int, text_tokens: int, heads: int, head_dim: int, query_chunk: int | None) -> float:
    """:func:`cpu_peak_in_this_process` run in a fresh process with one torch thread."""
    code = ("import torch\nfrom eval.bench.mmdit import cpu_peak_in_this_process\ntorch.set_num_threads(1)\n"
            f"print(cpu_peak_in_this_process({image_tokens}, {text_tokens}, {heads}, {head_dim}, {query_chunk!r}))")
    root = str(Path(__file__).resolve().parents[2])  # where diffseg/ and eval/ are importable from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory measurement failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _cuda_peak(device: torch.device, image_tokens: int, text_tokens: int, heads: int, head_dim: int,
               query_chunk: int | None) -> float:
    """MiB that ``torch.cuda.max_memory_allocated`` rises above the allocation before the call (q/k held)."""
    generator = torch.Generator(device=device).manual_seed(0)
    length = image_tokens + text_tokens
    query = torch.randn(1, heads, length, head_dim, generator=generator, device=device)
    key = torch.randn(1, heads, length, head_dim, generator=generator, device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = joint_probabilities(query, key, slice(0, image_tokens), slice(image_tokens, length), query_chunk)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result, query, key
    torch.cuda.empty_cache()
    return peak / _MIB


def probability_peak_memory(image_tokens: int = 4096, text_tokens: int = 154, heads: int = 24, head_dim: int = 64,
                            chunk: int = DEFAULT_QUERY_CHUNK, device: str | None = "cpu") -> dict[str, Any]:
    """Peak extra memory of one layer's probabilities in ``chunk``-query chunks and unchunked (the baseline)."""
    dev = resolve_device(device)
    how = ("torch.cuda.max_memory_allocated above the allocation before the call" if dev.type == "cuda" else
           "resident-set high-water increase (VmHWM reset before the call) in a fresh process, one thread")
    rows = []
    for query_chunk in (None, chunk):
        measured = (_cuda_peak(dev, image_tokens, text_tokens, heads, head_dim, query_chunk) if dev.type == "cuda"
                    else _cpu_peak(image_tokens, text_tokens, heads, head_dim, query_chunk))
        bound = joint_capture_peak_bytes(1, image_tokens, text_tokens, heads, query_chunk, head_dim) / _MIB
        rows.append({"query_chunk": query_chunk, "measured_mib": measured, "computed_bound_mib": bound})
    base = rows[0]["measured_mib"]
    for row in rows:
        row["ratio"] = row["measured_mib"] / base if base > 0 else None
    return {"image_tokens": image_tokens, "text_tokens": text_tokens, "heads": heads, "head_dim": head_dim,
            "full_probabilities_mib": 4 * heads * image_tokens * (image_tokens + text_tokens) / _MIB,
            "measure": how, "device": device_info(dev), "rows": rows}


def run_bench(side: int = 64, text_tokens: int = 154, repeats: int = 3, memory_image_tokens: int = 4096,
              heads: int = 24, head_dim: int = 64, chunk: int = DEFAULT_QUERY_CHUNK,
              device: str | None = "cpu") -> dict[str, Any]:
    """Both sections (module docstring)."""
    return {**run_provenance(resolve_device(device)),
            "capture_overhead": capture_overhead(side, text_tokens, repeats, device),
            "peak_memory": probability_peak_memory(memory_image_tokens, text_tokens, heads, head_dim, chunk, device)}


def render(result: dict[str, Any]) -> str:
    """The report as text: what produced it (:func:`eval.bench.report.header_lines`), then the two tables, each
    with its setup line."""
    cap, mem = result["capture_overhead"], result["peak_memory"]
    lines = [*header_lines(result),
             f"MM-DiT capture overhead: {cap['model']}, {cap['image_tokens']} image + {cap['text_tokens']} text "
             f"tokens, batch 1, float32; device: {cap['device']['name']}; median of {cap['repeats']}",
             "ratio = captured s / plain s, both measured in this run (an upper bound for SD3's real blocks)", ""]
    rows = [[r["pass"], f"{r['seconds']:.4f}", f"{r['ratio']:.2f}x", "yes" if r["output_unchanged"] else "NO"]
            for r in cap["rows"]]
    lines += markdown_rows(["pass", "seconds/pass", "ratio", "output unchanged"], rows,
                           ["---", "---:", "---:", ":---:"]).splitlines()
    lines += ["", f"Peak memory of one captured layer's probabilities: {mem['image_tokens']} image + "
              f"{mem['text_tokens']} text tokens, {mem['heads']} heads of {mem['head_dim']}, batch 1, float32 "
              f"(the full tensor: {mem['full_probabilities_mib']:.1f} MiB); measure: {mem['measure']}; "
              f"device: {mem['device']['name']}", "ratio = measured / unchunked measured, both in this run", ""]
    rows = [["none (baseline)" if r["query_chunk"] is None else str(r["query_chunk"]), f"{r['measured_mib']:.1f}",
             f"{r['computed_bound_mib']:.1f}", "-" if r["ratio"] is None else f"{r['ratio']:.3f}x"]
            for r in mem["rows"]]
    lines += markdown_rows(["query_chunk", "measured peak (MiB)", "computed bound (MiB)", "ratio"], rows,
                           ["---", "---:", "---:", "---:"]).splitlines()
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench.mmdit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=64, help="latent side of the timed pass (64: 1024 image tokens)")
    parser.add_argument("--text-tokens", type=int, default=154, help="text tokens (154: SD3's CLIP + T5 slots)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per pass (median)")
    parser.add_argument("--memory-image-tokens", type=int, default=4096, help="image tokens of the memory rows "
                        "(4096: SD3 at 1024 px)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_QUERY_CHUNK, help="query chunk of the chunked row")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    add_common_options(parser, "torch CPU threads of the timed passes")
    args = parser.parse_args(argv)
    result = run_and_report(parser, args, lambda: run_bench(args.side, args.text_tokens, args.repeats,
                                                            args.memory_image_tokens, chunk=args.chunk,
                                                            device=args.device), render)
    return 0 if all(r["output_unchanged"] for r in result["capture_overhead"]["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
