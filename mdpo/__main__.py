"""``python -m mdpo`` is the ``mdpo`` command."""

import sys

from mdpo.cli.main import main

sys.exit(main())
