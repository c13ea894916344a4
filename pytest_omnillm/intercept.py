"""See every HTTP request `httpx`, `httpx2` and `aiohttp` clients send, before it leaves.

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
before and after every test's setup) finds such a replacement by identity and wraps it again.
A request that reaches a second wrapper of ours (a replacement that calls the method it saved)
is handled by the outer one only.

A response that came from no network connection (``network_stream`` is missing from its
``extensions``, and the client's transport is one of the library's own, so a mock patched into
it or a cassette replayed it) is reported to the flight as replayed. Custom transports count as
live: they may reach the network without saying so.

aiohttp has no transport seam: every call of an ``aiohttp.ClientSession`` goes through
``ClientSession._request``, which also follows the redirects (so a redirected request is one
flight, charged once). We wrap it the same way, when ``aiohttp`` is imported. The request body
is read from the ``json``/``data`` arguments as aiohttp will send it (an async iterable body is
read first and passed on as bytes). The response's ``content`` reader is replaced by a proxy
that copies each byte to the flight as the application takes it, whichever read method it uses,
and its ``release``/``close`` end the flight. A response that was never read from a connection
(``_protocol`` unset: aioresponses, or any mock in place of ``_request``) is replayed. An
aiohttp request made while an outer wrapper of ours is sending (an httpx client on an aiohttp
transport) is left to that wrapper. ``aioresponses().start()`` runs `verify` so a mock started
inside a test body is wrapped too.

For a recognised LLM endpoint the handler's `Handler.start` may raise (the request is refused:
nothing is sent) or return a `Flight`; the response's status is then reported to the flight
and its body bytes are copied to it as the application reads them (the application still gets
every byte, unchanged, at the pace it asks for). `Flight` methods must never raise.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
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

_TARGETS = ("httpx", "httpx2", "aiohttp", "aioresponses")
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


_match_endpoint: Callable[[str, str], Endpoint | None] | None = None


def _set_match(
    match: Callable[[str, str], Endpoint | None],
) -> Callable[[str, str], Endpoint | None]:
    global _match_endpoint
    _match_endpoint = match
    return match


def _header(headers: Any, name: str) -> str:
    """``headers.get(name, "")`` of an httpx/httpx2 ``Headers`` (whose ``get`` raises and
    catches a KeyError inside for an absent header, the usual case here)."""
    return ", ".join(headers.get_list(name))


def _prepare(request: Any) -> tuple[Handler, Endpoint] | None:
    return _prepare_url(request.method, request.url.path)


def _prepare_url(method: str, path: str) -> tuple[Handler, Endpoint] | None:
    """The handler and endpoint of a request to ``path``, or None (not ours to budget)."""
    handler = _current()
    if handler is None:
        return None
    match = _match_endpoint
    if match is None:  # the adapters load at the first request
        from pytest_omnillm.adapters import match_endpoint

        match = _set_match(match_endpoint)
    endpoint = match(method, path)
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
        response.status_code, _header(headers, "content-type"), _header(headers, "content-encoding")
    )
    if not watch:
        flight.done()
    elif hasattr(response, "_content"):  # built already read (a mock's Response(json=...))
        flight.chunk(response._content)
        flight.done()
    else:
        response.stream = wrap(response.stream, flight)


_streams: dict[str, tuple[type[Any], type[Any]]] = {}


@dataclass(frozen=True, slots=True)
class _Patch:
    """One method we wrapped: what `verify` checks at each test, and how to wrap it again."""

    module: ModuleType
    cls: type[Any]
    method: str
    rewrap: Callable[[Any], None]  # wraps a replacement found in the method's place


_patched: list[_Patch] = []
# What `verify` found last: (a patched class's __dict__, method name, our wrapper there).
_checks: tuple[tuple[Mapping[str, Any], str, Any], ...] = ()
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
            _header(request.headers, "content-encoding"),
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
            _header(request.headers, "content-encoding"),
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


# -- aiohttp ------------------------------------------------------------------------------------

_AIOHTTP_METHOD = "_request"
# aiohttp errors raised before a request byte is written (connecting, or a URL it cannot use).
_AIOHTTP_UNSENT = {
    "ClientConnectorError",
    "ConnectionTimeoutError",
    "InvalidURL",
    "NonHttpUrlClientError",
}
_READS = ("read", "readany", "readexactly", "readline", "readuntil", "read_nowait")


def _aiohttp_unsent(exc: BaseException) -> bool:
    return any(cls.__name__ in _AIOHTTP_UNSENT for cls in type(exc).__mro__)


def _raised_status(exc: BaseException) -> int | None:
    """The error status of a response that ``raise_for_status`` turned into an exception.

    A ``ClientResponseError`` raised while parsing a response (a bad status line) has the
    parser's error as its cause: nothing says the provider did not bill it, so it is None.
    """
    status = getattr(exc, "status", None)
    if type(exc).__name__ != "ClientResponseError" or exc.__cause__ is not None:
        return None
    return status if isinstance(status, int) and status >= 400 else None


class _ObservedContent:
    """Stands in for a response's ``content`` (a ``StreamReader``), copying what is read.

    Every way to read the body (iteration by line, ``iter_chunked``, ``iter_any``,
    ``iter_chunks``, ``readline``, ``read``, and ``ClientResponse.read/json/text``, which call
    ``content.read``) goes through one of `_READS` or `readchunk`, so each byte reaches the
    flight once, when the application takes it. Anything else goes to the real reader.
    """

    def __init__(self, inner: Any, flight: Flight, iterators: tuple[Any, Any]) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_flight", flight)
        object.__setattr__(self, "_iterators", iterators)

    def _took(self, data: bytes) -> None:
        if data:
            self._flight.chunk(data)
        if self._inner.at_eof():
            self._flight.done()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _READS:
            return attr
        if name == "read_nowait":

            def read_nowait(*args: Any, **kwargs: Any) -> bytes:
                data: bytes = attr(*args, **kwargs)
                self._took(data)
                return data

            return read_nowait

        async def read(*args: Any, **kwargs: Any) -> bytes:
            try:
                data: bytes = await attr(*args, **kwargs)
            except BaseException as exc:
                partial = getattr(exc, "partial", None)  # readexactly's IncompleteReadError
                if isinstance(partial, bytes) and partial:
                    self._flight.chunk(partial)
                self._flight.done()  # the body ended or broke off: settle from what was read
                raise
            self._took(data)
            return data

        return read

    async def readchunk(self) -> tuple[bytes, bool]:
        try:
            data, end = await self._inner.readchunk()
        except BaseException:
            self._flight.done()
            raise
        self._took(data)
        return data, end

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # isinstance(content, StreamReader) stays true
        return type(self._inner)

    def __aiter__(self) -> Any:
        return self._iterators[0](self.readline)

    def iter_chunked(self, n: int) -> Any:
        return self._iterators[0](lambda: self.read(n))

    def iter_any(self) -> Any:
        return self._iterators[0](self.readany)

    def iter_chunks(self) -> Any:
        return self._iterators[1](self)

    def __repr__(self) -> str:
        return repr(self._inner)


def _aiohttp_body(session: Any, kwargs: dict[str, Any]) -> bytes:
    """The request body as aiohttp will send it, if it can be read without consuming it.

    An async iterable body is read here and passed on as bytes (httpx, too, reads a streamed
    body into memory before sending it). Any other payload (a file, a form) gives ``b""``:
    the request is then unreadable for the budget.
    """
    body_json = kwargs.get("json")
    if body_json is not None:
        dumps_bytes = getattr(session, "_json_serialize_bytes", None)
        if dumps_bytes is not None:
            return bytes(dumps_bytes(body_json))
        return str(session._json_serialize(body_json)).encode("utf-8")
    data = kwargs.get("data")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    value = getattr(data, "_value", None)  # aiohttp's BytesPayload and its subclasses
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return b""


def _aiohttp_header(session: Any, kwargs: dict[str, Any], name: str) -> str:
    try:
        headers = session._prepare_headers(kwargs.get("headers"))
        return str(headers.get(name, ""))
    except Exception:
        return ""


def _observe_aiohttp(
    response: Any, flight: Flight, kwargs: dict[str, Any], session: Any, module: ModuleType
) -> None:
    status = response.status
    if 300 <= status < 400:
        flight.redirected(status)
        return
    live = getattr(response, "_protocol", None) is not None
    if not live:  # built by a mock (aioresponses): never read from a connection
        flight.replayed()
    headers = response.headers
    decompress = kwargs.get("auto_decompress")
    if decompress is None:
        decompress = getattr(session, "_auto_decompress", True)
    # aiohttp hands the application decoded bytes when it decompresses a live response.
    encoding = "" if live and decompress else headers.get("Content-Encoding", "")
    if not flight.response(status, headers.get("Content-Type", ""), encoding):
        flight.done()
        return
    body = getattr(response, "_body", None)
    if body is not None:  # built already read
        flight.chunk(bytes(body))
        flight.done()
        return
    streams = module.streams
    iterators = (streams.AsyncStreamIterator, streams.ChunkTupleAsyncStreamIterator)
    response.content = _ObservedContent(response.content, flight, iterators)
    for name in ("release", "close"):  # the application is done with the body
        method = getattr(response, name, None)
        if method is None:
            continue

        def ended(*args: Any, _method: Any = method, **kw: Any) -> Any:
            try:
                return _method(*args, **kw)
            finally:
                flight.done()

        # A response class with slots keeps its methods: the test's teardown settles then.
        with contextlib.suppress(AttributeError, TypeError):
            setattr(response, name, ended)


def _wrap_aiohttp(module: ModuleType, cls: type[Any], original: Any) -> None:
    """Put our wrapper around ``original`` as ``ClientSession._request``.

    ``_request`` runs once per call of the application, whatever method it used (``get``,
    ``post``, ``request``, ``ws_connect`` aside): the redirects it follows are inside it, so a
    redirected request is reserved and charged once.
    """

    async def request(self: Any, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if _sending.get() is not None or _current() is None or self.closed:
            # An outer wrapper of ours (an httpx client on an aiohttp transport, or our wrapper
            # around a mock) handles this request; or nothing would be sent.
            return await original(self, method, str_or_url, *args, **kwargs)
        try:
            url = self._build_url(str_or_url)
            if kwargs.get("params"):
                url = url.update_query(kwargs["params"])
        except Exception:  # aiohttp raises its own error for this URL
            return await original(self, method, str_or_url, *args, **kwargs)
        prepared = _prepare_url(str(method).upper(), url.path)
        if prepared is None:
            return await original(self, method, str_or_url, *args, **kwargs)
        handler, endpoint = prepared
        data = kwargs.get("data")
        if kwargs.get("json") is None and data is not None and hasattr(data, "__aiter__"):
            kwargs["data"] = b"".join([bytes(chunk) async for chunk in data])
        info = RequestInfo(
            endpoint, str(method).upper(), str(url), _aiohttp_body(self, kwargs), "aiohttp",
            _aiohttp_header(self, kwargs, "Content-Encoding"),
        )
        flight = handler.start(info)  # raises to refuse: nothing is sent
        token = _sending.set(info)
        try:
            response = await original(self, method, str_or_url, *args, **kwargs)
        except BaseException as exc:
            if flight is None:
                pass
            elif (status := _raised_status(exc)) is not None:
                flight.response(status, "", "")  # an error status: released, not billed
                flight.done()
            else:
                flight.failed(exc, sent=not _aiohttp_unsent(exc))
            raise
        finally:
            _sending.reset(token)
        if flight is not None:
            _observe_aiohttp(response, flight, kwargs, self, module)
        return response

    setattr(request, _PATCHED, True)
    request.__dict__["__wrapped__"] = original
    request.__doc__ = getattr(original, "__doc__", None)
    setattr(cls, _AIOHTTP_METHOD, request)


def _cannot_intercept(module: ModuleType, missing: str) -> None:
    import warnings

    warnings.warn(
        f"pytest-omnillm cannot intercept {module.__name__} "
        f"{getattr(module, '__version__', '?')}: no {missing}",
        stacklevel=3,
    )


def _patch_aiohttp(module: ModuleType) -> None:
    cls = getattr(module, "ClientSession", None)
    if not isinstance(cls, type) or not hasattr(module, "streams"):
        return
    original = cls.__dict__.get(_AIOHTTP_METHOD)
    if original is None:
        _cannot_intercept(module, f"ClientSession.{_AIOHTTP_METHOD}")
        return
    if not getattr(original, _PATCHED, False):
        _wrap_aiohttp(module, cls, original)
    if not any(p.cls is cls for p in _patched):

        def rewrap(current: Any) -> None:
            _wrap_aiohttp(module, cls, current)

        _patched.append(_Patch(module, cls, _AIOHTTP_METHOD, rewrap))


def _classes(module: ModuleType) -> list[tuple[type[Any], bool]]:
    found = []
    for name, is_async in (("Client", False), ("AsyncClient", True)):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            found.append((cls, is_async))
    return found


def _patch_aioresponses(module: ModuleType) -> None:
    """Make ``aioresponses().start()`` (its ``with`` block, its decorator) keep us on the path.

    It puts its mock in place of ``ClientSession._request`` inside the test body, after the
    plugin's `verify` of that test ran: we wrap its mock at once, so its replies are seen (and
    recorded as replayed) and a passthrough request is counted once.
    """
    cls = getattr(module, "aioresponses", None)
    original = getattr(cls, "start", None)
    if cls is None or original is None or getattr(original, _PATCHED, False):
        return

    def start(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        with contextlib.suppress(RuntimeError):  # a removed method: the next verify says so
            verify()
        return result

    setattr(start, _PATCHED, True)
    start.__wrapped__ = original  # type: ignore[attr-defined]
    cls.start = start


def _patch_module(module: ModuleType) -> None:
    if module.__name__ == "aiohttp":
        _patch_aiohttp(module)
        return
    if module.__name__ == "aioresponses":
        _patch_aioresponses(module)
        return
    classes = _classes(module)
    if len(classes) != 2:
        return
    for cls, _is_async in classes:
        original = cls.__dict__.get(_METHOD)
        if original is None:
            _cannot_intercept(module, _METHOD)
            return
    for cls, is_async in classes:
        original = cls.__dict__[_METHOD]
        if not getattr(original, _PATCHED, False):
            _wrap(module, cls, original, is_async=is_async)
        if not any(p.cls is cls for p in _patched):

            def rewrap(current: Any, cls: type[Any] = cls, is_async: bool = is_async) -> None:
                _wrap(module, cls, current, is_async=is_async)

            _patched.append(_Patch(module, cls, _METHOD, rewrap))


def verify() -> list[str]:
    """Check that our wrapper is still on the call path of every patched client class.

    The methods checked are ``_send_single_request`` of httpx's and httpx2's clients and
    ``ClientSession._request`` of aiohttp.

    Another library may have put its own method there after us (and may call the original it
    saved, which may not be ours): the replacement is wrapped in turn, so every request still
    passes through us exactly once. It runs twice per test: when every method is the one it
    found last time, it costs one dict look-up per class.
    Returns one line per class wrapped again.

    Raises:
        RuntimeError: a client class lost the method we wrapped (the plugin could not see
            its requests).
    """
    global _checks
    checks = _checks
    if len(checks) == len(_patched):  # _patched only grows: the same patches
        for methods, name, ours in checks:
            if methods.get(name) is not ours:
                break
        else:
            return []
    notes: list[str] = []
    for patch in _patched:
        current = patch.cls.__dict__.get(patch.method)
        if getattr(current, _PATCHED, False):
            continue
        where = f"{patch.module.__name__}.{patch.cls.__name__}.{patch.method}"
        if current is None or not callable(current):
            raise RuntimeError(
                f"pytest-omnillm: {where} was removed by another "
                "library: LLM requests cannot be budgeted; refusing to run unbudgeted"
            )
        who = getattr(current, "__module__", None) or type(current).__module__
        patch.rewrap(current)
        notes.append(f"{where} was replaced by {who}: wrapped again")
    # A class's __dict__ is a live view: the next verify compares the methods it finds now.
    _checks = tuple((p.cls.__dict__, p.method, p.cls.__dict__.get(p.method)) for p in _patched)
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
    """Wraps the loader of each module in `_TARGETS` to patch it once it is imported."""

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
    """Patch the `_TARGETS` modules now if imported, else when they are (idempotent)."""
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
