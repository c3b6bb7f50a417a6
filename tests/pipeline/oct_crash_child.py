"""The appliance as its own process for tests/pipeline/test_oct_crash.py.

``python -m tests.pipeline.oct_crash_child CONFIG [STEP]`` starts what ``appliance serve``
starts for a camera (the DICOM SCP, the pipeline worker, the forwarder) on the settings in
CONFIG and prints ``READY``. With STEP, the worker stops at that step (``Pipeline.step_hook``),
prints ``AT STEP`` and waits there: the test kills the process with SIGKILL at that moment,
so the crash happens at a known point of the work, not at a time raced against the clock.
"""

from __future__ import annotations

import logging
import sys
import threading

from appliance import config
from appliance.runtime.services import Services


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = config.load(argv[0], environ={})
    stop_at = argv[1] if len(argv) > 1 else None
    services = Services(settings)

    def hook(step: str) -> None:
        if step == stop_at:
            print(f"AT {step}", flush=True)
            threading.Event().wait()  # until the test kills the process

    services.pipeline.step_hook = hook
    services.start(hotfolder=False)
    print("READY", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
