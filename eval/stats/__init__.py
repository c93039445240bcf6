"""Statistics of method comparisons over per-image matching stats (numpy and scipy only).

* :mod:`eval.stats.scores`: dataset-level ACC / IoU / mIoU of summed stats, vectorised
  (the one scores function; :func:`eval.metrics.scores` is its single-row form);
* :mod:`eval.stats.resample`: bootstrap resample weights and exact weighted sums;
* :mod:`eval.stats.intervals`: bootstrap-t, percentile and BCa intervals, the seed-combined interval;
* :mod:`eval.stats.significance`: the delta-method standard error, the studentised paired
  bootstrap test, the sign-flip test, Holm's adjustment and the minimal detectable difference;
* :mod:`eval.stats.analysis`: :class:`ImageStats` and :func:`analyse`, which put them together;
* :mod:`eval.stats.calibration`: simulated populations and the calibration figures
  (``python -m eval.stats.calibration``).

No module here imports torch, diffusers or transformers.
"""
