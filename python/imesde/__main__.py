"""``python -m imesde``: the same as the ``imesde`` command."""

import sys

from imesde.cli import main

sys.exit(main())
