"""The application with a failpoint injected: each worker ends itself (``os._exit(137)``, as a
SIGKILL would) right after a mail's rows are committed, before it answers.

``uvicorn tests.reliability.failpoint:app`` serves it (``servers.start(..., app=...)``); nothing
of this is in ``app/``, so no setting can turn it on in production. Importing this module
injects the failpoint into the importing process: only the server imports it.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from app.inbound.pipeline import Pipeline
from app.main import create_app as create_real_app


def crash_after_commit() -> None:
    """Wrap the point where a delivery's transaction has committed and the answer is next."""
    committed = Pipeline.committed

    def crash(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        committed(self, *args, **kwargs)
        os._exit(137)

    Pipeline.committed = crash  # type: ignore[method-assign]


def create_app() -> FastAPI:
    crash_after_commit()
    return create_real_app()


app = create_app()
