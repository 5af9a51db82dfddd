"""Entry point ``python -m kdtheory.neural.train``: train one model (teacher or student), with or without KD.

The code lives in :mod:`kdtheory.neural.experiments.train`.
"""

import sys

from kdtheory.neural.experiments.train import main

if __name__ == "__main__":
    sys.exit(main())
