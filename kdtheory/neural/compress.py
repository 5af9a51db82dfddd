"""Entry point ``python -m kdtheory.neural.compress``: the compression study (students of several sizes, KD against no KD).

The code lives in :mod:`kdtheory.neural.experiments.compress`.
"""

import sys

from kdtheory.neural.experiments.compress import main

if __name__ == "__main__":
    sys.exit(main())
