"""Input media of the kinds that transform one, decoded before the request joins the queue (a bad file
fails its own request, never a batch)."""

from __future__ import annotations

from PIL.Image import Image

from modaverse_runtime.errors import InvalidArgument
from modaverse_runtime.media import MediaLimits, decode_image

from .base import InputImage


def decode_input_image(image: InputImage, limits: MediaLimits) -> Image:
    """The RGB pixels (first frame, EXIF-upright); InvalidArgument naming ``image`` for anything undecodable."""
    try:
        return decode_image(image.data, image.mime_type, limits).image
    except InvalidArgument as exc:
        raise InvalidArgument(f"image: {exc.message}") from exc
