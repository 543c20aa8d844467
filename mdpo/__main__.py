"""``python -m mdpo`` is the ``mdpo`` command."""

import sys

from mdpo.cli import main

sys.exit(main())
