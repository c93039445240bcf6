"""See it: ``python -m eval.explore`` opens DiffSeg in the browser (Gradio, the ``explore`` extra).

* one image (``--model MODEL --image IMG``): :mod:`eval.explore.session` keeps each image's
  backbone attention (the project's attention cache, :mod:`eval.run.cache`) and re-segments from it
  while the controls move; :mod:`eval.explore.image_app` is its page;
* one run or two (``RUN_DIR [RUN_B]``): :mod:`eval.explore.runs` reads run folders (records,
  provenance, saved masks); :mod:`eval.explore.run_app` is its page.

The reading and segmenting modules do not import Gradio, so they are tested without the extra.
"""
