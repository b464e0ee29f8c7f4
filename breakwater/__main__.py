"""`python -m breakwater` is the `breakwater` command."""

import sys

from breakwater.cli import main

sys.exit(main())
