"""Every rendered manifest validates: core kinds against the Kubernetes JSON schemas (strict: unknown fields are
errors), KEDA ScaledObjects and ServiceMonitors against the @kubernetes-models schemas."""

from __future__ import annotations

import copy

import pytest

from tests.helm.chart import (
    EXAMPLES,
    KUBE_VERSION,
    Manifest,
    Rendered,
    crd_unknown_fields,
    kubernetes_validate,
    render,
    validate_crds,
)

CRD_GROUPS = ("keda.sh/", "monitoring.coreos.com/")

# Feature switches beyond the examples, so each template branch is validated at least once.
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{f"example:{name}": (files, ()) for name, files in EXAMPLES.items()},
    "tls+mtls": (
        EXAMPLES["full-gpu"],
        (
            "global.tls.enabled=true",
            "global.tls.secretName=mv-internal-tls",
            "global.tls.mtls=true",
            "gateway.tls.enabled=true",
            "gateway.tls.secretName=mv-gateway-tls",
            "gateway.tls.mtls=true",
        ),
    ),
    "tokens+adapters": (
        EXAMPLES["full-gpu"],
        (
            "global.tls.enabled=true",
            "global.tls.secretName=mv-internal-tls",
            "global.backendAuth.secretName=mv-backend-auth",
            "gateway.auth.secretName=mv-callers",
            "llm.runtimeAdapters.enabled=false",
        ),
    ),
    "ingress+lb": (
        (),
        (
            "ingress.enabled=true",
            "ingress.tlsSecretName=mv-ingress-tls",
            "gateway.service.type=LoadBalancer",
            "gateway.service.loadBalancerSourceRanges={10.0.0.0/8}",
        ),
    ),
    "scale-to-zero+existing-claim": (
        EXAMPLES["full-gpu"],
        (
            "generators.t2v.autoscaling.minReplicas=0",
            "encoder.storage.source=existingClaim",
            "encoder.storage.existingClaim=weights",
            "global.gpu.runtimeClassName=nvidia",
            "global.gpu.nodeSelector.nvidia\\.com/gpu\\.product=NVIDIA-H100-80GB-HBM3",
            "networkPolicy.gatewayFrom[0].ipBlock.cidr=10.0.0.0/8",
        ),
    ),
    "no-networkpolicy-no-sa": (EXAMPLES["tiny-cpu"], ("networkPolicy.enabled=false", "serviceAccount.create=false")),
    # The gateway follows EndpointSlices through the API: its ServiceAccount, Role and RoleBinding.
    "kubernetes-discovery": (EXAMPLES["full-gpu"], ("gateway.discovery=kubernetes",)),
    # The web front door (on in example:tiny-cpu): with GPUs, then with every option (its NetworkPolicy, Ingress,
    # Secrets, HTTPS probes).
    "web": ((), ("web.enabled=true",)),
    "web-everything": (
        EXAMPLES["full-gpu"],
        (
            "web.enabled=true",
            "web.replicas=2",
            "web.pdb.minAvailable=1",
            "web.tls.enabled=true",
            "web.tls.secretName=mv-web-tls",
            "gateway.tls.enabled=true",
            "gateway.tls.secretName=mv-gateway-tls",
            "web.gatewayToken.secretName=mv-web-gateway-token",
            "web.auth.secretName=mv-web-tokens",
            "web.ingress.enabled=true",
            "web.ingress.tlsSecretName=mv-web-ingress-tls",
            "web.service.type=LoadBalancer",
            "web.service.loadBalancerSourceRanges={10.0.0.0/8}",
            "web.extraEnv[0].name=EXTRA",
            "web.extraEnv[0].value=on",
            "networkPolicy.gatewayFrom[0].ipBlock.cidr=10.0.0.0/8",
            "networkPolicy.webFrom[0].namespaceSelector.matchLabels.role=edge",
            "networkPolicy.webEgress[0].to[0].ipBlock.cidr=0.0.0.0/0",
            "networkPolicy.webEgress[0].ports[0].port=443",
        ),
    ),
    # The release.prepare Job and the encoder / LLM pods' wait-for-release init containers.
    "release-prepare": (
        EXAMPLES["full-gpu"],
        (
            "release.prepare.enabled=true",
            "release.prepare.existingClaim=modaverse-models-rw",
            "release.prepare.nodeSelector.pool=cpu",
            "release.prepare.tolerations[0].key=batch",
            "release.prepare.tolerations[0].operator=Exists",
            "encoder.storage.download.enabled=true",
            "encoder.storage.download.repos[0].repo=a/b",
        ),
    ),
}


