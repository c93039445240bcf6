"""``python -m eval.run``: the Hydra entry point of :func:`eval.run.runner.evaluate`."""

from eval.run.runner import main

if __name__ == "__main__":
    main()
