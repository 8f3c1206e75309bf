"""`python -m terminal.cli`: the `pipos` command without its installed script."""

import sys

from terminal.cli import main

sys.exit(main())
