"""release.root and release.prepare: the chart points the encoder and LLM at exactly what `modaverse-llm
convert-release` writes (its OUT_* names, imported, not repeated here), and the prepare Job fills the claim with it.
The Job's rendered script is run for real here, with stand-ins for `hf` and `modaverse-llm` and a file:// URL for
the ImageBind checkpoint (no network), to check its order, its arguments and that a re-run skips finished steps."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from modaverse_encoder.settings import EncoderSettings
from modaverse_llm.release import OUT_ADAPTER, OUT_ADAPTOR, OUT_BASE
from modaverse_llm.settings import LLMSettings
from tests.helm.chart import (
    CHART,
    EXAMPLES,
    FULLNAME,
    Manifest,
    Rendered,
    env_of,
    main_container,
    render,
    render_error,
)

FULL = EXAMPLES["full-gpu"]
FULL_ROOT: str = yaml.safe_load((CHART / "values-full-gpu.yaml").read_text())["release"]["root"]
RELEASE_ENV = {
    "llm": ("MODAVERSE_BASE_MODEL", "MODAVERSE_ADAPTERS", "MODAVERSE_DEFAULT_ADAPTER"),
    "encoder": ("MODAVERSE_ADAPTOR_PATH", "MODAVERSE_IMAGEBIND_CHECKPOINT"),
}
# The full-gpu example's claim is ReadOnlyMany for the services; the Job writes through a second claim.
PREPARE = ("release.prepare.enabled=true", "release.prepare.existingClaim=modaverse-models-rw")
DEFAULT_SOURCES = {
    "PREPARE_RELEASE_REPO": "xinke-wang/ModaVerse-7b-v0",
    "PREPARE_LLAMA_REPO": "huggyllama/llama-7b",
    "PREPARE_DELTA_REPO": "lmsys/vicuna-7b-delta-v0",
}


def service_env(rendered: Rendered, name: str) -> dict[str, str]:
    return env_of(main_container(rendered.get("Deployment", f"{FULLNAME}-{name}")))


def expected_env(root: str, imagebind: str | None = None) -> dict[str, dict[str, str]]:
    parent = str(PurePosixPath(root).parent)
    return {
        "llm": {
            "MODAVERSE_BASE_MODEL": f"{root}/{OUT_BASE}",
            "MODAVERSE_ADAPTERS": json.dumps({"default": f"{root}/{OUT_ADAPTER}"}),
            "MODAVERSE_DEFAULT_ADAPTER": "default",
        },
        "encoder": {
            "MODAVERSE_ADAPTOR_PATH": f"{root}/{OUT_ADAPTOR}",
            "MODAVERSE_IMAGEBIND_CHECKPOINT": imagebind or f"{parent}/imagebind/imagebind_huge.pth",
        },
    }


def release_env(rendered: Rendered) -> dict[str, dict[str, str]]:
    out = {}
    for name, keys in RELEASE_ENV.items():
        env = service_env(rendered, name)
        out[name] = {k: env[k] for k in keys if k in env}
        if name == "llm" and "MODAVERSE_ADAPTERS" in out[name]:  # compare JSON as data, not as spelling
            out[name]["MODAVERSE_ADAPTERS"] = json.dumps(json.loads(out[name]["MODAVERSE_ADAPTERS"]))
    return out


# Service paths from one root -------------------------------------------------------------------------------


def test_full_gpu_points_the_services_at_the_converter_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render(FULL)
    assert release_env(rendered) == expected_env(FULL_ROOT)
    # ... and the services read them as meant: one adapter, the default one, at the converter's adapter folder.
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MODAVERSE_")]:
            patch.delenv(key)
        for key, value in {**service_env(rendered, "llm"), **service_env(rendered, "encoder")}.items():
            if key in RELEASE_ENV["llm"] + RELEASE_ENV["encoder"]:
                patch.setenv(key, value)
        llm, encoder = LLMSettings(), EncoderSettings()
    assert llm.adapters == {"default": Path(FULL_ROOT) / OUT_ADAPTER}
    assert llm.default_adapter in llm.adapters and llm.base_model == str(Path(FULL_ROOT) / OUT_BASE)
    assert encoder.adaptor_path == Path(FULL_ROOT) / OUT_ADAPTOR


def test_full_gpu_has_no_hand_written_release_paths() -> None:
    """The example sets the root only: a hand-written path in a block's env would win over it (and go stale)."""
    values = yaml.safe_load((CHART / "values-full-gpu.yaml").read_text())
    for name, keys in RELEASE_ENV.items():
        assert not set(values[name].get("env", {})) & set(keys), name


