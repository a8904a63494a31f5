"""``python -m hmil`` is the same as the ``hmil`` command."""

import sys

from hmil.cli import main

sys.exit(main())
