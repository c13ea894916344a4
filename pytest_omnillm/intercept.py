"""See every HTTP request `httpx` and `httpx2` clients send, sync and async, before it leaves.

The OpenAI (>= 3) and Anthropic (>= 1) SDKs send through `httpx2`; older SDKs and many apps use
`httpx`. Both libraries funnel each attempt (every retry, every redirect hop) through
``Client._send_single_request`` / ``AsyncClient._send_single_request``, right where the client
hands the request to its transport, whatever the transport is. We wrap that method once per
class, and dispatch to the innermost active `Handler` (a pytester run inside a test run has its
own). With no handler active the wrapper only calls through.

Patching happens when a module is imported (a post-import hook on ``sys.meta_path``), never by
importing ``httpx`` ourselves: `httpx2.alias_httpx()` requires that nothing imported ``httpx``
before it. The plugin installs the hook when pytest imports it, before any conftest, so a
library that saves ``_send_single_request`` at its import (vcrpy 7) saves our wrapper. A
library imported earlier may still put its own method in place of ours later: `verify` (run
at every test's setup) finds such a replacement by identity and wraps it again. A request that
reaches a second wrapper of ours (a replacement that calls the method it saved) is handled by
the outer one only.

A response that came from no network connection (``network_stream`` is missing from its
``extensions``, and the client's transport is one of the library's own, so a mock patched into
it or a cassette replayed it) is reported to the flight as replayed. Custom transports count as
live: they may reach the network without saying so.

For a recognised LLM endpoint the handler's `Handler.start` may raise (the request is refused:
nothing is sent) or return a `Flight`; the response's status is then reported to the flight
and its body bytes are copied to it as the application reads them (the application still gets
every byte, unchanged, at the pace it asks for). `Flight` methods must never raise.
"""

from __future__ import annotations

import contextvars
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # adapters (and the price tables under it) load at the first request
    from pytest_omnillm.adapters import Endpoint

__all__ = [
    "Flight",
    "Handler",
    "RequestInfo",
    "install",
    "pop_handler",
    "push_handler",
    "verify",
]

_TARGETS = ("httpx", "httpx2")
_PATCHED = "__omnillm_patched__"
_CONNECT_ERRORS = {"ConnectError", "ConnectTimeout", "UnsupportedProtocol", "LocalProtocolError"}
_OWN_TRANSPORTS = (
    "HTTPTransport",
    "AsyncHTTPTransport",
    "MockTransport",
    "WSGITransport",
    "ASGITransport",
)
# The request an outer wrapper of ours is sending in this context (thread or task).
_sending: contextvars.ContextVar[Any] = contextvars.ContextVar("omnillm_sending", default=None)


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

    def replayed(self) -> None:
        """The response came from no network connection (a mock or a cassette replay)."""

    def redirected(self, status: int) -> None:
        """The response is a redirect (3xx): this hop ends here, the next is its own request."""


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
    from pytest_omnillm.adapters import match_endpoint

    endpoint = match_endpoint(request.method, request.url.path)
    if endpoint is None:
        return None
    return handler, endpoint


def _is_replay(module: ModuleType, client: Any, request: Any, response: Any) -> bool:
    if "network_stream" in response.extensions:
        return False
    try:
        transport = client._transport_for_url(request.url)
    except Exception:
        return False
    own = tuple(getattr(module, name) for name in _OWN_TRANSPORTS if hasattr(module, name))
    return isinstance(transport, own)


def _observe(response: Any, flight: Flight, wrap: Callable[[Any, Flight], Any]) -> None:
    headers = response.headers
    if 300 <= response.status_code < 400:
        flight.redirected(response.status_code)
        return
    watch = flight.response(
        response.status_code,
        headers.get("content-type", ""),
        headers.get("content-encoding", ""),
    )
    if not watch:
        flight.done()
    elif hasattr(response, "_content"):  # built already read (a mock's Response(json=...))
        flight.chunk(response._content)
        flight.done()
    else:
        response.stream = wrap(response.stream, flight)


_streams: dict[str, tuple[type[Any], type[Any]]] = {}
# Every (module, client class, is_async) we patched: what `verify` checks at each test.
_patched: list[tuple[ModuleType, type[Any], bool]] = []
_METHOD = "_send_single_request"


