"""`python -m raysearch ...`: the CLI where the `raysearch` script is not installed (a checkout on PYTHONPATH)."""
import sys

from .cli import main

sys.exit(main())
