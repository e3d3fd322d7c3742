"""`dasr bench serve`: `dasr serve` under load from concurrent HTTP clients, through ONNX Runtime and PyTorch.

For each engine a `dasr serve` process is pinned to core 0 (``taskset -c 0``, one decoding thread,
torch and onnxruntime on one thread, the LM of ``--data``); the clients are asyncio + httpx in
this process, pinned to core 1, each sending real files one request at a time:

- latency of one 5-second utterance (test recordings joined with 0.2 s pauses) at concurrency 1;
- concurrency 1, 4, 16 over the test recordings: p50/p99 latency, requests/s, statuses (503s are
  the queue limit, ``--max-queue`` 8, refusing on purpose);
- (ONNX) a soak of 10,000 requests (1,000 with ``--quick``) at concurrency 4 over the files and four
  bad inputs (not audio, empty, truncated, shorter than a frame; the files repeated so that the bad
  ones are at most one in five): 5xx count and the server's RSS after the phases above (the
  warm-up) and at the end.

The real-time factor is the service's own (``dasr_decode_seconds_total / dasr_audio_seconds_total``
from ``/metrics``), decoding only; latency is what a client sees.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from dasr.cli import arg
from dasr.data import audio
from dasr.data.manifest import read_manifest
from dasr.decode.export import export_onnx
from dasr.errors import DasrError
from lab.report import new_figure, publish
from lab.summary import update_summary

ARGUMENTS = (arg("--exp", default=None, help="the model to serve (e.g. exp/demo/model)"),)

CONCURRENCY = (1, 4, 16)
MAX_QUEUE = 8
UTTERANCE_S = 5.0


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, audio.TARGET_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _inputs(data: str) -> tuple[bytes, list[bytes], list[bytes]]:
    """(a 5 s utterance, the test recordings, bad inputs) as upload bytes."""
    utts = read_manifest(Path(data) / "test.jsonl")
    if not utts:
        raise DasrError(f"{data}/test.jsonl holds no recordings")
    recordings = [audio.load(u.audio) for u in utts]
    pause, joined = np.zeros(audio.TARGET_RATE // 5, np.float32), list[np.ndarray]()
    while sum(len(part) for part in joined) < UTTERANCE_S * audio.TARGET_RATE:
        joined += [recordings[len(joined) // 2 % len(recordings)], pause]
    five = np.concatenate(joined)[: int(UTTERANCE_S * audio.TARGET_RATE)]
    files = [_wav(r) for r in recordings]
    bad = [b"this is not audio" * 50, b"", files[0][: len(files[0]) // 2], _wav(recordings[0][:200])]
    return _wav(five), files, bad


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise DasrError(f"no VmRSS for process {pid}")


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


async def _load(url: str, bodies: list[bytes], requests: int, concurrency: int) -> dict:
    """``requests`` uploads spread over ``concurrency`` clients; latencies of the 200s, statuses, requests/s."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    counter = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in counter:
            started = time.perf_counter()
            reply = await http.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("a.wav", bodies[i % len(bodies)])},
                data={"model": "dasr"},
            )
            statuses[str(reply.status_code)] = statuses.get(str(reply.status_code), 0) + 1
            if reply.status_code == 200:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "concurrency": concurrency,
        "requests": requests,
        "statuses": dict(sorted(statuses.items())),
        "p50_s": float(np.percentile(lat, 50)),
        "p99_s": float(np.percentile(lat, 99)),
        "requests_per_s": requests / wall,
    }


