"""``python -m adapters.training.trainer``: the reference trainer (``reference.py``)."""

import sys

from adapters.training.trainer.reference import main

sys.exit(main())
