"""`dasr serve`: the OpenAI client, the WebSocket stream, bad inputs, the page in headless Chromium.

One tiny model is trained (150 steps on the 8 committed espeak utterances: it reads them back)
and exported with its LM once per module; the service runs as a real `dasr serve` process on a
free loopback port and is stopped at the end.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import SPEECH, make_speech_data_dir, train_tiny

from dasr.cli import main
from dasr.data import audio
from dasr.decode.export import export_onnx
from dasr.decode.lm_build import build_lm

openai = pytest.importorskip("openai", reason="the test extra: pip install 'dasr[test]'")
websockets_client = pytest.importorskip("websockets.sync.client", reason="the test extra: pip install 'dasr[test]'")

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(str(p) for p in SPEECH.glob("*.flac"))
MAX_BYTES = 512 * 1024  # the service's upload limit in these tests (--max-mb 0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dasr serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            if _get(f"{url}/healthz")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"dasr serve did not answer on {url} within {timeout_s:g} s")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(exp dir, export dir with lm.arpa, data dir) of the tiny model."""
    root = tmp_path_factory.mktemp("serve")
    data = make_speech_data_dir(root)
    build_lm(data, order=2)
    train_tiny(data, root / "exp", steps=150)
    export_onnx(root / "exp", root / "onnx", lm_data=data)
    return root / "exp", root / "onnx", data


@pytest.fixture(scope="module")
def server(model):
    """The URL of `dasr serve ONNX_DIR` (its LM from the export) in its own process."""
    _, onnx_dir, _ = model
    port = _free_port()
    command = [sys.executable, "-m", "dasr", "serve", str(onnx_dir), "--port", str(port), "--max-mb", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def transcribed(model) -> dict[str, str]:
    """`dasr transcribe --onnx`'s text of each file, from the CLI's own output."""
    _, onnx_dir, _ = model
    done = subprocess.run(
        [sys.executable, "-m", "dasr", "transcribe", "--onnx", str(onnx_dir), "--json", *FILES],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {r["file"]: r["text"] for r in map(json.loads, done.stdout.splitlines())}


def _client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="not-checked", max_retries=0, timeout=60)


def test_openai_client_gets_the_text_of_dasr_transcribe(server, transcribed):
    client = _client(server)
    texts = {}
    for path in FILES:
        with open(path, "rb") as f:
            texts[path] = client.audio.transcriptions.create(model="dasr", file=f).text
    assert texts == transcribed
    assert sum(len(t.split()) >= 2 for t in texts.values()) >= 6  # the model says something

    with open(FILES[0], "rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert plain == transcribed[FILES[0]]
    with open(FILES[3], "rb") as f:
        verbose = client.audio.transcriptions.create(
            model="dasr", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    duration = soundfile.info(FILES[3]).duration
    assert verbose.text == transcribed[FILES[3]] and abs(verbose.duration - duration) < 1e-3
    words = verbose.words
    assert " ".join(w.word for w in words) == verbose.text
    times = [t for w in words for t in (w.start, w.end)]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= duration and all(w.end > w.start for w in words)
    assert " ".join(s.text for s in verbose.segments) == verbose.text
    assert verbose.segments[0].start == words[0].start and verbose.segments[-1].end == words[-1].end


def _wav_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _post(url: str, data: bytes, filename: str = "a.wav", **fields) -> tuple[int, dict | str, dict]:
    """POST one multipart upload with http.client: (status, JSON body or text, headers)."""
    boundary = "dasr-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    if data is not None:
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    conn.request(
        "POST", "/v1/audio/transcriptions", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    response = conn.getresponse()
    raw = response.read().decode()
    conn.close()
    is_json = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, json.loads(raw) if is_json else raw, dict(response.getheaders())


def _refused_while_streaming(url: str) -> tuple[int, str, int]:
    """Stream a chunked upload 64 KiB at a time until the service answers; (status, message, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        )
        first = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        s.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        chunk, sent = b"\0" * 65536, 0
        s.settimeout(0.05)
        reply = b""
        while sent < 64 * MAX_BYTES and b"\r\n\r\n" not in reply:  # never more than 64x the limit
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                reply += s.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(30)
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            more = s.recv(65536)
            if not more:
                break
            reply += more
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]["message"], sent


def _transcribe(capsys, onnx_dir: Path, path: Path) -> str:
    """`dasr transcribe --onnx`'s text of one file, run in this process."""
    capsys.readouterr()
    assert main(["transcribe", "--onnx", str(onnx_dir), "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)["text"]


def test_bad_inputs_get_a_clear_4xx_and_the_service_keeps_serving(server, model, tmp_path, capsys):
    samples, rate = soundfile.read(FILES[1], dtype="float32")
    wav = _wav_bytes(samples, rate)
    flac = Path(FILES[1]).read_bytes()
    cases = {
        "not audio": ((ROOT / "README.md").read_bytes()[:5000], {}, 400, "corrupt audio"),
        "truncated wav": (wav[: len(wav) // 2], {}, 400, "truncated"),
        "truncated flac": (flac[: len(flac) // 2], {}, 400, "corrupt audio"),
        "cut inside the header": (wav[:30], {}, 400, "corrupt audio"),
        "empty file": (b"", {}, 400, "empty"),
        "shorter than a frame": (_wav_bytes(samples[:200], rate), {}, 400, "25 ms"),
        "no file": (None, {"model": "dasr"}, 400, "`file`"),
        "unknown response_format": (wav, {"response_format": "srt"}, 400, "json, text, verbose_json"),
        "over the limit, declared": (b"\0" * (MAX_BYTES + 1), {}, 413, "limit"),
    }
    for name, (data, fields, status, message) in cases.items():
        got, body, _ = _post(server, data, **fields)
        assert (name, got) == (name, status) and message in body["error"]["message"], body
        assert _get(f"{server}/healthz")[0] == 200

    status, message, sent = _refused_while_streaming(server)
    assert status == 413 and "limit" in message and sent < 16 * MAX_BYTES  # refused while streaming
    assert _get(f"{server}/healthz")[0] == 200

    host = server.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    conn.request("POST", "/v1/audio/transcriptions", b'{"file": "/etc/passwd"}', {"Content-Type": "application/json"})
    assert conn.getresponse().status == 415  # only uploaded bytes are decoded: no path a client names is opened
    conn.close()
    conn = http.client.HTTPConnection(host, timeout=30)
    headers = {"Origin": "https://elsewhere.example", "Content-Type": "multipart/form-data; boundary=x"}
    conn.request("POST", "/v1/audio/transcriptions", wav, headers)
    response = conn.getresponse()
    assert response.status == 403 and "--cors" in json.loads(response.read())["error"]["message"]
    conn.close()
    assert _get(f"{server}/no/such/page")[0] == 404

    # audio it must convert: stereo at 44.1 kHz, mono at 8 kHz; the text is `dasr transcribe`'s of the same file
    wide = audio.resample(samples, rate, 44100)
    for name, converted, new_rate in (
        ("stereo.wav", np.stack([wide, 0.5 * wide], 1), 44100),
        ("narrow.flac", audio.resample(samples, rate, 8000), 8000),
    ):
        path = tmp_path / name
        soundfile.write(path, converted, new_rate)
        status, body, _ = _post(server, path.read_bytes(), name)
        assert status == 200 and body["text"] == _transcribe(capsys, model[1], path)
        assert body["text"]  # and the model still hears words

    status, body = _get(f"{server}/metrics")
    errors = _metric(body.decode(), 'dasr_errors_total{endpoint="/v1/audio/transcriptions"}')
    assert status == 200 and errors >= len(cases) + 3


def _metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus text exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))
