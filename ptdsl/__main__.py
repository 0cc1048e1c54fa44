"""`python -m ptdsl …` runs the command line (also under `accelerate launch -m ptdsl`)."""
import sys

from ptdsl.cli.main import main

sys.exit(main())
