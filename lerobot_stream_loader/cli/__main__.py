"""``python -m lerobot_stream_loader.cli``: the same as the ``lerobot-stream`` command."""

import sys

from . import main

if __name__ == "__main__":  # helper processes of a spawned pool import this module
    sys.exit(main())
