"""Statistics of method comparisons over per-image matching stats (numpy and scipy only).

The scores themselves (dataset-level ACC / IoU / mIoU of summed stats, vectorised) are the metric's:
:mod:`eval.metrics.summed_scores`, imported from there.

* :mod:`eval.stats.resample`: bootstrap resample weights and exact weighted sums;
* :mod:`eval.stats.intervals`: bootstrap-t, percentile and BCa intervals, the seed-combined interval;
* :mod:`eval.stats.significance`: the delta-method standard error, the studentised paired
  bootstrap test, the sign-flip test, Holm's adjustment and the minimal detectable difference;
* :mod:`eval.stats.analysis`: :class:`ImageStats` and :func:`analyse`, which put them together;
* :mod:`eval.stats.runs`: run folders as inputs (loading, comparability, seed groups);
* :mod:`eval.stats.comparison`: :func:`compare_runs` (``python -m eval.compare``) and the intervals
  it gives the tables (:func:`load_intervals`), written by :mod:`eval.stats.report` with
  :mod:`eval.stats.figures`;
* :mod:`eval.stats.calibration`: simulated populations and the calibration figures
  (``python -m eval.stats.calibration``).

No module here imports torch, diffusers or transformers.
"""
