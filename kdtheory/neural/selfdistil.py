"""Entry point ``python -m kdtheory.neural.selfdistil``: multi-stage self-distillation under label noise.

The code lives in :mod:`kdtheory.neural.experiments.selfdistil`.
"""

import sys

from kdtheory.neural.experiments.selfdistil import main

if __name__ == "__main__":
    sys.exit(main())
