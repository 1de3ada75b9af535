"""Audio decoding (WAV, FLAC, OGG Vorbis/Opus, MP3) with libsndfile; length and channels are checked first."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import soundfile as sf

from modaverse_runtime.errors import InvalidArgument

from .checks import checked_mime, describe_error
from .kinds import MediaKind
from .limits import MediaLimits

# Beyond these the bytes-per-second of a compressed stream says little about its
# decoded size (silence in 255-channel Vorbis is tiny), so bound them outright.
MAX_AUDIO_CHANNELS: Final = 8
MAX_AUDIO_SAMPLE_RATE: Final = 384_000


@dataclass(frozen=True)
class DecodedAudio:
    samples: npt.NDArray[np.float32]  # (channels, n), values in [-1, 1]
    sample_rate: int

    @property
    def duration(self) -> float:
        return float(self.samples.shape[1]) / self.sample_rate


def decode_audio(data: bytes, mime_type: str, limits: MediaLimits) -> DecodedAudio:
    """Decode WAV/FLAC/OGG (Vorbis, Opus)/MP3 bytes to float32 (channels, n) samples."""
    mime = checked_mime(MediaKind.AUDIO, data, mime_type, limits)
    if mime == "audio/wav":
        _check_wav_complete(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            declared_frames, rate, channels = int(audio.frames), int(audio.samplerate), int(audio.channels)
            _check_audio_header(declared_frames, rate, channels, limits)
            samples = audio.read(dtype="float32", always_2d=True)
    except InvalidArgument:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidArgument(f"audio data ({mime}) could not be decoded: {describe_error(exc)}") from exc
    n = samples.shape[0]
    if n == 0:
        raise InvalidArgument("audio contains no samples")
    # MP3 frame counts are estimates (no exact length in the format), so only the
    # formats that state their length exactly can be caught short.
    if mime != "audio/mpeg" and n < declared_frames:
        raise InvalidArgument(
            f"audio data ({mime}) is truncated: the header declares {declared_frames} frames, only {n} could be decoded"
        )
    clean = np.clip(np.nan_to_num(samples.T, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return DecodedAudio(samples=np.ascontiguousarray(clean, dtype=np.float32), sample_rate=rate)


def _check_audio_header(frames: int, rate: int, channels: int, limits: MediaLimits) -> None:
    if not 0 < rate <= MAX_AUDIO_SAMPLE_RATE:
        raise InvalidArgument(f"audio sample rate {rate} Hz is outside 1..{MAX_AUDIO_SAMPLE_RATE} Hz")
    if not 0 < channels <= MAX_AUDIO_CHANNELS:
        raise InvalidArgument(f"audio has {channels} channels; at most {MAX_AUDIO_CHANNELS} are supported")
    if frames <= 0:
        raise InvalidArgument("audio contains no samples")
    seconds = frames / rate
    if seconds > limits.max_audio_seconds:
        raise InvalidArgument(
            f"audio is {seconds:.1f} seconds long, over the limit of {limits.max_audio_seconds:g} seconds"
        )
    if frames * channels > limits.max_audio_samples:
        raise InvalidArgument(
            f"audio decodes to {frames * channels} samples ({channels} channels at {rate} Hz), over the limit "
            f"of {limits.max_audio_samples}"
        )


def _check_wav_complete(data: bytes) -> None:
    """libsndfile silently shortens a WAV whose data chunk is cut off; we reject it."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"data":
            # 0 and 0xFFFFFFFF mean "unknown" (streamed WAV, RF64): nothing to compare.
            available = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and available < size:
                raise InvalidArgument(
                    f"audio data (audio/wav) is truncated: the data chunk declares {size} bytes, "
                    f"only {available} are present"
                )
            return
        pos += 8 + size + (size & 1)
