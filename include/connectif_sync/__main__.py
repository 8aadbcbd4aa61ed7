"""``python -m connectif_sync``: the command line of :mod:`connectif_sync.cli`."""

from __future__ import annotations

import sys

from connectif_sync.cli import main

if __name__ == "__main__":
    sys.exit(main())
