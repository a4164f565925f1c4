"""`python -m llmcycle` is the `llmcycle` command."""

import sys

from llmcycle.cli import main

sys.exit(main())
