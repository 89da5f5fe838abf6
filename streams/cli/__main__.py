"""``python -m streams.cli``: the ``sieve`` command."""

import sys

from streams.cli.main import main

sys.exit(main())