def test_one_root_moves_every_path() -> None:
    root = "/models/mv/v2"
    rendered = render(FULL, (f"release.root={root}",))
    assert release_env(rendered) == expected_env(root)
    for name in RELEASE_ENV:
        assert not [v for v in service_env(rendered, name).values() if FULL_ROOT in v], name


def test_imagebind_checkpoint_is_its_own_value() -> None:
    rendered = render(FULL, ("release.imagebindCheckpoint=/models/ib/huge.pth",))
    assert release_env(rendered) == expected_env(FULL_ROOT, imagebind="/models/ib/huge.pth")
    # Without a root only the checkpoint is set; nothing else is invented.
    alone = release_env(render((), ("release.imagebindCheckpoint=/models/ib/huge.pth",)))
    assert alone == {"llm": {}, "encoder": {"MODAVERSE_IMAGEBIND_CHECKPOINT": "/models/ib/huge.pth"}}


def test_no_root_no_release_env() -> None:
    assert release_env(render((), ())) == {"llm": {}, "encoder": {}}


def test_explicit_env_still_wins_over_the_root() -> None:
    rendered = render(
        FULL,
        (
            "llm.env.MODAVERSE_BASE_MODEL=/models/other-base",
            "global.env.MODAVERSE_DEFAULT_ADAPTER=base",
            "encoder.env.MODAVERSE_IMAGEBIND_CHECKPOINT=/models/ib.pth",
        ),
    )
    expected = expected_env(FULL_ROOT)
    expected["llm"]["MODAVERSE_BASE_MODEL"] = "/models/other-base"
    expected["llm"]["MODAVERSE_DEFAULT_ADAPTER"] = "base"
    expected["encoder"]["MODAVERSE_IMAGEBIND_CHECKPOINT"] = "/models/ib.pth"
    assert release_env(rendered) == expected
    # A block's env wins over global.env here too.
    both = render(FULL, ("global.env.MODAVERSE_DEFAULT_ADAPTER=base", "llm.env.MODAVERSE_DEFAULT_ADAPTER=default"))
    assert service_env(both, "llm")["MODAVERSE_DEFAULT_ADAPTER"] == "default"
    # One entry per name: an override replaces, it is not appended after the chart's value.
    for name in RELEASE_ENV:
        names = [e["name"] for e in main_container(rendered.get("Deployment", f"{FULLNAME}-{name}"))["env"]]
        assert len(names) == len(set(names)), name


# The prepare Job: rendering --------------------------------------------------------------------------------


def prepare_job(rendered: Rendered) -> Manifest:
    (job,) = rendered.of_kind("Job")
    return job


