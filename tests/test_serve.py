"""`dasr serve`: the OpenAI client, the WebSocket stream, bad inputs, the page in headless Chromium.

One tiny model is trained (150 steps on the 8 committed espeak utterances: it reads them back)
and exported with its LM once per module; the service runs as a real `dasr serve` process on a
free loopback port and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import SPEECH, make_speech_data_dir, train_tiny

from dasr.cli import main
from dasr.data import audio
from dasr.data.features import compute_features
from dasr.data.manifest import read_manifest, write_manifest
from dasr.decode.export import export_onnx
from dasr.decode.lm_build import build_lm
from dasr.decode.recognizer import open_recognizer
from dasr.errors import DasrError

openai = pytest.importorskip("openai", reason="the test extra: pip install 'dasr[test]'")
websockets_client = pytest.importorskip("websockets.sync.client", reason="the test extra: pip install 'dasr[test]'")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

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


def _add_padded_copies(data: Path) -> None:
    """Train also on each utterance after 0.5 s and before 0.5 s or 2 s of digital silence (what a
    microphone button records around it), so that the tiny model reads those too; features recomputed."""
    train = read_manifest(data / "train.jsonl")
    padded = []
    for utt, after_s in itertools.product(train, (0.5, 2.0)):
        path = data / f"{utt.id}-{after_s}.flac"
        samples = np.concatenate([_silence(0.5), audio.load(utt.audio), _silence(after_s)])
        soundfile.write(path, samples, audio.TARGET_RATE)
        padded.append(
            dataclasses.replace(utt, id=path.stem, audio=str(path), duration=len(samples) / audio.TARGET_RATE)
        )
    write_manifest(data / "train.jsonl", train + padded)
    compute_features(data, jobs=1)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * audio.TARGET_RATE), np.float32)


def _trained(root: Path, padded: bool) -> tuple[Path, Path, Path]:
    """(exp dir, export dir with lm.arpa, data dir) of the tiny model trained under ``root``."""
    data = make_speech_data_dir(root)
    if padded:
        _add_padded_copies(data)
    build_lm(data, order=2)
    train_tiny(data, root / "exp", steps=150)
    export_onnx(root / "exp", root / "onnx", lm_data=data)
    return root / "exp", root / "onnx", data


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny model of the 8 utterances: it reads them back."""
    return _trained(tmp_path_factory.mktemp("serve"), padded=False)


@contextlib.contextmanager
def _serving(onnx_dir: Path):
    """The URL of `dasr serve ONNX_DIR` (its LM from the export) in its own process, stopped at the end."""
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
def server(model):
    """The URL of the tiny model's service."""
    with _serving(model[1]) as url:
        yield url


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


def _pcm16(path: str) -> bytes:
    """The 16 kHz mono samples of ``path`` as 16-bit PCM (exact for the 16-bit fixture files)."""
    return (audio.load(path) * 32768.0).round().astype("<i2").tobytes()


def _ws(server: str, query: str = "", **kw):
    return websockets_client.connect(
        f"ws{server.removeprefix('http')}/v1/audio/stream{query}", proxy=None, open_timeout=30, **kw
    )


