"""``python -m candlewire`` is the ``candlewire`` command."""

import sys

from candlewire.cli import main

sys.exit(main())
