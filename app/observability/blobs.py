"""The blob store's failures, counted around whichever store the settings chose.

``metered(store)`` answers every attribute of ``store``; its coroutine methods and async
generators (puts, reads, deletes, listings, whatever a store adds) count each call that raises
in ``mailslot_blob_store_errors_total{operation}`` and re-raise it unchanged. A missing blob
(``FileNotFoundError``) is an answer, not a failure. Each method is wrapped once, on first use.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from app.blobs.store import BlobStore
from app.observability import metrics


class MeteredBlobStore:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"metered({self.store!r})"

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.store, name)
        if inspect.isasyncgenfunction(value):
            value = _counting_iterator(name, value)
        elif inspect.iscoroutinefunction(value):
            value = _counting_call(name, value)
        else:
            return value  # attributes and plain methods: looked up on the store each time
        self.__dict__[name] = value  # found here from now on, without __getattr__
        return value


def _counting_call(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception:
            metrics.blob_error(operation)
            raise

    return call


def _counting_iterator(operation: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def iterate(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        inner = method(*args, **kwargs)
        try:
            async for item in inner:
                yield item
        except FileNotFoundError:
            raise
        except Exception:
            metrics.blob_error(operation)
            raise
        finally:
            await inner.aclose()

    return iterate


def metered(store: BlobStore) -> BlobStore:
    """``store``, its failures counted (a store already metered is returned as it is)."""
    if isinstance(store, MeteredBlobStore):
        return cast(BlobStore, store)
    return cast(BlobStore, MeteredBlobStore(store))
