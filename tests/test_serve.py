"""`audioguide serve`: a real server on localhost called over real HTTP (httpx). Streaming sends
each sentence as it finishes; every bad request gets a 4xx JSON error and the server goes on."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from audioguide.audio import CEILING_DBTP, TARGET_LUFS, encode_audio, loudness, master, true_peak  # noqa: E402
from audioguide.pipeline import Pipeline  # noqa: E402
from audioguide.serve import Limits, Server, listen, uvicorn_server, wav_stream_header  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
TEXT = "Hello there. This is the second sentence! And a third one?"


def start(*args: str) -> tuple[subprocess.Popen, str]:
    """``audioguide serve ARGS --port 0`` in a subprocess; returns it and its base URL once listening."""
    proc = subprocess.Popen([sys.executable, "-m", "audioguide.cli", "serve", "--port", "0", *args], stderr=subprocess.PIPE,
                            text=True, env=ENV)
    for line in proc.stderr:
        if "listening on " in line:
            return proc, line.split("listening on ")[1].split()[0]
    raise AssertionError(f"the server did not start (exit {proc.wait()})")


@pytest.fixture(scope="module")
def server():
    proc, url = start("-r", "random-tts", "-r", "random-t2a", "--max-chars", "300", "--max-body", "2048")
    with httpx.Client(base_url=url, timeout=120) as client:
        yield client
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def expected():
    """What the server should send for TEXT: each sentence levelled on its own, as 16-bit PCM."""
    pipe = Pipeline.from_recipe("random-tts")
    chunks = list(pipe.stream(TEXT, seed=4))
    pcm = [encode_audio(master(c, pipe.sample_rate)[0], pipe.sample_rate, "pcm") for c in chunks]
    return pipe.sample_rate, pcm


def speech(client, **body):
    return client.post("/v1/audio/speech", json={"model": "random-tts", "input": TEXT, "seed": 4, **body})


def test_health_and_models(server):
    health = server.get("/health").json()
    assert health["status"] == "ok" and health["models"] == ["random-tts", "random-t2a"]
    models = server.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["random-tts", "random-t2a"]


def test_wav_streams_sentence_by_sentence(server, expected):
    rate, pcm = expected
    with server.stream("POST", "/v1/audio/speech", json={"model": "random-tts", "input": TEXT, "seed": 4,
                                                          "response_format": "wav"}) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
        body = r.read()
    assert body == wav_stream_header(rate) + b"".join(pcm)
    wav, sr = sf.read(io.BytesIO(body), dtype="int16")  # the streaming header reads as a WAV of its real length
    assert sr == rate and len(wav) == sum(len(p) for p in pcm) // 2


def test_pcm_is_the_same_audio_without_a_header(server, expected):
    r = speech(server, response_format="pcm")
    assert r.status_code == 200 and r.content == b"".join(expected[1])


@pytest.mark.parametrize("fmt, major", [("flac", "FLAC"), ("mp3", "MP3"), ("opus", "OGG"), ("ogg", "OGG")])
def test_whole_file_formats_are_levelled(server, fmt, major):
    r = speech(server, response_format=fmt)
    assert r.status_code == 200 and "content-length" in r.headers
    wav, sr = sf.read(io.BytesIO(r.content))
    assert sf.info(io.BytesIO(r.content)).format == major
    if fmt == "flac":
        assert abs(loudness(wav, sr) - TARGET_LUFS) < 1.0 and true_peak(wav) <= CEILING_DBTP + 0.05


def test_openai_defaults_and_model_names(server):
    r = server.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hello.", "speed": 1.5})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"  # OpenAI's default format


def test_sound_endpoint(server):
    r = server.post("/v1/audio/sound", json={"model": "random-t2a", "input": "a dog barking", "seconds": 1.0,
                                              "response_format": "wav", "sample_rate": 8000})
    wav, sr = sf.read(io.BytesIO(r.content))
    assert r.status_code == 200 and sr == 8000 and len(wav) == 8000
    assert true_peak(wav) <= CEILING_DBTP + 0.05


def test_sound_endpoint_takes_prompt_parts(server):
    body = {"model": "random-t2a", "input": "a dog barking", "seconds": 1.0, "sample_rate": 8000}
    plain = sf.read(io.BytesIO(server.post("/v1/audio/sound", json=body).content))[0]
    r = server.post("/v1/audio/sound", json={**body, "parts": ["rain falling"], "part_weights": [1.0, 0.6]})
    both = sf.read(io.BytesIO(r.content))[0]
    assert r.status_code == 200 and len(both) == len(plain) and not np.allclose(both, plain)
    for change, code in (({"parts": ["rain"], "part_weights": [1.0]}, "too_short"), ({"parts": []}, "too_short"),
                         ({"parts": ["a", "b", "c", "d"]}, "too_long"), ({"parts": ["rain"], "part_weights": [1.0, 9.0]}, None)):
        r = server.post("/v1/audio/sound", json={**body, **change})
        error = r.json()["error"]
        assert r.status_code == 400 and error["message"] and (code is None or code in error["code"]), r.text


BAD = [
    ({"model": "nope"}, 404, "model_not_found"),
    ({"model": "random-t2a"}, 400, None),  # a sound recipe on the speech endpoint
    ({"input": ""}, 400, "string_too_short"),
    ({"input": "x" * 301}, 400, "input_too_long"),
    ({"speed": 10}, 400, "less_than_equal"),
    ({"response_format": "aac"}, 400, "unsupported_format"),
    ({"response_format": "xyz"}, 400, "literal_error"),
    ({"voice": "alloy"}, 400, None),  # random-tts has no voices
    ({"sample_rate": 22050, "response_format": "opus"}, 400, None),
    ({"seed": -1}, 400, "greater_than_equal"),
    ({"stream_format": "sse"}, 400, "unsupported_format"),
    ({"extra": 1}, 400, "extra_forbidden"),
]


@pytest.mark.parametrize("change, status, code", BAD, ids=[json.dumps(b[0])[:40] for b in BAD])
def test_bad_requests_get_openai_error_objects(server, change, status, code):
    r = speech(server, **change)
    error = r.json()["error"]
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert error["message"] and error["type"] == "invalid_request_error" and (code is None or error["code"] == code)


def test_malformed_and_oversized_requests(server):
    r = server.post("/v1/audio/speech", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_invalid"
    r = server.post("/v1/audio/speech", json={"model": "random-tts", "input": "x" * 4000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = server.post("/v1/audio/speech", content=iter([b'{"model": "random-tts", "input": "Hi."}']))  # chunked, no length
    assert r.status_code == 411
    assert server.get("/v1/audio/speech").status_code == 405
    assert server.get("/nothing").json()["error"]["message"] == "Not Found"
    assert server.get("/health").json()["status"] == "ok"  # still up


def test_sigterm_stops_the_server_cleanly():
    proc, url = start("-r", "random-tts")
    assert httpx.get(url + "/health", timeout=60).status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert "stopped by SIGTERM" in proc.stderr.read()


# -- in-process: a server in a thread, with a pipeline we can hold mid-stream ---------------------


class Held:
    """Serve ``pipe`` in a thread; its second sentence waits until :attr:`gate` is set."""

    def __init__(self, limits: Limits) -> None:
        self.pipe = Pipeline.from_recipe("random-tts")
        self.gate, self.draws = threading.Event(), 0
        draw = self.pipe.draw

        def held_draw(plan, **kwargs):
            self.draws += 1
            if self.draws == 2 and not self.gate.wait(60):
                raise RuntimeError("the test never opened the gate")
            return draw(plan, **kwargs)

        self.pipe.draw = held_draw
        sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.uvicorn = uvicorn_server(Server({"random-tts": self.pipe}, limits))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.uvicorn.started:
            threading.Event().wait(0.01)

    def close(self) -> None:
        self.gate.set()
        self.uvicorn.should_exit = True
        self.thread.join(timeout=60)


def test_the_first_sentence_arrives_while_the_second_is_drawn():
    held = Held(Limits())
    try:
        ref = Pipeline.from_recipe("random-tts")
        first = encode_audio(master(next(ref.stream(TEXT, seed=4)), ref.sample_rate)[0], ref.sample_rate, "pcm")
        with httpx.stream("POST", held.url + "/v1/audio/speech", timeout=120,
                          json={"model": "random-tts", "input": TEXT, "seed": 4, "response_format": "pcm"}) as r:
            got, parts = b"", r.iter_raw()
            for part in parts:
                got += part
                if len(got) >= len(first):
                    break
            before = (len(got), held.draws)
            held.gate.set()
            got += b"".join(parts)
        # the first sentence was in our hands while the second could not finish: its draw waits on the gate
        assert before[0] >= len(first) and got.startswith(first) and before[1] <= 2
        assert held.draws == 3 and len(got) > len(first)
    finally:
        held.close()


def test_a_full_server_answers_503_and_frees_places():
    held = Held(Limits(max_queue=1))
    try:
        with httpx.stream("POST", held.url + "/v1/audio/speech", timeout=120,
                          json={"model": "random-tts", "input": TEXT, "response_format": "pcm"}) as r:
            parts = r.iter_raw()
            next(parts)  # the first request is in progress, held at its second sentence
            busy = httpx.post(held.url + "/v1/audio/speech", json={"model": "random-tts", "input": "Hi."}, timeout=60)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "server_busy"
            held.gate.set()
            b"".join(parts)
        ok = httpx.post(held.url + "/v1/audio/speech", json={"model": "random-tts", "input": "Hi."}, timeout=60)
        assert ok.status_code == 200
        assert httpx.get(held.url + "/health").json()["active"] == 0
    finally:
        held.close()


def test_a_client_that_leaves_mid_stream_frees_its_place():
    held = Held(Limits(max_queue=1))
    try:
        with httpx.stream("POST", held.url + "/v1/audio/speech", timeout=120,
                          json={"model": "random-tts", "input": TEXT, "response_format": "pcm"}) as r:
            next(r.iter_raw())
        held.gate.set()  # the server finds the client gone after this sentence
        for _ in range(600):
            if httpx.get(held.url + "/health").json()["active"] == 0:
                break
            threading.Event().wait(0.1)
        assert httpx.post(held.url + "/v1/audio/speech", json={"model": "random-tts", "input": "Hi."}, timeout=60).status_code == 200
    finally:
        held.close()
