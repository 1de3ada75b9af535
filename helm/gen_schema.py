"""Writes helm/modaverse/values.schema.json (JSON Schema draft-07) from the definitions below.

    python helm/gen_schema.py          # rewrite the schema
    python helm/gen_schema.py --check  # exit 1 when the committed file is stale (tests/helm runs this)

The schema is strict: unknown keys are errors wherever the chart owns the shape; Kubernetes-shaped values
(affinity, tolerations, strategy, extra HPA metrics) are left to the Kubernetes schemas the tests apply to
the rendered manifests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

SCHEMA_PATH = Path(__file__).resolve().parent / "modaverse" / "values.schema.json"

STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY: Schema = {
    "oneOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"},
        {"type": "number", "minimum": 0},
    ]
}


def obj(props: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    """A closed object: only ``props`` are allowed."""
    out: Schema = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    out: Schema = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def string_map() -> Schema:
    return {"type": "object", "additionalProperties": {"type": "string"}}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


IMAGE = obj(
    {
        "repository": {"type": "string", "minLength": 1},
        "tag": STRING,
        "pullPolicy": enum("Always", "IfNotPresent", "Never"),
    },
    ["repository"],
)

GPU = obj(
    {
        "enabled": BOOL,
        "count": integer(1, 16),
        "resourceName": {"type": "string", "pattern": r"^[a-z0-9.-]+/[a-zA-Z0-9._-]+$"},
    },
    ["enabled"],
    # A GPU block must say how many GPUs it wants.
    **{"if": {"properties": {"enabled": {"const": True}}}, "then": {"required": ["count"]}},
)

RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    }
)

ENV = {
    "type": "object",
    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}

EXTRA_ENV = {
    "type": "array",
    "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
}

STORAGE = obj(
    {
        "source": enum("none", "existingClaim", "pvc"),
        "existingClaim": STRING,
        "size": QUANTITY,
        "storageClassName": STRING,
        "accessModes": {
            "type": "array",
            "minItems": 1,
            "items": enum("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"),
        },
        "mountPath": {"type": "string", "pattern": "^/"},
        "emptyDirSizeLimit": QUANTITY,
        "download": obj(
            {
                "enabled": BOOL,
                "image": STRING,
                "repos": {
                    "type": "array",
                    "items": obj(
                        {
                            "repo": {"type": "string", "minLength": 1},
                            "revision": STRING,
                            "dir": STRING,
                            "allowPatterns": {"type": "array", "items": STRING},
                        },
                        ["repo"],
                    ),
                },
            }
        ),
    },
    None,
    **{
        "if": {"properties": {"source": {"const": "existingClaim"}}, "required": ["source"]},
        "then": {"required": ["existingClaim"], "properties": {"existingClaim": {"minLength": 1}}},
    },
)


def probe(success_one: bool) -> Schema:
    props: dict[str, Schema] = {
        "periodSeconds": integer(1),
        "failureThreshold": integer(1),
        "timeoutSeconds": integer(1),
        "initialDelaySeconds": integer(0),
        "successThreshold": integer(1, 1) if success_one else integer(1),
    }
    return obj(props)


PROBES = obj({"startup": probe(True), "readiness": probe(False), "liveness": probe(True)})

# serverName: the name the in-pod TLS health probe verifies (default <service>.<namespace>.svc).
TLS = obj({"enabled": BOOL, "secretName": STRING, "mtls": BOOL, "serverName": STRING})


def autoscaling(min_replicas: int) -> Schema:
    return obj(
        {
            "enabled": BOOL,
            "kind": enum("hpa", "keda"),
            "minReplicas": integer(min_replicas),
            "maxReplicas": integer(1),
            "hpa": obj(
                {
                    "targetCPUUtilizationPercentage": {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
                    "metrics": {"type": "array", "items": {"type": "object"}},
                }
            ),
            "keda": obj(
                {
                    "metric": enum("queue_depth", "in_flight"),
                    "threshold": {"type": "number", "exclusiveMinimum": 0},
                    "query": STRING,
                    "pollingInterval": integer(1),
                    "cooldownPeriod": integer(0),
                }
            ),
        }
    )


INT_OR_PERCENT: Schema = {"oneOf": [integer(0), {"type": "string", "pattern": r"^[0-9]+%$"}]}
PDB = obj({"enabled": BOOL, "maxUnavailable": INT_OR_PERCENT, "minAvailable": INT_OR_PERCENT})


def workload(min_replicas: int, *, storage: bool = True) -> dict[str, Schema]:
    props: dict[str, Schema] = {
        "enabled": BOOL,
        "image": IMAGE,
        "replicas": integer(0),
        "port": integer(1, 65535),
        "gpu": GPU,
        "resources": RESOURCES,
        "nodeSelector": string_map(),
        "tolerations": {"type": "array", "items": {"type": "object"}},
        "affinity": {"type": "object"},
        "runtimeClassName": STRING,
        "podAnnotations": string_map(),
        "podLabels": string_map(),
        "strategy": {"type": "object"},
        "env": ENV,
        "extraEnv": EXTRA_ENV,
        "probes": PROBES,
        "tls": TLS,
        "autoscaling": autoscaling(min_replicas),
        "pdb": PDB,
    }
    if storage:
        props["storage"] = STORAGE
    return props


# A Secret and the key in it that the chart mounts as a file.
SECRET_FILE = obj({"secretName": STRING, "key": {"type": "string", "minLength": 1}})

SERVICE_REQUIRED = ["enabled", "image", "replicas", "port", "gpu", "resources", "probes", "autoscaling", "pdb"]

GATEWAY_PROPS = workload(1, storage=False)
GATEWAY_PROPS["service"] = obj(
    {
        "type": enum("ClusterIP", "LoadBalancer", "NodePort"),
        "port": integer(1, 65535),
        "annotations": string_map(),
        "loadBalancerSourceRanges": {"type": "array", "items": STRING},
    },
    ["type", "port"],
)
# How long the gateway holds an invocation for a generator scaled to zero (rendered only when one may be).
GATEWAY_PROPS["generatorWakeSeconds"] = integer(0, 3600)
# Tokens of the gateway's own callers.
GATEWAY_PROPS["auth"] = SECRET_FILE
# How the gateway finds the backends' pods: dns (headless Services' DNS names) or kubernetes (their EndpointSlices
# through the API: a ServiceAccount, Role and RoleBinding are rendered for it).
GATEWAY_PROPS["discovery"] = enum("dns", "kubernetes")

GENERATOR_DEFAULT_PROPS = workload(0)
del GENERATOR_DEFAULT_PROPS["enabled"]
GENERATOR_DEFAULT_PROPS["cpuOffload"] = BOOL

GENERATOR_PROPS = workload(0)
GENERATOR_PROPS.update(
    {
        "modality": enum("image", "video", "audio"),
        "model": {"type": "string", "minLength": 1},
        "modelPath": STRING,
        "default": BOOL,
        "kind": {"type": "string", "pattern": r"^[a-z0-9-]+$"},
        "cpuOffload": BOOL,
    }
)
# A partial image override is allowed in an entry (e.g. only a tag); generatorDefaults has the repository.
GENERATOR_PROPS["image"] = {**IMAGE, "required": []}
del GENERATOR_PROPS["image"]["required"]

PEERS: Schema = {"type": "array", "items": {"type": "object"}}

SERVICE = obj(
    {
        "type": enum("ClusterIP", "LoadBalancer", "NodePort"),
        "port": integer(1, 65535),
        "annotations": string_map(),
        "loadBalancerSourceRanges": {"type": "array", "items": STRING},
    },
    ["type", "port"],
)
INGRESS = obj(
    {
        "enabled": BOOL,
        "className": STRING,
        "annotations": string_map(),
        "host": {"type": "string", "minLength": 1},
        "tlsSecretName": STRING,
    }
)

# The web front door (modaverse-web): an HTTP client of the gateway; no GPU, storage or autoscaling. Its probes
# are HTTP (GET /healthz, /readyz); tls is HTTPS on its own port (client certificates are not offered).
WEB_PROPS: dict[str, Schema] = {
    key: value for key, value in workload(1, storage=False).items() if key not in ("gpu", "tls", "autoscaling")
}
WEB_PROPS.update(
    {
        # Hosts whose media URLs are fetched: 'example.com', or '.example.com' for any subdomain.
        "allowedMediaHosts": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^\.?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$"},
        },
        "publicUrl": {"type": "string", "pattern": r"^(https?://[^\s/]+(/\S*)?)?$"},
        # Origins whose pages may call the API from a browser (MODAVERSE_CORS_ORIGINS): scheme://host[:port], or '*'.
        "corsOrigins": {"type": "array", "items": {"type": "string", "pattern": r"^(\*|https?://[^\s/]+)$"}},
        "auth": SECRET_FILE,
        "gatewayToken": SECRET_FILE,
        "forwardToken": BOOL,
        "tls": obj({"enabled": BOOL, "secretName": STRING}),
        "service": SERVICE,
        "ingress": INGRESS,
    }
)

# Paths inside the pods: absolute, no empty segment, no trailing slash, no whitespace (release.root + "/base").
ABS_PATH = r"(/[^/\s]+)+"
PATH: Schema = {"type": "string", "pattern": f"^{ABS_PATH}$"}
PATH_OR_EMPTY: Schema = {"type": "string", "pattern": f"^({ABS_PATH})?$"}

# The LLM's run-time adapters: the RPCs on or off, and the folder LoadAdapter may read from (empty: any).
LLM_PROPS = workload(1)
LLM_PROPS["runtimeAdapters"] = obj({"enabled": BOOL, "root": PATH_OR_EMPTY})
# A Hugging Face model id (owner/name); empty: do not fetch.
HF_REPO_OR_EMPTY: Schema = {"type": "string", "pattern": r"^([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)?$"}
SOURCE = obj(
    {
        "repo": HF_REPO_OR_EMPTY,
        "revision": STRING,
        "path": PATH_OR_EMPTY,
        "include": {"type": "array", "items": {"type": "string", "pattern": r"^\S+$"}},
    }
)

# The ModaVerse model release under one root (the layout `modaverse-llm convert-release` writes), and the Job
# that fills the claim with it (the chart refuses prepare without a root, and paths outside the claim).
RELEASE = obj(
    {
        "root": PATH_OR_EMPTY,
        "imagebindCheckpoint": PATH_OR_EMPTY,
        "prepare": obj(
            {
                "enabled": BOOL,
                "image": STRING,
                "existingClaim": STRING,
                "sources": obj({"llama": SOURCE, "vicunaDelta": SOURCE, "modaverse": SOURCE}),
                "vicunaPath": PATH_OR_EMPTY,
                "imagebindUrl": {"type": "string", "pattern": r"^https?://\S+$"},
                "verify": BOOL,
                "backoffLimit": integer(0, 100),
                "env": ENV,
                "resources": RESOURCES,
                "nodeSelector": string_map(),
                "tolerations": {"type": "array", "items": {"type": "object"}},
                "affinity": {"type": "object"},
            }
        ),
    }
)

VALUES: Schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "ModaVerse Serve chart values",
    **obj(
        {
            "nameOverride": STRING,
            "fullnameOverride": STRING,
            "clusterDomain": {"type": "string", "minLength": 1},
            "global": obj(
                {
                    "profile": enum("tiny", "full"),
                    "imageRegistry": STRING,
                    "imagePullSecrets": {"type": "array", "items": {"type": "object"}},
                    "gpu": obj(
                        {
                            "resourceName": {"type": "string", "pattern": r"^[a-z0-9.-]+/[a-zA-Z0-9._-]+$"},
                            "nodeSelector": string_map(),
                            "tolerations": {"type": "array", "items": {"type": "object"}},
                            "affinity": {"type": "object"},
                            "runtimeClassName": STRING,
                        },
                        ["resourceName"],
                    ),
                    "metricsPort": integer(1, 65535),
                    "drainDelaySeconds": integer(0, 300),
                    "gracePeriodSeconds": integer(0),
                    "terminationGraceExtraSeconds": integer(1),
                    "logLevel": enum("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                    "logJson": BOOL,
                    # Not required (nor the rest below): a release upgraded with --reuse-values keeps older values.
                    "maxConnectionAgeSeconds": integer(0, 86_400),
                    "maxConnectionAgeGraceSeconds": integer(0, 86_400),
                    "reflection": BOOL,
                    "env": ENV,
                    "hfToken": obj({"secretName": STRING, "key": {"type": "string", "minLength": 1}}),
                    "tls": TLS,
                    "backendAuth": obj(
                        {
                            "secretName": STRING,
                            "tokensKey": {"type": "string", "minLength": 1},
                            "tokenKey": {"type": "string", "minLength": 1},
                        }
                    ),
                    "podSecurityContext": {"type": "object"},
                    "securityContext": {"type": "object"},
                },
                [
                    "profile",
                    "gpu",
                    "metricsPort",
                    "drainDelaySeconds",
                    "gracePeriodSeconds",
                    "terminationGraceExtraSeconds",
                ],
            ),
            "serviceAccount": obj({"create": BOOL, "name": STRING, "annotations": string_map()}),
            "networkPolicy": obj(
                {
                    "enabled": BOOL,
                    "gatewayFrom": PEERS,
                    "webFrom": PEERS,
                    # NetworkPolicyEgressRules added to the web pods' policy.
                    "webEgress": {"type": "array", "items": {"type": "object"}},
                    "metricsFrom": PEERS,
                }
            ),
            "serviceMonitor": obj(
                {
                    "enabled": BOOL,
                    "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                    "scrapeTimeout": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                    "labels": string_map(),
                }
            ),
            "keda": obj({"prometheusServerAddress": {"type": "string", "pattern": "^https?://"}}),
            "release": RELEASE,
            "ingress": obj(
                {
                    "enabled": BOOL,
                    "className": STRING,
                    "annotations": string_map(),
                    "host": {"type": "string", "minLength": 1},
                    "tlsSecretName": STRING,
                }
            ),
            "encoder": obj(workload(1), [*SERVICE_REQUIRED, "storage"]),
            "llm": obj(LLM_PROPS, [*SERVICE_REQUIRED, "storage"]),
            "gateway": obj(GATEWAY_PROPS, [*SERVICE_REQUIRED, "service"]),
            # Not required: a release upgraded with --reuse-values from a chart without `web` has no such key.
            "web": obj(WEB_PROPS, ["enabled", "image", "replicas", "port", "resources", "probes", "service"]),
            "generatorDefaults": obj(GENERATOR_DEFAULT_PROPS, ["image", "port", "gpu", "probes"]),
            "generators": {
                "type": "object",
                # Route and DNS names: lower-case, short enough for <release>-modaverse-gen-<name>.
                "propertyNames": {"pattern": NAME, "maxLength": 20},
                "additionalProperties": obj(GENERATOR_PROPS, ["modality", "model"]),
            },
        },
        ["global", "encoder", "llm", "gateway", "generatorDefaults", "generators"],
    ),
}


def render() -> str:
    return json.dumps(VALUES, indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if SCHEMA_PATH.read_text() != text:
            print(f"{SCHEMA_PATH} is stale: run `python helm/gen_schema.py`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
