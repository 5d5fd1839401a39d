"""``python -m lerobot_stream_loader.cli``: the same as the ``lerobot-stream`` command."""

import sys

from . import main

sys.exit(main())
