"""Training with LeRobot's own ``lerobot-train`` on datasets this package streams (``lerobot-stream train``).

:func:`~lerobot_stream_loader.train.run.run_training` runs LeRobot's training script unchanged with
the dataset built here (:mod:`.build`): one dataset or a weighted mixture, ``--stream.*`` and
``--mix.*`` options (:mod:`.options`), the loader's state saved in every checkpoint and resumed
(:mod:`.checkpoint`), through three small hooks (:mod:`.hooks`). LeRobot is optional: only
:mod:`.lerobot_api` and :mod:`.hooks` import it, when training runs.
"""

from __future__ import annotations
