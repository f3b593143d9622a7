"""``python -m fseft_lab.cli``: the ``fseft-lab`` command."""
import sys

from fseft_lab.cli import main

sys.exit(main())
