"""A process that holds an intercept mount on a folder until SIGTERM (then unmounts) or
SIGKILL (then leaves a dead mount behind, as a killed agent does). Prints "mounted" once the
mount is live. Used by tests/integration/test_capture_leftovers.py."""

from __future__ import annotations

import signal
import sys
import threading

from tandem.replicator.intercept import InterceptCapture
from tandem.replicator.ops import Op


class DiscardingSink:
    def submit(self, op: Op) -> None:
        pass


def main() -> None:
    capture = InterceptCapture(sys.argv[1], DiscardingSink())
    capture.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("mounted", flush=True)
    stop.wait()
    capture.stop()


if __name__ == "__main__":
    main()