def _measure_engine(model_dir: str, lm: str, inputs: tuple, soak_requests: int, repeats: int) -> dict:
    five, files, bad = inputs
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = ["taskset", "-c", "0", sys.executable, "-m", "dasr", "--log-level", "WARNING", "serve", model_dir]
    command += ["--lm", lm, "--port", str(port), "--workers", "1", "--max-queue", str(MAX_QUEUE)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, server)
        result: dict = {"five_s": asyncio.run(_load(url, [five], repeats, 1))}
        result["concurrency"] = [asyncio.run(_load(url, files, repeats * 2, c)) for c in CONCURRENCY]
        result["rtf"] = _server_rtf(url)
        if soak_requests:
            mix = files * (4 * len(bad) // len(files) or 1) + bad  # at most one in five bad
            rss_before = _rss_mb(server.pid)
            soak = asyncio.run(_load(url, mix, soak_requests, 4))  # after the phases above: warm
            soak.update(rss_before_mb=rss_before, rss_after_mb=_rss_mb(server.pid), bad_share=len(bad) / len(mix))
            soak["rss_growth"] = soak["rss_after_mb"] / rss_before - 1
            result["soak"] = soak
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DasrError(f"dasr serve exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise DasrError(f"dasr serve did not answer within {timeout_s:g} s")


def _server_rtf(url: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return _metric(text, "dasr_decode_seconds_total") / _metric(text, "dasr_audio_seconds_total")


def measure(exp: str, data: str, quick: bool) -> dict:
    """Both engines under load; the results dict of the report."""
    os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})  # the clients stay off the server's core 0
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    inputs = _inputs(data)
    repeats = 10 if quick else 50
    with tempfile.TemporaryDirectory() as onnx_dir:
        export_onnx(exp, onnx_dir)
        engines = {
            "onnxruntime": _measure_engine(onnx_dir, data, inputs, 1000 if quick else 10000, repeats),
            "pytorch": _measure_engine(exp, data, inputs, 0, repeats),
        }
    return {"exp": exp, "data": data, "files": len(inputs[1]), "bad_inputs": len(inputs[2]), "engines": engines}


def render(results: dict, report) -> object:
    """The report's sections and figure from the stored results."""
    lines = [
        "| engine | concurrency | requests | statuses | p50 latency | p99 latency | requests/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, engine in results["engines"].items():
        for row in [engine["five_s"], *engine["concurrency"]]:
            what = f"{row['concurrency']} (5 s utterance)" if row is engine["five_s"] else str(row["concurrency"])
            statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items())
            lines.append(
                f"| {name} | {what} | {row['requests']} | {statuses} | {row['p50_s']:.3f} s | {row['p99_s']:.3f} s | {row['requests_per_s']:.1f} |"
            )
    rtf = ", ".join(f"{name} {engine['rtf']:.4f}" for name, engine in results["engines"].items())
    report.add(
        "Latency and throughput",
        "\n".join(lines)
        + f"\n\nServer: `dasr serve` pinned to one core (`taskset -c 0`), 1 decoding thread, queue limit {MAX_QUEUE} "
        f"(beyond it: 503 + Retry-After), LM decoding with `{results['data']}`/lm.arpa; clients: asyncio + httpx "
        f"on core 1. Model `{results['exp']}`; files: the {results['files']} test recordings of the data dir. "
        f"Real-time factor of the service's decoding (from /metrics): {rtf}.",
    )
    soak = results["engines"]["onnxruntime"]["soak"]
    fivexx = sum(v for k, v in soak["statuses"].items() if k.startswith("5"))
    report.add(
        f"Soak: {soak['requests']} requests (ONNX)",
        f"Concurrency 4, {100 * soak['bad_share']:.0f} % bad inputs (not audio, empty, truncated, shorter than a "
        f"frame). Statuses: {soak['statuses']}; 5xx: {fivexx}. Server RSS after warm-up {soak['rss_before_mb']:.1f} MB, "
        f"after the soak {soak['rss_after_mb']:.1f} MB ({100 * soak['rss_growth']:+.2f} %); {soak['requests_per_s']:.1f} requests/s.",
    )
    fig, (ax,) = new_figure(1, width_per_panel=6)
    for name, engine in results["engines"].items():
        xs = [row["concurrency"] for row in engine["concurrency"]]
        ax.plot(xs, [row["p50_s"] for row in engine["concurrency"]], "o-", label=f"{name} p50")
        ax.plot(xs, [row["p99_s"] for row in engine["concurrency"]], "s--", label=f"{name} p99")
    ax.set(
        xscale="log",
        xlabel="concurrent clients",
        ylabel="latency of answered requests (s)",
        title="dasr serve on one core",
    )
    ax.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    ax.legend()
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench serve`: measure, write docs/results/serve.{md,json,png}, and the summary figures."""
    if args.exp is None or args.data is None:
        raise DasrError(
            "dasr bench serve needs --exp and --data: a trained model and a data dir with test.jsonl and lm.arpa"
        )
    results = measure(args.exp, args.data, args.quick)
    report = publish("serve", "dasr serve under load", command, results, render, args.out)
    onnx = results["engines"]["onnxruntime"]
    figures = {
        "serve_p50_latency_s_5s_utt_onnx": onnx["five_s"]["p50_s"],
        "serve_rtf_onnx": onnx["rtf"],
        "serve_rss_growth_10k": onnx["soak"]["rss_growth"] if not args.quick else None,
    }
    update_summary(args.out, figures, report)
    return results