def job_container(job: Manifest) -> Manifest:
    containers: list[Manifest] = job["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def wait_containers(rendered: Rendered) -> dict[str, Manifest]:
    out = {}
    for dep in rendered.of_kind("Deployment"):
        for init in dep["spec"]["template"]["spec"].get("initContainers", []):
            if init["name"] == "wait-for-release":
                out[dep["metadata"]["labels"]["app.kubernetes.io/component"]] = init
    return out


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_prepare_is_off_by_default(example: str) -> None:
    rendered = render(EXAMPLES[example])
    assert not rendered.of_kind("Job")
    assert wait_containers(rendered) == {}


def test_prepare_job_mounts_the_claim_writable_in_the_llm_image() -> None:
    rendered = render(FULL, PREPARE)
    job = prepare_job(rendered)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and not job["metadata"].get("annotations", {}).get("helm.sh/hook")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "modaverse-models-rw"}
    c = job_container(job)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and not mounts["models"].get("readOnly", False)
    assert c["image"] == main_container(rendered.get("Deployment", f"{FULLNAME}-llm"))["image"]
    # Locked down like the services: non-root, read-only root filesystem, emptyDirs for /tmp and /cache.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in c["volumeMounts"] if "emptyDir" in volumes[m["name"]]} == {"/tmp", "/cache"}
    # No GPU: the Job runs on CPU nodes.
    assert not [k for part in c["resources"].values() for k in part if "gpu" in k]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    # Without a separate writable claim the Job uses the services' claim.
    default_claim = prepare_job(render(FULL, ("release.prepare.enabled=true",)))
    volumes = {v["name"]: v for v in default_claim["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "modaverse-models"}


def test_prepare_job_gets_the_root_sources_and_hf_token() -> None:
    c = job_container(prepare_job(render(FULL, PREPARE)))
    env = env_of(c)
    assert env["PREPARE_ROOT"] == FULL_ROOT
    assert env["PREPARE_IMAGEBIND"] == expected_env(FULL_ROOT)["encoder"]["MODAVERSE_IMAGEBIND_CHECKPOINT"]
    assert env["PREPARE_IMAGEBIND_URL"] == "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
    assert {k: env[k] for k in DEFAULT_SOURCES} == DEFAULT_SOURCES
    assert env["PREPARE_LLAMA_DIR"] == "/models/sources/huggyllama/llama-7b"
    assert env["HF_HUB_OFFLINE"] == "1"  # the script goes online for `hf download` only
    token = next(e for e in c["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert c["command"][:2] == ["sh", "-c"]
    script = c["command"][2]
    for sub in ("apply-delta", "convert-release", "verify-release"):
        assert f"modaverse-llm {sub}" in script
    no_token = job_container(prepare_job(render(FULL, (*PREPARE, "global.hfToken.secretName="))))
    assert "HF_TOKEN" not in {e["name"] for e in no_token["env"]}


def test_init_containers_wait_for_the_converted_files_only_with_prepare() -> None:
    waits = wait_containers(render(FULL, PREPARE))
    assert set(waits) == {"encoder", "llm"}
    args = {name: c["command"][4:] for name, c in waits.items()}
    assert args["llm"] == [f"{FULL_ROOT}/{OUT_BASE}/config.json", f"{FULL_ROOT}/{OUT_ADAPTER}/adapter_config.json"]
    imagebind = expected_env(FULL_ROOT)["encoder"]["MODAVERSE_IMAGEBIND_CHECKPOINT"]
    assert args["encoder"] == [f"{FULL_ROOT}/{OUT_ADAPTOR}/adaptor_config.json", imagebind]
    assert wait_containers(render(FULL, (*PREPARE, "release.root=/models/mv/v2")))["llm"]["command"][4] == (
        f"/models/mv/v2/{OUT_BASE}/config.json"
    )


def test_prepare_job_name_follows_its_spec() -> None:
    """A Job's pod template is immutable: changed values must make a new Job, unchanged ones keep the old."""
    name = prepare_job(render(FULL, PREPARE))["metadata"]["name"]
    assert name.startswith(f"{FULLNAME}-prepare-") and len(name) <= 63
    assert prepare_job(render(FULL, (*PREPARE, "release.prepare.backoffLimit=2")))["metadata"]["name"] == name
    assert prepare_job(render(FULL, (*PREPARE, "release.prepare.backoffLimit=5")))["metadata"]["name"] != name


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        ((), "release.prepare.enabled needs release.root"),
        (("release.root=/models/x",), "llm.storage.source is none"),
    ],
)
def test_prepare_refuses_values_without_a_claim(sets: tuple[str, ...], needle: str) -> None:
    assert needle in render_error("release.prepare.enabled=true", *sets)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (("release.root=/data/mv",), "release.root (/data/mv) is not under the claim's mountPath /models"),
        (("release.root=/models",), "release.root (/models) is not under"),
        (("release.prepare.sources.llama.path=/tmp/llama",), "release.prepare.sources.llama (/tmp/llama) is not"),
        (("encoder.storage.existingClaim=other",), "the Job fills one claim"),
        (("encoder.storage.mountPath=/weights",), "encoder.storage.mountPath (/weights) differs"),
    ],
)
def test_prepare_refuses_paths_the_job_cannot_write_or_the_services_cannot_see(
    sets: tuple[str, ...], needle: str
) -> None:
    assert needle in render_error("release.prepare.enabled=true", *sets, files=FULL)


