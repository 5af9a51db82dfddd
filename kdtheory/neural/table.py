"""Entry point ``python -m kdtheory.neural.table``: the λ-path comparison table of Gorpinich et al..

The code lives in :mod:`kdtheory.neural.experiments.table`.
"""

import sys

from kdtheory.neural.experiments.table import main

if __name__ == "__main__":
    sys.exit(main())
