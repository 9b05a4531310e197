"""Interactive use: how long a one-shot CLI call takes next to `import torch`, how soon a server
sends the first audio, and how many requests a second it answers.

1. **Startup.** Wall time of ``python -c "import torch"`` and of ``audioguide tts "Hello." -o x.wav``
   (the shipped ``speech`` recipe, no description: the text encoder is never loaded), with
   ``--describe`` (it is) and ``t2a`` for context, interleaved round by round; the ratio
   tts / import torch is issue 22's measure (target <= 2.5). ``--before DIR`` also times a source
   tree exported from an earlier commit (``git archive HEAD | tar -x -C DIR``) the same way.
2. **Time to first audio.** ``audioguide serve -r speech`` in a subprocess, one request at a time:
   a three-sentence text as streamed 16-bit PCM (first body byte, last byte) and as FLAC (encoded
   whole: first byte = last byte).
3. **Requests per second.** A one-sentence request (``"Hello there."``, WAV), sequentially and from
   4 concurrent clients.

    python benchmarks/interactive.py [--rounds 7] [--before /tmp/before] [--report benchmarks/results/interactive.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG = "Generating speech sentence by sentence lets a listener start at once. This is the second sentence. And here is the third one."
SHORT = "Hello there."
TTS_CALL = 'audioguide tts "Hello." -o x.wav'


def wall(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def startup(rounds: int, before: Path | None) -> dict[str, list[float]]:
    """Wall seconds of each command, interleaved round by round."""
    out = Path(tempfile.mkdtemp()) / "x.wav"
    py = sys.executable
    cli = [py, "-m", "audioguide.cli"]
    commands = {
        "python -c 'import torch'": ([py, "-c", "import torch"], None),
        TTS_CALL: ([*cli, "tts", "Hello.", "-o", str(out), "-f"], None),
        'audioguide tts "Hello." --describe "a deep voice"': ([*cli, "tts", "Hello.", "-o", str(out), "-f", "--describe", "a deep voice"], None),
        'audioguide t2a "a dog barking" --seconds 2': ([*cli, "t2a", "a dog barking", "-o", str(out), "-f", "--seconds", "2"], None),
    }
    if before is not None:
        env = {**os.environ, "PYTHONPATH": str(before)}
        commands['before: audioguide tts "Hello." -o x.wav'] = ([py, str(before / "cli.py"), "tts", "Hello.", "-o", str(out), "-f"], env)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for r in range(rounds):
        for name in (list(commands) if r % 2 == 0 else list(commands)[::-1]):
            cmd, env = commands[name]
            times[name].append(wall(cmd, env))
        print(f"startup round {r + 1} done", file=sys.stderr)
    return times


def serve(recipe: str):
    """``audioguide serve`` on a free port; (process, base URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "audioguide.cli", "serve", "-r", recipe, "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "listening on " in line:
            return proc, line.split("listening on ")[1].split()[0]
    raise RuntimeError("the server did not start")


def first_audio(client, fmt: str, text: str = LONG) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last) of one request."""
    t = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/audio/speech", json={"model": "speech", "input": text, "response_format": fmt}) as r:
        r.raise_for_status()
        for _ in r.iter_raw():
            first = first or time.perf_counter() - t
    return first, time.perf_counter() - t


def requests_per_second(url: str, clients: int, n: int) -> float:
    import httpx

    def one(_):
        with httpx.Client(base_url=url, timeout=300) as c:
            c.post("/v1/audio/speech", json={"model": "speech", "input": SHORT, "response_format": "wav"}).raise_for_status()

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t)


def server_numbers(rounds: int) -> dict:
    import httpx

    proc, url = serve("speech")
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            first_audio(client, "pcm")  # warm up
            stream, whole = [], []
            for r in range(rounds):
                for fmt in (("pcm", "flac") if r % 2 == 0 else ("flac", "pcm")):
                    (stream if fmt == "pcm" else whole).append(first_audio(client, fmt))
            short = [first_audio(client, "pcm", SHORT) for _ in range(rounds)]
        rps = {c: requests_per_second(url, c, 20) for c in (1, 4)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"stream": stream, "whole": whole, "short": short, "rps": rps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", type=Path, help="a source tree of an earlier commit to time the same way")
    parser.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "results" / "interactive.md")
    args = parser.parse_args()
    times = startup(args.rounds, args.before)
    server = server_numbers(args.rounds)
    report(times, server, args)


def report(times: dict, server: dict, args) -> None:
    from benchmarks.tts_speed import write_report

    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s = med["python -c 'import torch'"]
    lines = [
        "# Interactive use (`benchmarks/interactive.py`)",
        "",
        f"{os.cpu_count()} cores, default threads (1), shipped recipes; medians of {args.rounds} rounds, commands "
        "interleaved. Issue 22's measure is the ratio of a tts call to `import torch` (target <= 2.5).",
        "",
        "| command | wall seconds (median) | min - max | ratio to `import torch` |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        lines.append(f"| `{name}` | {med[name]:.2f} | {min(values):.2f} - {max(values):.2f} | {med[name] / torch_s:.2f} |")
    s_first = statistics.median(f for f, _ in server["stream"])
    s_last = statistics.median(last for _, last in server["stream"])
    w_last = statistics.median(last for _, last in server["whole"])
    short = statistics.median(last for _, last in server["short"])
    lines += [
        "",
        "## Server (`audioguide serve -r speech`, one request at a time)",
        "",
        f"Three sentences ({len(LONG)} characters, about 7 s of speech):",
        "",
        "| response | first audio byte (s) | whole response (s) |",
        "|---|---|---|",
        f"| streamed PCM, sentence by sentence | {s_first:.3f} | {s_last:.3f} |",
        f"| FLAC, encoded whole | {w_last:.3f} | {w_last:.3f} |",
        "",
        f"Time to first audio, streamed: {s_first:.3f} s, {w_last / s_first:.1f}x sooner than the whole FLAC. "
        f"A one-sentence request (\"{SHORT}\") takes {short:.3f} s end to end, against "
        f"{med[TTS_CALL]:.2f} s for the one-shot CLI.",
        "",
        "| concurrent clients | requests per second (\"Hello there.\", WAV, 20 requests) |",
        "|---|---|",
    ]
    lines += [f"| {c} | {r:.1f} |" for c, r in server["rps"].items()]
    write_report(lines, args.report)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
