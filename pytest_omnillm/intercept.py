"""See every HTTP request `httpx` and `httpx2` clients send, sync and async, before it leaves.

The OpenAI (>= 3) and Anthropic (>= 1) SDKs send through `httpx2`; older SDKs and many apps use
`httpx`. Both libraries funnel each attempt (every retry, every redirect hop) through
``Client._send_single_request`` / ``AsyncClient._send_single_request``, right where the client
hands the request to its transport, whatever the transport is. We wrap that method once per
class, and dispatch to the innermost active `Handler` (a pytester run inside a test run has its
own). With no handler active the wrapper only calls through.

Patching happens when a module is imported (a post-import hook on ``sys.meta_path``), never by
importing ``httpx`` ourselves: `httpx2.alias_httpx()` requires that nothing imported ``httpx``
before it.

For a recognised LLM endpoint the handler's `Handler.start` may raise (the request is refused:
nothing is sent) or return a `Flight`; the response's status is then reported to the flight
and its body bytes are copied to it as the application reads them (the application still gets
every byte, unchanged, at the pace it asks for). `Flight` methods must never raise.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from pytest_omnillm.adapters import Endpoint, match_endpoint

__all__ = ["Flight", "Handler", "RequestInfo", "install", "pop_handler", "push_handler"]

_TARGETS = ("httpx", "httpx2")
_PATCHED = "__omnillm_patched__"
_CONNECT_ERRORS = {"ConnectError", "ConnectTimeout", "UnsupportedProtocol", "LocalProtocolError"}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One outgoing request to a recognised endpoint."""

    endpoint: Endpoint
    method: str
    url: str
    body: bytes
    library: str
    content_encoding: str = ""  # the request body's Content-Encoding header


class Flight(Protocol):
    """The handler's view of one request in flight; no method may raise."""

    def failed(self, exc: BaseException, *, sent: bool) -> None:
        """The request raised before a response arrived (``sent=False``: never left)."""

    def response(self, status: int, content_type: str, content_encoding: str) -> bool:
        """The response's status arrived; return True to observe its body."""

    def chunk(self, data: bytes) -> None:
        """The next raw body chunk the application read."""

    def done(self) -> None:
        """The body ended or the response was closed (may be called more than once)."""


class Handler(Protocol):
    """Decides what happens to each LLM request."""

    def start(self, info: RequestInfo) -> Flight | None:
        """Admit (return a flight, or None to ignore) or refuse (raise) a request."""


_handlers: list[Handler] = []
_lock = threading.Lock()


def push_handler(handler: Handler) -> None:
    """Make ``handler`` receive every request (until `pop_handler`); installs the hooks."""
    install()
    with _lock:
        _handlers.append(handler)


def pop_handler(handler: Handler) -> None:
    """Stop sending requests to ``handler`` (the one below it, if any, takes over)."""
    with _lock:
        if handler in _handlers:
            _handlers.remove(handler)


def _current() -> Handler | None:
    return _handlers[-1] if _handlers else None


def _is_connect_error(exc: BaseException) -> bool:
    return any(cls.__name__ in _CONNECT_ERRORS for cls in type(exc).__mro__)


def _stream_classes(module: ModuleType) -> tuple[type[Any], type[Any]]:
    sync_base: type[Any] = module.SyncByteStream
    async_base: type[Any] = module.AsyncByteStream

    class ObservedStream(sync_base):  # type: ignore[misc]
        def __init__(self, inner: Any, flight: Flight) -> None:
            self._inner = inner
            self._flight = flight

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self._inner:
                    self._flight.chunk(chunk)
                    yield chunk
            finally:
                self._flight.done()

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._flight.done()

        def __getattr__(self, name: str) -> Any:  # e.g. ``elapsed`` of httpx2's bound stream
            return getattr(self._inner, name)

    class ObservedAsyncStream(async_base):  # type: ignore[misc]
        def __init__(self, inner: Any, flight: Flight) -> None:
            self._inner = inner
            self._flight = flight

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._inner:
                    self._flight.chunk(chunk)
                    yield chunk
            finally:
                self._flight.done()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._flight.done()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    return ObservedStream, ObservedAsyncStream


def _prepare(request: Any) -> tuple[Handler, Endpoint] | None:
    handler = _current()
    if handler is None:
        return None
    endpoint = match_endpoint(request.method, request.url.path)
    if endpoint is None:
        return None
    return handler, endpoint


def _observe(response: Any, flight: Flight, wrap: Callable[[Any, Flight], Any]) -> None:
    headers = response.headers
    watch = flight.response(
        response.status_code,
        headers.get("content-type", ""),
        headers.get("content-encoding", ""),
    )
    if watch:
        response.stream = wrap(response.stream, flight)
    else:
        flight.done()


def _patch_module(module: ModuleType) -> None:
    client_cls = getattr(module, "Client", None)
    async_cls = getattr(module, "AsyncClient", None)
    if client_cls is None or async_cls is None:
        return
    sync_original = getattr(client_cls, "_send_single_request", None)
    async_original = getattr(async_cls, "_send_single_request", None)
    if sync_original is None or async_original is None:
        import warnings

        warnings.warn(
            f"pytest-omnillm cannot intercept {module.__name__} "
            f"{getattr(module, '__version__', '?')}: no _send_single_request",
            stacklevel=2,
        )
        return
    if getattr(sync_original, _PATCHED, False):
        return
    library = module.__name__
    observed_sync, observed_async = _stream_classes(module)

    def send_single_request(self: Any, request: Any) -> Any:
        __tracebackhide__ = True
        prepared = _prepare(request)
        if prepared is None:
            return sync_original(self, request)
        handler, endpoint = prepared
        body = request.read()
        info = RequestInfo(
            endpoint, request.method, str(request.url), body, library,
            request.headers.get("content-encoding", ""),
        )
        flight = handler.start(info)  # raises to refuse: nothing is sent
        if flight is None:
            return sync_original(self, request)
        try:
            response = sync_original(self, request)
        except BaseException as exc:
            flight.failed(exc, sent=not _is_connect_error(exc))
            raise
        _observe(response, flight, observed_sync)
        return response

    async def async_send_single_request(self: Any, request: Any) -> Any:
        __tracebackhide__ = True
        prepared = _prepare(request)
        if prepared is None:
            return await async_original(self, request)
        handler, endpoint = prepared
        body = await request.aread()
        info = RequestInfo(
            endpoint, request.method, str(request.url), body, library,
            request.headers.get("content-encoding", ""),
        )
        flight = handler.start(info)
        if flight is None:
            return await async_original(self, request)
        try:
            response = await async_original(self, request)
        except BaseException as exc:
            flight.failed(exc, sent=not _is_connect_error(exc))
            raise
        _observe(response, flight, observed_async)
        return response

    for wrapper, original in (
        (send_single_request, sync_original),
        (async_send_single_request, async_original),
    ):
        setattr(wrapper, _PATCHED, True)
        wrapper.__dict__["__wrapped__"] = original
        wrapper.__doc__ = original.__doc__
    client_cls._send_single_request = send_single_request
    async_cls._send_single_request = async_send_single_request


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the freshly executed module."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _patch_module(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``httpx`` / ``httpx2`` so they are patched as they are imported."""

    _local = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _TARGETS or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._local.busy = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


_installed = False


def install() -> None:
    """Patch ``httpx``/``httpx2`` now if imported, else when they are (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        sys.meta_path.insert(0, _PostImportFinder())
    for name in _TARGETS:
        module = sys.modules.get(name)
        if module is not None:
            _patch_module(module)
