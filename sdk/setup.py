"""Build hook for the SDK: where its contracts package (``modaverse-protos``) comes from.

From a checkout (``pip install ./sdk``, or a git ``…#subdirectory=sdk`` install) the contracts are
the ``protos`` folder beside this one, so the SDK depends on that folder by path and one command
installs both (the contracts generate their stubs while their wheel is built). Wheels made for
distribution (``make dist``) and the repository's editable install (``make install``, which installs
``-e protos`` itself) set ``MODAVERSE_SDK_PROTOS_PIN=1``: then the SDK depends on
``modaverse-protos==<its own version>``, found on an index or with ``--find-links``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PROJECT = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
# Everything but the contracts; the SDK has no server runtime, torch or service among them.
REQUIRES = [
    "grpcio>=1.85.1",
    "grpcio-health-checking>=1.85.1",
    "protobuf>=7.35.1,<8",
    "numpy>=1.26",
]


def requirements(pin: bool) -> list[str]:
    beside = HERE.parent / "protos"
    if pin or not (beside / "pyproject.toml").is_file():  # a wheel built from the sdist lands here too
        contracts = f"modaverse-protos=={PROJECT['version']}"  # released together: the same version
    else:
        contracts = f"modaverse-protos @ {beside.as_uri()}"
    return [contracts, *REQUIRES]


if __name__ == "__main__":  # setuptools runs it so; tests import requirements()
    setup(install_requires=requirements(bool(os.environ.get("MODAVERSE_SDK_PROTOS_PIN"))))