def _wrap(module: ModuleType, cls: type[Any], original: Any, *, is_async: bool) -> None:
    """Put our wrapper around ``original`` as ``cls._send_single_request``."""
    library = module.__name__
    if library not in _streams:
        _streams[library] = _stream_classes(module)
    observed_sync, observed_async = _streams[library]

    def send_single_request(self: Any, request: Any) -> Any:
        __tracebackhide__ = True
        if _sending.get() is request:  # an outer wrapper of ours handles this request
            return original(self, request)
        prepared = _prepare(request)
        if prepared is None:
            return original(self, request)
        handler, endpoint = prepared
        body = request.read()
        info = RequestInfo(
            endpoint, request.method, str(request.url), body, library,
            request.headers.get("content-encoding", ""),
        )
        flight = handler.start(info)  # raises to refuse: nothing is sent
        token = _sending.set(request)
        if flight is None:
            try:
                return original(self, request)
            finally:
                _sending.reset(token)
        try:
            response = original(self, request)
        except BaseException as exc:
            flight.failed(exc, sent=not _is_connect_error(exc))
            raise
        finally:
            _sending.reset(token)
        if _is_replay(module, self, request, response):
            flight.replayed()
        _observe(response, flight, observed_sync)
        return response

    async def async_send_single_request(self: Any, request: Any) -> Any:
        __tracebackhide__ = True
        if _sending.get() is request:
            return await original(self, request)
        prepared = _prepare(request)
        if prepared is None:
            return await original(self, request)
        handler, endpoint = prepared
        body = await request.aread()
        info = RequestInfo(
            endpoint, request.method, str(request.url), body, library,
            request.headers.get("content-encoding", ""),
        )
        flight = handler.start(info)
        token = _sending.set(request)
        if flight is None:
            try:
                return await original(self, request)
            finally:
                _sending.reset(token)
        try:
            response = await original(self, request)
        except BaseException as exc:
            flight.failed(exc, sent=not _is_connect_error(exc))
            raise
        finally:
            _sending.reset(token)
        if _is_replay(module, self, request, response):
            flight.replayed()
        _observe(response, flight, observed_async)
        return response

    wrapper: Any = async_send_single_request if is_async else send_single_request
    setattr(wrapper, _PATCHED, True)
    wrapper.__dict__["__wrapped__"] = original
    wrapper.__doc__ = getattr(original, "__doc__", None)
    setattr(cls, _METHOD, wrapper)


def _classes(module: ModuleType) -> list[tuple[type[Any], bool]]:
    found = []
    for name, is_async in (("Client", False), ("AsyncClient", True)):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            found.append((cls, is_async))
    return found


def _patch_module(module: ModuleType) -> None:
    classes = _classes(module)
    if len(classes) != 2:
        return
    for cls, _is_async in classes:
        original = cls.__dict__.get(_METHOD)
        if original is None:
            import warnings

            warnings.warn(
                f"pytest-omnillm cannot intercept {module.__name__} "
                f"{getattr(module, '__version__', '?')}: no {_METHOD}",
                stacklevel=2,
            )
            return
    for cls, is_async in classes:
        original = cls.__dict__[_METHOD]
        if not getattr(original, _PATCHED, False):
            _wrap(module, cls, original, is_async=is_async)
        if not any(c is cls for _, c, _ in _patched):
            _patched.append((module, cls, is_async))


def verify() -> list[str]:
    """Check that our wrapper is still ``_send_single_request`` of every patched client class.

    Another library may have put its own method there after us (and may call the original it
    saved, which may not be ours): the replacement is wrapped in turn, so every request still
    passes through us exactly once. Costs two dict look-ups per class: it runs at every test.
    Returns one line per class wrapped again.

    Raises:
        RuntimeError: a client class has no ``_send_single_request`` any more (the plugin
            could not see its requests).
    """
    notes: list[str] = []
    for module, cls, is_async in _patched:
        current = cls.__dict__.get(_METHOD)
        if getattr(current, _PATCHED, False):
            continue
        name = module.__name__
        if current is None or not callable(current):
            raise RuntimeError(
                f"pytest-omnillm: {name}.{cls.__name__}.{_METHOD} was removed by another "
                "library: LLM requests cannot be budgeted; refusing to run unbudgeted"
            )
        who = getattr(current, "__module__", None) or type(current).__module__
        _wrap(module, cls, current, is_async=is_async)
        notes.append(f"{name}.{cls.__name__}.{_METHOD} was replaced by {who}: wrapped again")
    return notes


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