# The prepare Job: its script, run ------------------------------------------------------------------------

# Every stand-in first logs its command line and whether it was allowed online.
LOG_CALL = """
import json, os, sys
from pathlib import Path
with open(os.environ["CALLS"], "a") as log:
    call = {"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "offline": os.environ.get("HF_HUB_OFFLINE")}
    log.write(json.dumps(call) + "\\n")
"""

FAKE_HF = """
args = sys.argv[1:]
assert args[0] == "download", args
repo, local = args[1], Path(args[args.index("--local-dir") + 1])
(local / ".cache" / "huggingface").mkdir(parents=True, exist_ok=True)
(local / "config.json").write_text("{}")
if repo in os.environ.get("FAKE_HF_FAIL", "").split():
    sys.exit("interrupted")
(local / "pytorch_model.pt").write_text(repo)
"""

FAKE_LLM = """
cmd, args = sys.argv[1], sys.argv[2:]
opt = lambda name: Path(args[args.index(name) + 1])
if cmd == "apply-delta":
    assert (opt("--base") / "config.json").is_file() and (opt("--delta") / "config.json").is_file(), args
    out = opt("--out")
    if out.exists():
        sys.exit(f"{out} exists")
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
elif cmd == "convert-release":
    assert (opt("--release") / "pytorch_model.pt").is_file() and (opt("--base") / "config.json").is_file(), args
    out = opt("--out")
    if out.exists():
        sys.exit(f"{out} exists")
    written = {OUT_BASE: "config.json", OUT_ADAPTER: "adapter_config.json", OUT_ADAPTOR: "adaptor_config.json"}
    for sub, name in written.items():
        (out / sub).mkdir(parents=True)
        (out / sub / name).write_text("{}")
elif cmd == "verify-release":
    root = Path(args[0])
    assert (root / OUT_BASE / "config.json").is_file(), root
    if os.environ.get("FAKE_VERIFY_FAIL"):
        sys.exit("verify failed")
else:
    sys.exit(f"unknown subcommand {cmd}")
"""


