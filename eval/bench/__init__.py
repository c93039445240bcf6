"""Benchmarks of the fast path against plain baselines (``eval/bench/baselines/``).

``python -m eval.bench`` (``make bench``): every pipeline stage, fast against baseline
(:mod:`eval.bench.pipeline`; pieces in :mod:`~eval.bench.timing`, :mod:`~eval.bench.postprocessing`,
:mod:`~eval.bench.precision`, :mod:`~eval.bench.report`, :mod:`~eval.bench.provenance`: the code id,
versions, device, threads and load average at the top of every report). ``python -m eval.bench.diffcut`` (also run by
``make bench``): DiffCut's clustering against the release-style port. Reports go to new files under
``outputs/bench/`` unless ``--out`` names one.
"""
