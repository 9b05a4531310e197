"""The HTTP server (``audioguide serve``): recipes loaded once, answered over HTTP, audio streamed
sentence by sentence. FastAPI on uvicorn (the ``serve`` extra).

Endpoints:

* ``POST /v1/audio/speech``: OpenAI's create-speech request (``model``, ``input``, ``voice``,
  ``instructions``, ``response_format``, ``speed``; platform.openai.com/docs/api-reference/audio/
  createSpeech), so OpenAI clients work unchanged. ``model`` is a loaded recipe (OpenAI's
  ``tts-1``, ``tts-1-hd`` and ``gpt-4o-mini-tts`` name the first loaded speech recipe), ``voice``
  one of its voices (``audioguide voices``), ``instructions`` a free-text voice description. Extra
  fields: ``seed``, ``sample_rate``.
* ``POST /v1/audio/sound``: text to audio, ``model``, ``input`` (the prompt), ``seconds``,
  ``negative``, ``parts`` (more sounds in the same clip) and ``part_weights`` (one per part, the
  prompt's first; :meth:`Pipeline.prepare`), ``response_format``, ``seed``, ``sample_rate``.
* ``GET /v1/models`` (OpenAI's model list) and ``GET /health``.

Audio: ``wav`` and ``pcm`` (OpenAI's headerless 16-bit little-endian) stream with chunked
transfer encoding, one chunk per sentence as it finishes (:meth:`Pipeline.chunks`), so the first
audio arrives while the rest is drawn; a streamed WAV's header gives its sizes as unknown
(0xFFFFFFFF), as streaming encoders do. ``flac``, ``mp3``, ``opus`` and ``ogg`` are encoded whole
and sent when done. Levels: each response (each streamed sentence) is brought to the server's
loudness target under a -1 dBTP ceiling (:func:`audioguide.audio.master`); nothing clips.

Bounds: a request body needs a ``Content-Length`` of at most ``max_body`` bytes (411 / 413), an
input at most ``max_chars`` characters (OpenAI's 4096); at most ``max_queue`` requests are taken
at once, the rest get 503 with ``Retry-After``. Generation runs in worker threads one piece at a
time under one lock, so concurrent streams take turns sentence by sentence. Every error is
OpenAI's error object ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status (500
for a bug, logged); the server never stops for a request.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from audioguide.audio import CEILING_DBTP, FORMATS, TARGET_LUFS, encode_audio, master, output_rate
from audioguide.core import MAX_SEED, AudioguideError
from audioguide.pipeline import MAX_PARTS, MAX_SPEED, MIN_SPEED, Pipeline

log = logging.getLogger("audioguide.serve")

OPENAI_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # stand for the first loaded speech recipe
STREAMED = ("wav", "pcm")  # formats sent sentence by sentence
ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "ogg"]


@dataclass(frozen=True)
class Limits:
    """What one server accepts: characters of input, bytes of body, requests taken at once."""

    max_chars: int = 4096  # OpenAI's limit for /v1/audio/speech
    max_body: int = 64 * 1024
    max_queue: int = 8
    target_lufs: float | None = TARGET_LUFS


class SpeechRequest(BaseModel):
    """OpenAI's create-speech body, plus ``seed`` and ``sample_rate``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str = Field(min_length=1)
    voice: str | None = None
    instructions: str | None = Field(None, min_length=1)  # a free-text voice description (style)
    response_format: ResponseFormat = "mp3"  # OpenAI's default
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED)
    stream_format: Literal["audio", "sse"] = "audio"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    sample_rate: int | None = None


class SoundRequest(BaseModel):
    """A text-to-audio request: the prompt as ``input``, its length in ``seconds``."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str = Field(min_length=1)
    seconds: float | None = None
    negative: str | None = Field(None, min_length=1)
    parts: list[str] | None = Field(None, min_length=1, max_length=MAX_PARTS - 1)
    part_weights: list[float] | None = Field(None, min_length=2, max_length=MAX_PARTS)
    response_format: ResponseFormat = "wav"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    sample_rate: int | None = None


class ApiError(Exception):
    """A request the server refuses: an HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte header of a mono 16-bit PCM WAV whose length is not known yet (RIFF and data sizes
    0xFFFFFFFF, as streaming encoders write them; Microsoft RIFF WAVE, 'fmt ' chunk of 16 bytes)."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)  # PCM, mono, rate, bytes/s, align, bits
    return b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", unknown)


