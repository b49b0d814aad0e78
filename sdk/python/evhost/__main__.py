"""`python -m evhost build FILE -o OUT`: see `evhost._cli`."""

import sys

from ._cli import main

sys.exit(main())
