"""``python -m eval.tables``: the tables of finished runs (:mod:`eval.report.tables`)."""

import sys

from eval.report.tables import main

if __name__ == "__main__":
    sys.exit(main())
