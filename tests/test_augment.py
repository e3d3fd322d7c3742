"""Speaker and channel variety on real synthesized speech: each transform does what it says, from the seed."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from dasr.data import augment, tts

pytestmark = [
    pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed"),
    pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed"),
]
RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    text = "seven of hearts and eight of spades, nine of diamonds and a queen of clubs, all of them on the table"
    return tts.speak("flite:kal16", text).astype(np.float64)


def median_f0(samples: np.ndarray) -> float:
    """Median f0 of the loud voiced frames, from the autocorrelation peak between 60 and 250 Hz."""
    frame, hop = 1024, 256
    frames = [samples[i : i + frame] for i in range(0, len(samples) - frame, hop)]
    energy = np.array([np.sum(f**2) for f in frames])
    lo, hi = RATE // 250, RATE // 60
    f0s = []
    for f in (f for f, e in zip(frames, energy) if e > 0.1 * energy.max()):
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(RATE / lag)
    assert len(f0s) > 20
    return float(np.median(f0s))


def band_energy(samples: np.ndarray, lo_hz: float, hi_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    return float(spectrum[(freqs >= lo_hz) & (freqs < hi_hz)].sum())


def test_pitch_shift_moves_f0_by_the_semitones_and_keeps_the_duration(speech):
    f0 = median_f0(speech)
    up = augment.speaker(speech, 4.0, 1.0)
    down = augment.speaker(speech, -4.0, 1.0)
    assert median_f0(up) / f0 == pytest.approx(2 ** (4 / 12), rel=0.06)
    assert median_f0(down) / f0 == pytest.approx(2 ** (-4 / 12), rel=0.06)
    assert len(up) == pytest.approx(len(speech), rel=0.02)


def test_pitch_shift_moves_the_formants_too(speech):
    # sox pitch resamples: the spectral centroid (formants) moves with the pitch
    def centroid(x):
        spectrum = np.abs(np.fft.rfft(x))
        return float((np.fft.rfftfreq(len(x), 1 / RATE) * spectrum).sum() / spectrum.sum())

    assert centroid(augment.speaker(speech, 4.0, 1.0)) > 1.1 * centroid(speech)


def test_tempo_changes_the_duration_not_the_pitch(speech):
    fast = augment.speaker(speech, 0.0, 1.25)
    slow = augment.speaker(speech, 0.0, 0.8)
    assert len(fast) == pytest.approx(len(speech) / 1.25, rel=0.03)
    assert len(slow) == pytest.approx(len(speech) / 0.8, rel=0.03)
    assert median_f0(fast) == pytest.approx(median_f0(speech), rel=0.05)


def test_telephone_keeps_the_band_below_4_khz_and_the_level(speech):
    phone = augment.telephone(speech)
    assert len(phone) == len(speech)
    total = band_energy(phone, 0, RATE / 2)
    assert band_energy(phone, 4000, RATE / 2) < 1e-4 * total  # nothing above the 8 kHz Nyquist limit
    assert band_energy(phone, 0, 200) < 0.02 * total  # the 300 Hz high-pass
    before = band_energy(speech, 0, 200) / band_energy(speech, 0, RATE / 2)
    assert before > 0.05  # kal16 has energy there to remove
    assert np.sqrt(np.mean(phone**2)) == pytest.approx(np.sqrt(np.mean(speech**2)), rel=0.5)


def test_mu_law_codes_quantise_a_slow_ramp_into_at_most_256_levels():
    ramp = np.linspace(-0.5, 0.5, RATE)
    narrow_levels = len(np.unique(np.round(augment.telephone(ramp)[::2], 6)))
    assert narrow_levels > 50  # a ramp stays a ramp
    # coding alone: compare the codec's error on a quiet and a loud sine, relative to its level
    quiet, loud = 0.01 * np.sin(np.arange(RATE) * 0.1), 0.9 * np.sin(np.arange(RATE) * 0.1)
    rel = [np.std(augment.telephone(x) - x) / np.std(x) for x in (quiet, loud)]
    assert rel[0] < 3 * rel[1]  # mu-law: relative error roughly level-independent


def test_room_reverberation_time_is_the_rooms_rt60():
    for rt60 in (0.2, 0.5):
        room = augment.Room((6.0, 5.0, 3.0), rt60, (1.5, 1.5, 1.5), (4.0, 3.5, 1.2))
        rir = augment.room_impulse_response(room)
        import pyroomacoustics as pra

        assert pra.experimental.measure_rt60(rir, RATE) == pytest.approx(rt60, rel=0.35)


def test_reverberation_keeps_length_and_alignment_and_smears_the_speech(speech):
    room = augment.Room((6.0, 5.0, 3.0), 0.5, (1.5, 1.5, 1.5), (4.0, 3.5, 1.2))
    wet = augment.reverberate(speech, room)
    assert len(wet) == len(speech)
    click = np.zeros(RATE)
    click[1000] = 1.0
    assert int(np.argmax(np.abs(augment.reverberate(click, room)))) == 1000  # aligned on the direct path
    # the tail after the last word is filled with reverberation
    env = np.abs(speech)
    end = int(np.nonzero(env > 0.05 * env.max())[0][-1])
    tail = slice(end + 400, min(end + 2400, len(speech)))
    assert np.mean(wet[tail] ** 2) > 10 * np.mean(speech[tail] ** 2) + 1e-12


@pytest.mark.parametrize("kind", ["white", "pink"])
def test_noise_is_mixed_at_the_drawn_snr(speech, kind):
    noise = augment.colored_noise(kind, len(speech), np.random.default_rng(0))
    for snr in (10.0, 25.0):
        mixed = augment.add_noise(speech, noise, snr)
        measured = 10 * np.log10(np.mean(speech**2) / np.mean((mixed - speech) ** 2))
        assert measured == pytest.approx(snr, abs=1e-6)
    spectrum = np.abs(np.fft.rfft(noise)) ** 2
    low, high = spectrum[100:1000].mean(), spectrum[10000:20000].mean()
    assert (low / high > 10) == (kind == "pink")


def test_draw_is_deterministic_and_in_range():
    draws = [augment.draw(random.Random(7), semitones=2.5) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(1)
    many = [augment.draw(rng, semitones=-1.0) for _ in range(2000)]
    assert all(-4.0 <= a.semitones <= 2.0 and 0.85 <= a.tempo <= 1.15 for a in many)
    assert np.mean([a.room is not None for a in many]) == pytest.approx(augment.ROOM_FRACTION, abs=0.04)
    assert np.mean([a.telephone for a in many]) == pytest.approx(augment.TELEPHONE_FRACTION, abs=0.04)
    assert np.mean([a.noise is not None for a in many]) == pytest.approx(augment.NOISE_FRACTION, abs=0.04)
    assert all((a.noise is None) == (a.snr_db is None) for a in many)
    assert len({a.room for a in many if a.room}) > augment.ROOMS // 2
    extra = many[0].extra()
    assert set(extra) == {"semitones", "tempo", "room", "noise", "snr_db", "channel"}


def test_apply_makes_the_same_bytes_from_the_same_draw(speech):
    rng = random.Random(3)
    aug = next(a for a in (augment.draw(rng) for _ in range(200)) if a.room and a.noise in ("white", "pink"))
    aug = augment.Augmentation(aug.semitones, aug.tempo, aug.room, aug.noise, aug.snr_db, True, aug.noise_seed)
    once, again = augment.apply(speech, aug), augment.apply(speech, aug)
    assert once.tobytes() == again.tobytes()
    assert len(once) == pytest.approx(len(speech) / aug.tempo, rel=0.03)
    assert band_energy(once, 4000, RATE / 2) < 1e-4 * band_energy(once, 0, RATE / 2)


def test_babble_needs_a_source(speech):
    with pytest.raises(ValueError, match="babble"):
        augment.apply(speech, augment.Augmentation(noise="babble", snr_db=10.0))
    talker = tts.speak("flite:awb", "what time is it")
    babbled = augment.apply(
        speech,
        augment.Augmentation(noise="babble", snr_db=10.0, noise_seed=1),
        lambda n, rng: np.roll(np.resize(talker, n), rng.integers(n)),
    )
    measured = 10 * np.log10(np.mean(speech**2) / np.mean((babbled - speech) ** 2))
    assert measured == pytest.approx(10.0, abs=1e-6)
