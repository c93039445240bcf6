"""Plain baselines the benchmarks time the fast path against; the tests use them as reference paths.

``naive_diffseg``: DiffSeg's post-processing as a direct port of the official segmentor;
``naive_diffcut``: DiffCut's clustering as the public release runs it. Neither shares code with ``diffseg``.
"""
