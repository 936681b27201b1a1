"""`python -m raydistill.cli` is the `raydistill` command."""

import sys

from raydistill.cli import main

sys.exit(main())