class BodyLimit:
    """ASGI middleware: a POST needs a ``Content-Length`` (411) of at most ``limit`` bytes (413),
    refused before its body is read."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length")
            refusal = None
            if length is None:
                refusal = error_response(411, "a request body needs a Content-Length header", code="length_required")
            elif not length.isdigit() or int(length) > self.limit:
                refusal = error_response(413, f"request body over {self.limit} bytes", code="request_too_large")
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Streaming(StreamingResponse):
    """A streamed response that calls ``on_close`` when it ends in any way (sent, failed, or its
    client disconnected and the send was cancelled)."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None], **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


class Server:
    """Loaded pipelines by recipe name, the request bounds, and the one lock generation runs under."""

    def __init__(self, pipelines: Mapping[str, Pipeline], limits: Limits = Limits()) -> None:
        if not pipelines:
            raise AudioguideError("the server needs at least one recipe")
        self.pipelines, self.limits = dict(pipelines), limits
        self.lock = threading.Lock()
        self.active = 0  # requests taken and not yet answered (counted in the event loop's thread)
        self.served = 0

    # -- requests ------------------------------------------------------------------------------

    def pipeline(self, model: str, task: str) -> Pipeline:
        """The pipeline a request's ``model`` names, of the endpoint's task (404 / 400 otherwise)."""
        if model in OPENAI_MODELS and task == "tts":
            model = next((n for n, p in self.pipelines.items() if p.task == "tts"), model)
        pipe = self.pipelines.get(model)
        if pipe is None:
            raise ApiError(404, f"model {model!r} is not loaded; this server has {', '.join(self.pipelines)}",
                           "model", "model_not_found")
        if pipe.task != task:
            where = "/v1/audio/speech" if pipe.task == "tts" else "/v1/audio/sound"
            raise ApiError(400, f"model {model!r} is a {pipe.task} recipe; use {where}", "model")
        return pipe

    def check_input(self, text: str) -> None:
        if len(text) > self.limits.max_chars:
            raise ApiError(400, f"input is {len(text)} characters; this server takes at most {self.limits.max_chars}",
                           "input", "input_too_long")

    def locked(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` holding the generation lock (in a worker thread)."""
        with self.lock:
            return fn(*args, **kwargs)

    async def answer(self, pipe: Pipeline, text: str, fmt: str, rate: int | None, **options) -> Response:
        """Prepare (errors become 400 before any audio), then stream or encode whole."""
        if fmt == "aac":
            raise ApiError(400, "response_format aac is not available; use mp3, opus, flac, wav, pcm or ogg",
                           "response_format", "unsupported_format")
        try:
            rate = output_rate(fmt, pipe.sample_rate, rate)
        except AudioguideError as e:
            raise ApiError(400, str(e), "sample_rate") from None
        plan = await run_in_threadpool(self.locked, pipe.prepare, text, **options)
        chunks = pipe.chunks(plan)
        if fmt in STREAMED:
            return Streaming(self.stream(chunks, pipe.sample_rate, fmt, rate), self.done, media_type=FORMATS[fmt].media_type)
        parts = []
        while (chunk := await run_in_threadpool(self.locked, next, chunks, None)) is not None:
            parts.append(chunk)
        wav, sr = master(np.concatenate(parts), pipe.sample_rate, target_lufs=self.limits.target_lufs,
                         ceiling_dbtp=CEILING_DBTP, rate=rate)
        body = encode_audio(wav, sr, fmt)
        self.done()
        return Response(body, media_type=FORMATS[fmt].media_type)

    async def stream(self, chunks: Iterator[np.ndarray], sample_rate: int, fmt: str, rate: int) -> AsyncIterator[bytes]:
        """Each sentence levelled and encoded as it finishes; a WAV starts with its streaming header."""
        if fmt == "wav":
            yield wav_stream_header(rate)
        while (chunk := await run_in_threadpool(self.locked, next, chunks, None)) is not None:
            wav, _ = master(chunk, sample_rate, target_lufs=self.limits.target_lufs, ceiling_dbtp=CEILING_DBTP, rate=rate)
            yield encode_audio(wav, rate, "pcm")

    def admit(self) -> None:
        if self.active >= self.limits.max_queue:
            raise ApiError(503, f"server busy: {self.active} requests in progress; retry shortly", code="server_busy",
                           headers={"Retry-After": "1"})
        self.active += 1

    def done(self) -> None:
        self.active -= 1
        self.served += 1

    # -- the app -------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        """The FastAPI application: routes, OpenAI-shaped errors, the body limit."""
        app = FastAPI(title="audioguide", summary="Text to speech and audio, streamed", version=_version())
        self._routes(app)
        self._errors(app)
        app.add_middleware(BodyLimit, limit=self.limits.max_body)
        return app

    def _routes(self, app: FastAPI) -> None:
        @app.get("/health")
        async def health() -> dict[str, Any]:
            return {"status": "ok", "models": list(self.pipelines), "active": self.active, "served": self.served}

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [
                {"id": name, "object": "model", "owned_by": "audioguide", "task": p.task, "sample_rate": p.sample_rate}
                for name, p in self.pipelines.items()]}

        @app.post("/v1/audio/speech", response_class=Response)
        async def speech(request: SpeechRequest) -> Response:
            if request.stream_format == "sse":
                raise ApiError(400, "stream_format sse is not available; audio streams as chunked bytes (wav, pcm)",
                               "stream_format", "unsupported_format")
            pipe = self.pipeline(request.model, "tts")
            self.check_input(request.input)
            inputs = {"speaker": request.voice, "style": request.instructions}
            return await self._taken(pipe, request.input, request.response_format, request.sample_rate, seed=request.seed,
                                     inputs={k: v for k, v in inputs.items() if v is not None}, speed=request.speed)

        @app.post("/v1/audio/sound", response_class=Response)
        async def sound(request: SoundRequest) -> Response:
            pipe = self.pipeline(request.model, "t2a")
            for text in (request.input, *(request.parts or ())):
                self.check_input(text)
            return await self._taken(pipe, request.input, request.response_format, request.sample_rate, seed=request.seed,
                                     seconds=request.seconds, negative=request.negative, parts=request.parts,
                                     part_weights=request.part_weights)

    async def _taken(self, pipe: Pipeline, text: str, fmt: str, rate: int | None, **options) -> Response:
        """Admit the request (503 when full) and answer it. Its place is freed once the answer is
        encoded, or, for a stream, once it is sent, fails or its client goes away (:class:`Streaming`)."""
        self.admit()
        try:
            return await self.answer(pipe, text, fmt, rate, **options)
        except BaseException:
            self.done()
            raise

    def _errors(self, app: FastAPI) -> None:
        @app.exception_handler(ApiError)
        async def api_error(request: Request, e: ApiError) -> JSONResponse:
            return error_response(e.status, e.message, e.param, e.code, e.headers)

        @app.exception_handler(AudioguideError)
        async def bad_input(request: Request, e: AudioguideError) -> JSONResponse:
            return error_response(400, str(e))

        @app.exception_handler(RequestValidationError)
        async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
            first = e.errors()[0] if e.errors() else {}
            if first.get("type") == "json_invalid":
                return error_response(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": "),
                                      code="json_invalid")
            loc = [str(p) for p in first.get("loc", ()) if p != "body"]
            message = f"{'.'.join(loc) + ': ' if loc else ''}{first.get('msg', 'invalid request')}"
            return error_response(400, message, ".".join(loc) or None, first.get("type"))

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
            return error_response(e.status_code, str(e.detail), headers=e.headers)

        @app.exception_handler(Exception)
        async def crash(request: Request, e: Exception) -> JSONResponse:
            log.exception("request failed")
            return error_response(500, f"internal error ({type(e).__name__}); the server goes on")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("audioguide")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); a one-line error if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AudioguideError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def uvicorn_server(server: Server, log_level: str = "warning"):
    """A ``uvicorn.Server`` for ``server``'s app; ``.run(sockets=[sock])`` serves, setting
    ``.should_exit`` stops it (as SIGINT / SIGTERM do: requests in flight finish, up to 30 s)."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(server.app(), log_level=log_level, timeout_graceful_shutdown=30))


def run(server: Server, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve on ``sock`` until SIGINT / SIGTERM."""
    uvicorn_server(server, log_level).run(sockets=[sock])
