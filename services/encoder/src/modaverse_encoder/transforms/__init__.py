"""ImageBind input transforms without torchvision, torchaudio or pytorchvideo.

Each produces the tensors ImageBind's own ``imagebind/data.py`` produces from the same
decoded media (deviations are listed in each module's docstring).
"""

from .audio import audio_to_clips, resample, waveform_to_melspec
from .clips import clip_timepoints, clip_timepoints_exact
from .fbank import kaldi_fbank, mel_banks
from .image import CLIP_MEAN, CLIP_STD, image_to_tensor, normalize_channels
from .text import CONTEXT_LENGTH, TextTokenizer
from .video import VideoSource, clip_frame_indices, short_side_scale, uniform_crop, video_to_clips

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CONTEXT_LENGTH",
    "TextTokenizer",
    "VideoSource",
    "audio_to_clips",
    "clip_frame_indices",
    "clip_timepoints",
    "clip_timepoints_exact",
    "image_to_tensor",
    "kaldi_fbank",
    "mel_banks",
    "normalize_channels",
    "resample",
    "short_side_scale",
    "uniform_crop",
    "video_to_clips",
    "waveform_to_melspec",
]