class Claim:
    """A folder standing for the claim (mounted at /models in the Job), stand-ins on PATH, the Job's env."""

    def __init__(self, tmp: Path, job: Manifest) -> None:
        self.tmp = tmp
        self.claim = tmp / "claim"
        self.claim.mkdir()
        self.calls = tmp / "calls.jsonl"
        self.container = job_container(job)
        self.mount = next(m["mountPath"] for m in self.container["volumeMounts"] if m["name"] == "models")
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        constants = f"OUT_BASE, OUT_ADAPTER, OUT_ADAPTOR = {OUT_BASE!r}, {OUT_ADAPTER!r}, {OUT_ADAPTOR!r}\n"
        for name, source in (("hf", FAKE_HF), ("modaverse-llm", constants + FAKE_LLM)):
            path = bin_dir / name
            path.write_text(f"#!{sys.executable}\n{LOG_CALL}{source}")
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self.upstream = tmp / "upstream" / "imagebind_huge.pth"
        self.upstream.parent.mkdir()
        self.upstream.write_bytes(b"imagebind-huge" * 1000)
        self.path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
        # A file a glob would match in the script's working directory: --include patterns must stay patterns.
        self.cwd = tmp / "cwd"
        self.cwd.mkdir()
        (self.cwd / "a.json").write_text("{}")

    def local(self, path: str) -> Path:
        """Where a path inside the Job's pod lies here."""
        for prefix, here in ((self.mount, self.claim), ("/cache", self.tmp / "cache"), ("/tmp", self.tmp / "tmp")):
            if path == prefix or path.startswith(prefix + "/"):
                return here / path[len(prefix) :].lstrip("/")
        return Path(path)

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": self.path, "CALLS": str(self.calls)}
        for item in self.container["env"]:
            if "value" in item:
                value = item["value"]
                env[item["name"]] = str(self.local(value)) if value.startswith("/") else value
        env["PREPARE_IMAGEBIND_URL"] = self.upstream.as_uri()
        env.update(extra)
        return env

    def run(self, **extra: str) -> subprocess.CompletedProcess[str]:
        self.calls.write_text("")
        return subprocess.run(
            self.container["command"], env=self.env(**extra), cwd=self.cwd, capture_output=True, text=True, timeout=120
        )

    def called(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = [json.loads(line) for line in self.calls.read_text().splitlines()]
        return calls

    def argv(self) -> list[list[str]]:
        return [call["argv"] for call in self.called()]


def rendered_env(job: Manifest) -> dict[str, str]:
    return env_of(job_container(job))


def test_prepare_script_runs_every_step_in_order_then_skips_them(tmp_path: Path) -> None:
    rendered = render(FULL, PREPARE)
    job = prepare_job(rendered)
    env = rendered_env(job)
    claim = Claim(tmp_path, job)
    here = {k: str(claim.local(v)) for k, v in env.items() if k.endswith("_DIR") or k in ("PREPARE_ROOT",)}
    root = here["PREPARE_ROOT"]

    proc = claim.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert claim.argv() == [
        ["hf", "download", DEFAULT_SOURCES["PREPARE_RELEASE_REPO"], "--local-dir", here["PREPARE_RELEASE_DIR"]],
        ["hf", "download", DEFAULT_SOURCES["PREPARE_LLAMA_REPO"], "--local-dir", here["PREPARE_LLAMA_DIR"]],
        ["hf", "download", DEFAULT_SOURCES["PREPARE_DELTA_REPO"], "--local-dir", here["PREPARE_DELTA_DIR"]],
        ["modaverse-llm", "apply-delta", "--base", here["PREPARE_LLAMA_DIR"], "--delta", here["PREPARE_DELTA_DIR"],
         "--out", here["PREPARE_VICUNA_DIR"]],
        ["modaverse-llm", "convert-release", "--release", here["PREPARE_RELEASE_DIR"], "--base",
         here["PREPARE_VICUNA_DIR"], "--out", root],
        ["modaverse-llm", "verify-release", root],
    ]  # fmt: skip
    # Online only for the downloads.
    assert [c["offline"] for c in claim.called()] == ["0", "0", "0", "1", "1", "1"]
    assert claim.local(env["PREPARE_IMAGEBIND"]).read_bytes() == claim.upstream.read_bytes()
    # What the services' init containers wait for is what the Job wrote; their wait command returns at once.
    for wait in wait_containers(rendered).values():
        local = [str(claim.local(p)) for p in wait["command"][4:]]
        assert all(Path(p).exists() for p in local), local
        done = subprocess.run([*wait["command"][:4], *local], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "waiting" not in done.stdout, done.stdout + done.stderr

    # Re-run: every producing step is skipped; the check runs again.
    again = claim.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert claim.argv() == [["modaverse-llm", "verify-release", root]]


def test_prepare_script_uses_sources_already_on_the_claim(tmp_path: Path) -> None:
    job = prepare_job(
        render(
            FULL,
            (
                *PREPARE,
                "release.prepare.sources.llama.path=/models/mine/llama",
                "release.prepare.sources.vicunaDelta.repo=",
                "release.prepare.sources.vicunaDelta.path=/models/mine/delta",
                "release.prepare.sources.modaverse.repo=someone/ModaVerse-fork",
                "release.prepare.sources.modaverse.revision=v1",
                "release.prepare.sources.modaverse.include={*.pt,*.json}",
                "release.prepare.verify=false",
            ),
        )
    )
    claim = Claim(tmp_path, job)
    for folder in ("mine/llama", "mine/delta"):  # copies put there by hand: no hf download metadata
        (claim.claim / folder).mkdir(parents=True)
        (claim.claim / folder / "config.json").write_text("{}")
    proc = claim.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    release_dir = str(claim.local("/models/sources/someone/ModaVerse-fork"))
    vicuna = str(claim.local("/models/sources/vicuna-7b-v0"))
    assert claim.argv() == [
        ["hf", "download", "someone/ModaVerse-fork", "--local-dir", release_dir, "--revision", "v1",
         "--include", "*.pt", "--include", "*.json"],
        ["modaverse-llm", "apply-delta", "--base", str(claim.claim / "mine/llama"), "--delta",
         str(claim.claim / "mine/delta"), "--out", vicuna],
        ["modaverse-llm", "convert-release", "--release", release_dir, "--base", vicuna, "--out",
         str(claim.local(FULL_ROOT))],
    ]  # fmt: skip


def test_prepare_script_resumes_an_interrupted_download(tmp_path: Path) -> None:
    claim = Claim(tmp_path, prepare_job(render(FULL, PREPARE)))
    failed = claim.run(FAKE_HF_FAIL=DEFAULT_SOURCES["PREPARE_LLAMA_REPO"])
    assert failed.returncode != 0
    assert [a[:3] for a in claim.argv()] == [
        ["hf", "download", DEFAULT_SOURCES["PREPARE_RELEASE_REPO"]],
        ["hf", "download", DEFAULT_SOURCES["PREPARE_LLAMA_REPO"]],
    ]
    # The half-downloaded folder has config.json: it must be downloaded again (resumed), not taken as done.
    proc = claim.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [a[:3] for a in claim.argv()] == [
        ["hf", "download", DEFAULT_SOURCES["PREPARE_LLAMA_REPO"]],
        ["hf", "download", DEFAULT_SOURCES["PREPARE_DELTA_REPO"]],
        ["modaverse-llm", "apply-delta", "--base"],
        ["modaverse-llm", "convert-release", "--release"],
        ["modaverse-llm", "verify-release", str(claim.local(FULL_ROOT))],
    ]


def test_prepare_script_skips_what_an_existing_vicuna_makes_unneeded(tmp_path: Path) -> None:
    job = prepare_job(render(FULL, PREPARE))
    claim = Claim(tmp_path, job)
    vicuna = claim.local(rendered_env(job)["PREPARE_VICUNA_DIR"])
    vicuna.mkdir(parents=True)
    (vicuna / "config.json").write_text("{}")
    checkpoint = claim.local(rendered_env(job)["PREPARE_IMAGEBIND"])
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"already here")
    proc = claim.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [a[:2] for a in claim.argv()] == [
        ["hf", "download"],
        ["modaverse-llm", "convert-release"],
        ["modaverse-llm", "verify-release"],
    ]
    assert claim.argv()[0][2] == DEFAULT_SOURCES["PREPARE_RELEASE_REPO"]
    assert checkpoint.read_bytes() == b"already here"


def test_prepare_script_replaces_a_stale_partial_checkpoint(tmp_path: Path) -> None:
    """A file:// server ignores Range: the partial file is rewritten, not appended to."""
    job = prepare_job(render(FULL, PREPARE))
    claim = Claim(tmp_path, job)
    checkpoint = claim.local(rendered_env(job)["PREPARE_IMAGEBIND"])
    checkpoint.parent.mkdir(parents=True)
    Path(f"{checkpoint}.partial").write_bytes(b"imagebind-huge" * 10)
    assert claim.run().returncode == 0
    assert checkpoint.read_bytes() == claim.upstream.read_bytes()
    assert not Path(f"{checkpoint}.partial").exists()


def test_prepare_script_fails_when_verification_fails(tmp_path: Path) -> None:
    claim = Claim(tmp_path, prepare_job(render(FULL, PREPARE)))
    proc = claim.run(FAKE_VERIFY_FAIL="1")
    assert proc.returncode != 0
    assert claim.argv()[-1][:2] == ["modaverse-llm", "verify-release"]
    assert "done:" not in proc.stdout
