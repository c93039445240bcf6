"""``python -m eval.merge``: shard folders merged into one run (:mod:`eval.run.merge`)."""

import sys

from eval.run.merge import main

if __name__ == "__main__":
    sys.exit(main())
