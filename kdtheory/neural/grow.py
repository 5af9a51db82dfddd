"""Entry point ``python -m kdtheory.neural.grow``: the anti-distillation study of Petrushina et al..

The code lives in :mod:`kdtheory.neural.experiments.grow`.
"""

import sys

from kdtheory.neural.experiments.grow import main

if __name__ == "__main__":
    sys.exit(main())