def _until_closed(ws) -> list[dict]:
    """The messages the service sends until it closes the WebSocket (normally or not)."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=60)))
    except ConnectionClosed:
        return messages


def test_websocket_streams_partials_then_the_final_text_of_dasr_transcribe(server, model, transcribed):
    path = FILES[4]
    pcm = _pcm16(path)
    first = 2 * audio.TARGET_RATE  # 1.0 s of audio: past the 0.5 s a partial waits for
    with _ws(server) as ws:
        ws.send(pcm[:first])
        partial = json.loads(ws.recv(timeout=60))  # the decoder is idle: a partial of exactly this second
        for start in range(first, len(pcm), 3200):  # then 0.1 s chunks
            ws.send(pcm[start : start + 3200])
        ws.send(json.dumps({"type": "end"}))
        messages = _until_closed(ws)
    final = messages[-1]
    assert {m["type"] for m in messages[:-1]} <= {"partial"} and final["type"] == "final"
    assert final["text"] == transcribed[path] and abs(final["duration"] - len(pcm) / 2 / audio.TARGET_RATE) < 1e-3
    assert " ".join(w["word"] for w in final["words"]) == final["text"]
    recognizer = open_recognizer(model[1])
    assert partial == {"type": "partial", "text": recognizer.recognize(audio.load(path)[: first // 2]).text}


def test_websocket_garbage_and_disconnects_are_refused_and_the_service_keeps_serving(server):
    pcm = _pcm16(FILES[0])
    cases = {
        "text that is not JSON": ("hello", 1003, "JSON"),
        "an unknown event": (json.dumps({"type": "pause"}), 1003, "end"),
        "odd bytes": (b"\x01\x02\x03", 1003, "16-bit"),
    }
    for name, (message, code, words) in cases.items():
        with _ws(server) as ws:
            ws.send(pcm[:6400])
            ws.send(message)
            replies = _until_closed(ws)
            assert replies[-1]["type"] == "error" and words in replies[-1]["message"], name
            assert ws.close_code == code, name
    with _ws(server, "?sample_rate=7") as ws:
        assert "sample_rate" in json.loads(ws.recv(timeout=30))["message"]
    with _ws(server) as ws:  # the end at once: no audio to decode
        ws.send(json.dumps({"type": "end"}))
        assert "zero-length audio" in json.loads(ws.recv(timeout=30))["message"]
    for abrupt in (False, True, True):  # disconnects mid-stream, with a partial decode running
        with _ws(server) as ws:
            ws.send(pcm[: 2 * audio.TARGET_RATE])
            if abrupt:  # the connection drops without a close frame
                ws.socket.shutdown(socket.SHUT_RDWR)
    with pytest.raises(InvalidStatus) as refused:
        _ws(server, origin="https://elsewhere.example").close()
    assert refused.value.response.status_code == 403

    assert _get(f"{server}/healthz")[0] == 200
    with _ws(server) as ws:  # and a good stream still works
        ws.send(pcm)
        ws.send(json.dumps({"type": "end"}))
        assert _until_closed(ws)[-1]["type"] == "final"
    metrics = _get(f"{server}/metrics")[1].decode()
    assert _metric(metrics, 'dasr_requests_total{endpoint="/v1/audio/stream",status="499"}') == 3
    assert _metric(metrics, 'dasr_requests_total{endpoint="/v1/audio/stream",status="400"}') == 5


def test_page_health_and_metrics(server):
    status, page = _get(server)
    assert status == 200 and b'id="mic"' in page and b'type="file"' in page and b"http" not in page.split(b"<script")[0]
    status, worklet = _get(f"{server}/pcm-worklet.js")
    assert status == 200 and b"registerProcessor" in worklet
    status, health = _get(f"{server}/healthz")
    assert status == 200 and json.loads(health)["status"] == "ok"
    with open(FILES[2], "rb") as f:
        _client(server).audio.transcriptions.create(model="dasr", file=f)
    text = _get(f"{server}/metrics")[1].decode()
    for name in (
        "dasr_requests_total",
        "dasr_errors_total",
        "dasr_audio_seconds_total",
        "dasr_decode_seconds_total",
        "dasr_real_time_factor_bucket",
        "dasr_request_latency_seconds_bucket",
        "dasr_decodes_in_flight",
    ):
        assert f"\n{name}" in text, name
    assert _metric(text, 'dasr_requests_total{endpoint="/v1/audio/transcriptions",status="200"}') >= 1
    assert _metric(text, "dasr_audio_seconds_total") >= soundfile.info(FILES[2]).duration
    assert _metric(text, "dasr_real_time_factor_count") >= 1


def test_missing_extra_names_the_install_command(monkeypatch, capsys):
    import importlib.util

    from dasr.serve import require_dependencies

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(DasrError, match=r"pip install 'dasr\[serve\]'"):
        require_dependencies()
    assert main(["serve", "no-such-dir"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == "dasr: error: dasr serve needs uvicorn, which is not installed: pip install 'dasr[serve]'"
    )


def test_pool_bounds_the_queue_refuses_with_503_and_times_out(model):
    """Jobs held on an event fill the pool: the next request is refused at once (503 + Retry-After),
    a partial is skipped, a held job times out but keeps its place until it really ends."""
    from starlette.testclient import TestClient

    from dasr.serve.app import create_app
    from dasr.serve.pool import DecodeTimeout
    from dasr.serve.service import ServeSettings

    release = threading.Event()

    def held(recognizer):
        release.wait(timeout=60)
        return "released"

    app = create_app(open_recognizer(model[1]), ServeSettings(workers=1, max_queue=1, timeout_s=1.0))
    pool = app.state.service.pool
    data = Path(FILES[0]).read_bytes()
    try:
        with TestClient(app) as client:
            holders = [client.portal.start_task_soon(pool.run, held) for _ in range(2)]  # 1 running + 1 queued
            while pool.in_flight < 2:
                time.sleep(0.01)
            refused = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", data)})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
            assert "busy" in refused.json()["error"]["message"]
            assert client.portal.call(lambda: pool.run(held, only_if_idle=True)) is None
            for holder in holders:  # neither finishes within the 1 s timeout
                with pytest.raises(DecodeTimeout):
                    holder.result(timeout=30)
            assert pool.in_flight == 1  # the running job keeps its place until it ends; the queued one was dropped
            late = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", data)})
            assert late.status_code == 503 and "longer than 1 s" in late.json()["error"]["message"]
            release.set()
            while pool.in_flight:
                time.sleep(0.01)
            served = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", data)}, data={"model": "dasr"})
            assert served.status_code == 200 and served.json()["text"] == open_recognizer(model[1]).transcribe(FILES[0])
    finally:
        release.set()


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


#: page script that keeps a copy of every PCM message the page sends (read back by the test)
RECORD_SENT = (
    "window.sentPcm = []; const send = WebSocket.prototype.send;"
    "WebSocket.prototype.send = function (data) {"
    "  if (data instanceof ArrayBuffer) window.sentPcm.push(...new Int16Array(data));"
    "  return send.call(this, data); };"
)


def _snr_db(got: np.ndarray, want: np.ndarray) -> float:
    """SNR of ``got`` against ``want`` after aligning their starts (the microphone opens a few ms late or early)."""
    lag = int(np.argmax(np.correlate(got[: audio.TARGET_RATE * 2], want[: audio.TARGET_RATE], "valid")))
    got = got[lag : lag + len(want)]
    want = want[: len(got)]
    return float(10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2)))


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver packages")
def test_browser_microphone_gets_the_text_of_dasr_transcribe(tmp_path, capsys):
    """Headless Chromium plays FILE.wav as its microphone into the page: the page sends FILE's audio
    (checked after Chromium's resampling) and shows `dasr transcribe`'s text of exactly the audio it
    sent. Also saves a screenshot (docs/serve-page.png is one).

    FILE holds the pauses a microphone button records around speech (0.5 s before, 1.5 s after).
    The text is compared with that of the audio sent, not of FILE: the microphone opens up to
    ~10 ms late or early, which shifts the phase of the model's 3-frame stacking, and the tiny test
    model (8 utterances) reads FILE's words only at some phases."""
    from selenium import webdriver

    _, onnx_dir, _ = _trained(tmp_path / "padded", padded=True)
    wav = tmp_path / "utterance.wav"
    samples = np.concatenate([_silence(0.5), audio.load(FILES[6]), _silence(1.5)])
    soundfile.write(wav, samples, audio.TARGET_RATE, subtype="PCM_16")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--window-size=900,700",
    ):
        options.add_argument(flag)
    with _serving(onnx_dir) as server:
        shown, sent = _press_the_microphone_button(server, options, len(samples) / audio.TARGET_RATE, tmp_path)
    assert _snr_db(sent.astype(float), (samples * 32768).astype(float)) > 10  # the page sent the microphone's audio
    soundfile.write(tmp_path / "sent.wav", sent, audio.TARGET_RATE)
    assert shown == _transcribe(capsys, onnx_dir, tmp_path / "sent.wav") and shown
    assert (tmp_path / "serve-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _press_the_microphone_button(server: str, options, seconds: float, tmp_path: Path) -> tuple[str, np.ndarray]:
    """Start the page's microphone, stop it after ``seconds``; the final text shown and the PCM sent."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(server)
        driver.execute_script(RECORD_SENT)
        mic = driver.find_element(By.ID, "mic")
        mic.click()
        WebDriverWait(driver, 60).until(lambda d: mic.get_attribute("data-state") == "recording")
        time.sleep(seconds + 0.2)  # the file plays once, in real time
        mic.click()
        WebDriverWait(driver, 120).until(lambda d: mic.get_attribute("data-state") in ("done", "error"))
        assert mic.get_attribute("data-state") == "done", driver.find_element(By.ID, "mic-status").text
        shown = driver.find_element(By.ID, "mic-text").text
        sent = np.array(driver.execute_script("return window.sentPcm"), np.int16)
        driver.save_screenshot(str(tmp_path / "serve-page.png"))
    finally:
        driver.quit()
    return shown, sent
