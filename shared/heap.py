"""The garbage collector in long-lived processes on a job's way: what start-up made is left out of it."""
from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect once, then move every object that survived start-up (imported modules, the Celery
    app, SQLAlchemy's tables and compiled statements, templates) to the permanent generation: they
    live as long as the process, and a full collection that scans them took 30–50 ms in the
    scheduler and the render worker, the first one after start-up landing on a job's way to its
    worker (docs/benchmarks.md, "(a) on the path, eleventh sitting"). Later full collections scan
    only what was made since."""
    gc.collect()
    gc.freeze()
