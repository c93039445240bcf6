"""``python -m eval.bench``: the pipeline benchmark (:func:`eval.bench.pipeline.main`)."""

import sys

from eval.bench.pipeline import main

sys.exit(main())
