"""ModaVerse shared server runtime."""

import os

# Media decoding spawns ffmpeg; gRPC's fork handlers would log a warning for every spawn
# and buy nothing (children never use gRPC). Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
