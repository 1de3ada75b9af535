"""The SDK as its users get it: the built wheels alone in a fresh virtualenv, chatting with a running stack.

The contracts and SDK wheels are built here exactly as ``make dist`` builds them (``python -m build``:
an sdist, then the wheel from that sdist, in an isolated build environment that generates the stubs).
A fresh virtualenv gets those two wheel files and whatever they declare from the package index, nothing
else: no server runtime, no torch, no service. Its python then runs ``sdk_app.py``, a user's
application, against a tiny stack on loopback (encoder, text-to-image generator and gateway as
``modaverse-<svc> serve`` processes of the development virtualenv; the scripted LLM of
``scripted_llm.py`` in this process, so the meta-responses are chosen): text → image, image → text,
streaming with both clients. mypy checks the same application against the installed wheels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from .gateway_fixtures import tiny_routes
from .in_process import BackgroundLoop
from .processes import ServiceProcess, running, service_process, started
from .scripted_llm import start_scripted_llm

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).with_name("sdk_app.py")
QUICKSTART = ROOT / "examples" / "quickstart.py"
VERSION = tomllib.loads((ROOT / "sdk" / "pyproject.toml").read_text())["project"]["version"]
# Never in an application's environment because of the SDK.
SERVER_SIDE = {"torch", "modaverse-runtime", "modaverse-encoder", "modaverse-llm", "modaverse-generators"}
SERVER_SIDE |= {"modaverse-gateway", "modaverse-training", "diffusers", "transformers", "pillow", "pydantic"}
# Run by the fresh python: the distributions `modaverse` requires, transitively (what pip had to install).
CLOSURE = """
import json, re
from importlib.metadata import PackageNotFoundError, distribution
seen, todo = set(), ["modaverse"]
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen:
        continue
    try:
        requires = distribution(name).requires or []
    except PackageNotFoundError:  # a requirement whose marker excludes this platform
        continue
    seen.add(name)
    todo += [re.split(r"[<>=!~ ;\\[(@]", r, maxsplit=1)[0] for r in requires if "extra ==" not in r]
