"""The service's Prometheus metrics (the official client, one registry per app)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0)


class ServiceMetrics:
    """Requests and errors by endpoint and status, audio seconds, decode seconds, real-time factor, latency."""

    def __init__(self, in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dasr_requests",
            "Requests answered, by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "dasr_errors",
            "Requests answered with a 4xx or 5xx status, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.audio_seconds = Counter("dasr_audio_seconds", "Seconds of audio decoded", registry=self.registry)
        self.decode_seconds = Counter(
            "dasr_decode_seconds",
            "Seconds spent decoding (audio decoding, fbank, model, search)",
            registry=self.registry,
        )
        self.real_time_factor = Histogram(
            "dasr_real_time_factor",
            "Decode seconds per audio second of each decode",
            buckets=RTF_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "dasr_request_latency_seconds",
            "Seconds from a request's start to its response, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        Gauge("dasr_decodes_in_flight", "Decodes running or queued", registry=self.registry).set_function(in_flight)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request (a WebSocket counts once, when it closes)."""
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_decode(self, audio_s: float, decode_s: float) -> None:
        """Count one decode of ``audio_s`` seconds of audio that took ``decode_s`` seconds."""
        self.audio_seconds.inc(audio_s)
        self.decode_seconds.inc(decode_s)
        if audio_s > 0:
            self.real_time_factor.observe(decode_s / audio_s)

    def render(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