def _split(rendered: Rendered) -> tuple[list[Manifest], list[Manifest]]:
    core = [d for d in rendered.docs if not d["apiVersion"].startswith(CRD_GROUPS)]
    crds = [d for d in rendered.docs if d["apiVersion"].startswith(CRD_GROUPS)]
    return core, crds


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_core_manifests_match_kubernetes_schemas(variant: str) -> None:
    kv = kubernetes_validate()
    files, sets = VARIANTS[variant]
    core, _ = _split(render(files, sets))
    assert core
    errors = []
    for doc in core:
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except Exception as err:  # ValidationError, SchemaNotFoundError, InvalidSchemaError
            errors.append(f"{doc['kind']} {doc['metadata']['name']}: {err}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_custom_resources_match_their_schemas(variant: str) -> None:
    files, sets = VARIANTS[variant]
    _, crds = _split(render(files, sets))
    kinds = {d["kind"] for d in crds}
    assert kinds <= {"ScaledObject", "ServiceMonitor"}, kinds
    if not crds:
        return
    results = validate_crds(crds)
    errors = [f"{d['kind']} {d['metadata']['name']}: {r}" for d, r in zip(crds, results, strict=True) if r]
    # Strict, as for the core kinds: no field the resource's declared type lacks.
    errors += [f"{d['kind']} {d['metadata']['name']}: unknown field {p}" for d in crds for p in crd_unknown_fields(d)]
    assert not errors, "\n".join(errors)


def test_release_prepare_variant_validates_a_job() -> None:
    """The variant above does render the Job (so the schema check covers it)."""
    files, sets = VARIANTS["release-prepare"]
    core, _ = _split(render(files, sets))
    assert [d["kind"] for d in core].count("Job") == 1


def test_full_gpu_renders_both_custom_resource_kinds() -> None:
    _, crds = _split(render(EXAMPLES["full-gpu"]))
    assert {d["kind"] for d in crds} == {"ScaledObject", "ServiceMonitor"}


def test_validators_reject_broken_manifests() -> None:
    """Negative controls: the validators above do reject what they should."""
    kv = kubernetes_validate()
    rendered = render(EXAMPLES["full-gpu"])
    dep = copy.deepcopy(rendered.of_kind("Deployment")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {"port": 1}
    with pytest.raises(kv.ValidationError):
        kv.validate(dep, KUBE_VERSION, strict=True)
    svc = copy.deepcopy(rendered.of_kind("Service")[0])
    svc["spec"]["ports"][0]["port"] = "grpc"
    with pytest.raises(kv.ValidationError):
        kv.validate(svc, KUBE_VERSION, strict=True)

    scaled = copy.deepcopy(rendered.of_kind("ScaledObject")[0])
    scaled["spec"]["minReplicaCount"] = "one"
    monitor = copy.deepcopy(rendered.of_kind("ServiceMonitor")[0])
    monitor["spec"]["endpoints"] = "metrics"
    results = validate_crds([scaled, monitor])
    assert all(results), results

    typo = copy.deepcopy(rendered.of_kind("ScaledObject")[0])
    typo["spec"]["minReplicas"] = 1
    typo["spec"]["triggers"][0]["metdata"] = {}
    assert sorted(crd_unknown_fields(typo)) == [".spec.minReplicas", ".spec.triggers[0].metdata"]
    typo_monitor = copy.deepcopy(rendered.of_kind("ServiceMonitor")[0])
    typo_monitor["spec"]["endpoints"][0]["scrape_interval"] = "30s"
    assert crd_unknown_fields(typo_monitor) == [".spec.endpoints[0].scrape_interval"]