print(json.dumps(sorted(seen)))
"""


def run(
    cmd: list[str], *, timeout: float = 300, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def clean_env(bin_dir: Path) -> dict[str, str]:
    """The environment of a machine that has only the fresh virtualenv: nothing of the dev one on PATH."""
    # MODAVERSE_SDK_PROTOS_PIN: the Makefile's, not a user's (it changes what sdk/setup.py declares).
    gone = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MODAVERSE_SDK_PROTOS_PIN")
    env = {k: v for k, v in os.environ.items() if k not in gone}
    env["PATH"] = os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"])
    return env


@dataclass
class FreshVenv:
    root: Path
    wheels: list[Path]

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(list(args), timeout=timeout, env=clean_env(self.bin), cwd=self.root)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for package in ("protos", "sdk"):
        run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT / package)], timeout=600)
    return out


@pytest.fixture(scope="module")
def fresh(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    root = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    wheels = sorted(dist.glob("*.whl"))
    env = FreshVenv(root, wheels)
    # Only the two wheel files: their dependencies come from the index, and nothing else is asked for.
    env.run(str(env.python), "-m", "pip", "install", "--disable-pip-version-check", *map(str, wheels), timeout=600)
    return env


@dataclass
class TinyStack:
    target: str
    services: list[ServiceProcess]


@pytest.fixture(scope="module")
def stack(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyStack]:
    logs = tmp_path_factory.mktemp("stack-logs")
    encoder = service_process("encoder", logs, model_dir=model_dir)
    generator = service_process("generator", logs, {"MODAVERSE_GENERATOR_KIND": "text-to-image"}, model_dir=model_dir)
    background = BackgroundLoop()
    llm = None
    try:
        llm, _ = background.run(start_scripted_llm())
        with started(encoder, generator, timeout=240):
            env = {
                "MODAVERSE_ENCODER_TARGETS": encoder.target,
                "MODAVERSE_LLM_TARGETS": f"127.0.0.1:{llm.port}",
                "MODAVERSE_ROUTES": tiny_routes({"image": generator.target}),
            }
            with running("gateway", logs, env) as gateway:
                yield TinyStack(gateway.target, [encoder, generator, gateway])
    finally:
        if llm is not None:
            background.run(llm.stop(grace=0))
        background.close()


def installed(fresh: FreshVenv) -> dict[str, str]:
    listing = fresh.run(str(fresh.python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    return {item["name"].lower().replace("_", "-"): item["version"] for item in json.loads(listing.stdout)}


def test_the_wheels_are_the_contracts_and_the_sdk_at_one_version(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"modaverse-{VERSION}-py3-none-any.whl",
        f"modaverse-{VERSION}.tar.gz",
        f"modaverse_protos-{VERSION}-py3-none-any.whl",
        f"modaverse_protos-{VERSION}.tar.gz",
    ]


def test_the_fresh_virtualenv_holds_the_sdk_and_its_declared_dependencies_only(fresh: FreshVenv) -> None:
    packages = installed(fresh)
    assert "torch" not in packages
    assert SERVER_SIDE.isdisjoint(packages), sorted(SERVER_SIDE & set(packages))
    assert packages["modaverse"] == packages["modaverse-protos"] == VERSION
    required = set(json.loads(fresh.run(str(fresh.python), "-c", CLOSURE).stdout))
    assert {"modaverse-protos", "grpcio", "protobuf", "numpy"} <= required
    # Nothing but the two wheels, what they require, and what every virtualenv starts with.
    assert set(packages) - required <= {"pip", "setuptools"}, sorted(set(packages) - required)
    version = fresh.run(str(fresh.bin / "modaverse"), "--version")
    assert version.stdout.splitlines() == [f"modaverse {VERSION}", f"modaverse-protos {VERSION} (API version)"]


def test_pip_install_of_the_sdk_folder_alone_works_from_a_checkout(tmp_path: Path) -> None:
    """`pip install ./sdk` in a fresh virtualenv, nothing else named: the contracts come from the protos
    folder beside it (built, stubs generated, on the way). A copy of the two folders, as a clone has them."""
    import shutil

    checkout = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("*_pb2*.py*", "*.egg-info", "build", "__pycache__", ".generated")
    for package in ("protos", "sdk"):
        shutil.copytree(ROOT / package, checkout / package, ignore=ignore)
    root = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    env = clean_env(root / "bin")
    run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "./sdk"],
        env=env,
        cwd=checkout,
        timeout=600,
    )
    check = (
        "import modaverse, modaverse_protos.gateway.v1.gateway_pb2 as g; print(modaverse.__version__, g.ChatRequest)"
    )
    assert run([str(root / "bin" / "python"), "-c", check], env=env, cwd=tmp_path).stdout.startswith(VERSION)
    listed = run([str(root / "bin" / "python"), "-m", "pip", "list", "--format=json"], env=env).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert "modaverse-protos" in names and SERVER_SIDE.isdisjoint(names), sorted(names)


def test_modaverse_up_without_the_services_says_what_to_install(fresh: FreshVenv, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(fresh.bin / "modaverse"), "up", "--log-dir", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(fresh.bin),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "modaverse-encoder" in result.stderr and "modaverse-gateway" in result.stderr
    assert "not installed" in result.stderr and "make install" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_an_application_chats_through_the_installed_wheels(fresh: FreshVenv, stack: TinyStack, tmp_path: Path) -> None:
    image = tmp_path / "blue_square.png"
    Image.new("RGB", (64, 64), (20, 40, 220)).save(image)
    out = tmp_path / "outputs"
    result = fresh.run(str(fresh.python), str(APP), stack.target, str(image), str(out), timeout=300)
    report = json.loads(result.stdout)

    # The SDK imported is the installed wheel's, at the version the wheels were built with.
    assert Path(report["sdk_file"]).is_relative_to(fresh.root)
    assert report["sdk_version"] == report["api_version"] == VERSION

    drawn = report["text_to_image"]
    assert drawn["text"] == "Here it is."
    assert drawn["errors"] == []
    assert drawn["modalities"] == ["image"] and drawn["mime_types"] == ["image/png"]
    [saved] = drawn["saved"]
    assert Path(saved).parent == out
    with Image.open(saved) as png:
        assert png.format == "PNG"
        png.load()  # decodes the whole file
        assert png.width > 0 and png.height > 0

    # The image went through the encoder: one block of projected rows reached the LLM.
    described = report["image_to_text"]
    assert "messages=1 blocks=2:(1, 256)" in described["text"]
    assert described["media"] == 0

    streamed = report["stream"]
    assert streamed["events"][0] == "TextDelta"
    assert streamed["events"][-1] == "Done" and streamed["done"]
    assert "MetaResponse" in streamed["events"]
    assert "blocks=none" in streamed["text"] and "blocks=none" in streamed["answer"]
    async_streamed = report["async_stream"]
    assert async_streamed["events"][0] == "TextDelta" and async_streamed["done"]

    assert report["routes"] == ["image"]
    assert report["unreachable"] == "UNAVAILABLE"


def mypy(fresh: FreshVenv, folder: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict on ``files`` as a user's project in ``folder``: the modaverse it sees is the fresh
    virtualenv's (its site-packages via --python-executable; no source tree on the path)."""
    config = folder / "mypy.ini"
    config.write_text("[mypy]\nstrict = True\nshow_error_codes = True\n")
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--python-executable",
        str(fresh.python),
        "--cache-dir",
        str(folder / ".mypy_cache"),
        *map(str, files),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=folder, env=env, check=False)


def test_user_code_type_checks_against_the_installed_wheels(fresh: FreshVenv, tmp_path: Path) -> None:
    good = [tmp_path / "app.py", tmp_path / "quickstart.py"]
    good[0].write_text(APP.read_text())
    good[1].write_text(QUICKSTART.read_text())
    bad = tmp_path / "wrong.py"
    bad.write_text(
        "from modaverse import Client\n"
        "from modaverse_protos.common.v1 import common_pb2\n"
        "client = Client()\n"
        "client.chat(42)\n"
        "answer: int = client.chat('hi').text\n"
        "media = common_pb2.Media(mime_type=3)\n"
        "client.chat('hi', imagez=['cat.png'])\n"
        "for event in client.chat('hi', stream=True):\n"
        "    event.text\n"
    )
    result = mypy(fresh, tmp_path, *good, bad)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    # The application and the README's example are clean; every mistake is caught, which needs the
    # SDK's annotations (py.typed) and the contracts' .pyi stubs from the wheels.
    assert [e for e in errors if not e.startswith("wrong.py")] == [], result.stdout
    expected = {
        4: "[call-overload]",  # chat(text: str, ...)
        5: "[assignment]",  # ChatResult.text is a str
        6: "[arg-type]",  # Media.mime_type is a str (the generated .pyi)
        7: "[call-overload]",  # no such option
        9: "[union-attr]",  # a ChatEvent is a union: only TextDelta has .text
    }
    for line, code in expected.items():
        assert any(e.startswith(f"wrong.py:{line}:") and code in e for e in errors), (line, result.stdout)
    assert {int(e.split(":")[1]) for e in errors} == set(expected), result.stdout  # and nothing else
