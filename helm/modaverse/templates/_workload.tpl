{{/*
One service: Deployment, its headless Service, model PVC, PDB, HPA or KEDA ScaledObject.
Arguments (dict): root, component (encoder|llm|gateway|generator), suffix (name after the fullname),
generator (route name or ""), b (the block's values, generators already merged), env (service env),
waitFor (optional: files an init container waits for, e.g. the release.prepare Job's outputs).
Each object has its own template (_workload_*.tpl; _pdb.tpl and _probe.tpl are shared with web.yaml), rendered
from the context below.
*/}}
{{- define "modaverse.workload" -}}
{{- $w := dict -}}
{{- $_ := include "modaverse.workload.context" (list . $w) -}}
{{ include "modaverse.workload.deployment" $w }}
---
{{ include "modaverse.workload.service" $w }}
{{- if eq $w.storage.source "pvc" }}
---
{{ include "modaverse.workload.pvc" $w }}
{{- end }}
{{- if include "modaverse.isTrue" $w.pdb.enabled }}
---
{{ include "modaverse.pdb" (dict "name" $w.name "sel" $w.sel "pdb" $w.pdb) }}
{{- end }}
{{- if $w.autoOn }}
{{- if gt $w.minReplicas $w.maxReplicas }}
{{- fail (printf "%s: autoscaling.minReplicas (%d) > maxReplicas (%d)" $w.name $w.minReplicas $w.maxReplicas) }}
{{- end }}
---
{{- if eq $w.autoscaling.kind "hpa" }}
{{ include "modaverse.workload.hpa" $w }}
{{- else }}
{{ include "modaverse.workload.scaledObject" $w }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The context of one service's objects, computed once from modaverse.workload's arguments (and checked:
it fails on TLS without a Secret, downloads without repos). (list arguments ctx): sets into the dict ctx
root, b, component, generator, name, sel (selector labels' dict), isGateway, global, port, metricsPort,
grace, drain, storage, download, downloadOn, repos, mountPath, claim, waitFor, tls, tlsOn, upstreamTls,
env (merged: chart < arguments < global.env < block env), secretFiles (list of {volume, secret, key, path}:
Secret keys mounted at /etc/modaverse/<volume>/<path>), nodeSelector, tolerations, affinity,
runtimeClassName, resources (GPU limits added), probeHost, svcName, pdb, autoscaling, autoOn,
minReplicas, maxReplicas.
*/}}
{{- define "modaverse.workload.context" -}}
{{- $args := index . 0 -}}
{{- $root := $args.root -}}
{{- $b := $args.b -}}
{{- $name := include "modaverse.componentName" (list $root $args.suffix) -}}
{{- $sel := dict "root" $root "component" $args.component "generator" $args.generator -}}
{{- $isGateway := eq $args.component "gateway" -}}
{{- $gpu := default dict $b.gpu -}}
{{- $gpuOn := include "modaverse.isTrue" $gpu.enabled | eq "true" -}}
{{- $global := $root.Values.global -}}
{{- $grace := $global.gracePeriodSeconds -}}
{{- $drain := $global.drainDelaySeconds -}}
{{- $metricsPort := int $global.metricsPort -}}
{{- $port := int $b.port -}}
{{- $storage := default dict $b.storage -}}
{{- $download := default dict $storage.download -}}
{{- $downloadOn := include "modaverse.isTrue" $download.enabled | eq "true" -}}
{{- $mountPath := default "/models" $storage.mountPath -}}
{{- /* TLS of this server */ -}}
{{- $tls := dict -}}
{{- if $isGateway -}}
{{- $tls = default dict $b.tls -}}
{{- else -}}
{{- $tls = include "modaverse.backendTls" (list $root $b) | fromJson -}}
{{- end -}}
{{- $tlsOn := include "modaverse.isTrue" $tls.enabled | eq "true" -}}
{{- $mtls := and $tlsOn (include "modaverse.isTrue" $tls.mtls | eq "true") -}}
{{- if and $tlsOn (not $tls.secretName) -}}
{{- fail (printf "%s: TLS is enabled but no tls.secretName (global.tls.secretName for backends) is set" $name) -}}
{{- end -}}
{{- /* Environment: chart settings, then global.env, then the block's env. */ -}}
{{- $env := dict
  "MODAVERSE_HOST" "0.0.0.0"
  "MODAVERSE_PORT" (toString $port)
  "MODAVERSE_METRICS_PORT" (toString $metricsPort)
  "MODAVERSE_PROFILE" $global.profile
  "MODAVERSE_GRACE_PERIOD_S" (toString $grace)
  "MODAVERSE_DRAIN_DELAY_S" (toString $drain)
  "MODAVERSE_LOG_LEVEL" $global.logLevel
  "MODAVERSE_LOG_JSON" (toString $global.logJson)
  "HOME" "/tmp"
  "XDG_CACHE_HOME" "/cache"
  "HF_HOME" "/cache/huggingface"
-}}
{{- if not $isGateway -}}
{{- $_ := set $env "MODAVERSE_MODEL_DIR" $mountPath -}}
{{- $_ := set $env "MODAVERSE_DEVICE" (ternary "cuda" "cpu" $gpuOn) -}}
{{- end -}}
{{- if $tlsOn -}}
{{- $_ := set $env "MODAVERSE_TLS_CERT_FILE" "/etc/modaverse/tls/tls.crt" -}}
{{- $_ := set $env "MODAVERSE_TLS_KEY_FILE" "/etc/modaverse/tls/tls.key" -}}
{{- if $mtls -}}
{{- $_ := set $env "MODAVERSE_TLS_CLIENT_CA_FILE" "/etc/modaverse/tls/ca.crt" -}}
{{- end -}}
{{- end -}}
{{- $upstreamTls := false -}}
{{- if $isGateway -}}
{{- $upstreamTls = include "modaverse.isTrue" $global.tls.enabled | eq "true" -}}
{{- if $upstreamTls -}}
{{- if not $global.tls.secretName -}}
{{- fail "global.tls.enabled needs global.tls.secretName (tls.crt, tls.key, ca.crt)" -}}
{{- end -}}
{{- $_ := set $env "MODAVERSE_TLS_CA_FILE" "/etc/modaverse/upstream-tls/ca.crt" -}}
{{- if and (include "modaverse.isTrue" $global.tls.mtls) (not $tlsOn) -}}
{{- fail "global.tls.mtls: the gateway must present a client certificate; enable gateway.tls with a secretName" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Connection age (clients re-resolve DNS, so replicas added since get calls) and reflection. Absent keys
     (a release upgraded with --reuse-values from an older chart) leave the servers' defaults. */ -}}
{{- if hasKey $global "maxConnectionAgeSeconds" -}}
{{- $_ := set $env "MODAVERSE_MAX_CONNECTION_AGE_S" (toString $global.maxConnectionAgeSeconds) -}}
{{- end -}}
{{- if hasKey $global "maxConnectionAgeGraceSeconds" -}}
{{- $_ := set $env "MODAVERSE_MAX_CONNECTION_AGE_GRACE_S" (toString $global.maxConnectionAgeGraceSeconds) -}}
{{- end -}}
{{- if hasKey $global "reflection" -}}
{{- $_ := set $env "MODAVERSE_REFLECTION" (toString $global.reflection) -}}
{{- end -}}
{{- /* Secrets mounted as files (each its own volume under /etc/modaverse/<volume>/): bearer tokens. */ -}}
{{- $secretFiles := list -}}
{{- $backendAuth := default dict $global.backendAuth -}}
{{- if $backendAuth.secretName -}}
{{- if $isGateway -}}
{{- if not (include "modaverse.isTrue" $global.tls.enabled) -}}
{{- fail "global.backendAuth needs global.tls.enabled: the gateway sends its bearer token to the backends over TLS only" -}}
{{- end -}}
{{- $_ := set $env "MODAVERSE_BACKEND_TOKEN_FILE" "/etc/modaverse/backend-auth/token" -}}
{{- $secretFiles = append $secretFiles (dict "volume" "backend-auth" "secret" $backendAuth.secretName "key" (default "token" $backendAuth.tokenKey) "path" "token") -}}
{{- else -}}
{{- $_ := set $env "MODAVERSE_AUTH_TOKENS_FILE" "/etc/modaverse/backend-auth/tokens" -}}
{{- $secretFiles = append $secretFiles (dict "volume" "backend-auth" "secret" $backendAuth.secretName "key" (default "tokens" $backendAuth.tokensKey) "path" "tokens") -}}
{{- end -}}
{{- end -}}
{{- $auth := default dict $b.auth -}}
{{- if and $isGateway $auth.secretName -}}
{{- $_ := set $env "MODAVERSE_AUTH_TOKENS_FILE" "/etc/modaverse/auth/tokens" -}}
{{- $secretFiles = append $secretFiles (dict "volume" "auth" "secret" $auth.secretName "key" (default "tokens" $auth.key) "path" "tokens") -}}
{{- end -}}
{{- range $k, $v := $args.env -}}
{{- $_ := set $env $k $v -}}
{{- end -}}
{{- range $k, $v := (default dict $global.env) -}}
{{- $_ := set $env $k (toString $v) -}}
{{- end -}}
{{- range $k, $v := (default dict $b.env) -}}
{{- $_ := set $env $k (toString $v) -}}
{{- end -}}
{{- /* Scheduling */ -}}
{{- $nodeSelector := default dict $b.nodeSelector -}}
{{- $tolerations := default list $b.tolerations -}}
{{- $affinity := default dict $b.affinity -}}
{{- $runtimeClassName := $b.runtimeClassName -}}
{{- $resources := deepCopy (default dict $b.resources) -}}
{{- if $gpuOn -}}
{{- $nodeSelector = include "modaverse.deepMerge" (list (default dict $global.gpu.nodeSelector) $nodeSelector) | fromJson -}}
{{- $tolerations = concat (default list $global.gpu.tolerations) $tolerations -}}
{{- if not $affinity -}}{{- $affinity = default dict $global.gpu.affinity -}}{{- end -}}
{{- if not $runtimeClassName -}}{{- $runtimeClassName = $global.gpu.runtimeClassName -}}{{- end -}}
{{- $limits := default dict $resources.limits -}}
{{- $_ := set $limits (default $global.gpu.resourceName $gpu.resourceName) (int $gpu.count) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- $autoscaling := default dict $b.autoscaling -}}
{{- $autoOn := include "modaverse.isTrue" $autoscaling.enabled | eq "true" -}}
{{- $claim := include "modaverse.claimName" (list $root $args.suffix $storage) -}}
{{- $waitFor := default list $args.waitFor -}}
{{- $repos := default list $download.repos -}}
{{- if and $downloadOn (not $repos) (eq $args.component "generator") -}}
{{- $repos = list (dict "repo" $b.model "dir" $b.model) -}}
{{- end -}}
{{- if and $downloadOn (not $repos) -}}
{{- fail (printf "%s: storage.download.enabled needs storage.download.repos" $name) -}}
{{- end -}}
{{- $probeHost := default (printf "%s.%s.svc" $name $root.Release.Namespace) $tls.serverName -}}
{{- $svcName := $isGateway | ternary (printf "%s-headless" $name) $name -}}
{{- $ctx := dict
  "root" $root "b" $b "component" $args.component "generator" $args.generator "name" $name "sel" $sel
  "isGateway" $isGateway "global" $global "port" $port "metricsPort" $metricsPort "grace" $grace "drain" $drain
  "storage" $storage "download" $download "downloadOn" $downloadOn "repos" $repos "mountPath" $mountPath
  "claim" $claim "waitFor" $waitFor "tls" $tls "tlsOn" $tlsOn "upstreamTls" $upstreamTls "env" $env
  "secretFiles" $secretFiles
  "nodeSelector" $nodeSelector "tolerations" $tolerations "affinity" $affinity
  "runtimeClassName" $runtimeClassName "resources" $resources "probeHost" $probeHost
  "svcName" $svcName "pdb" (default dict $b.pdb) "autoscaling" $autoscaling "autoOn" $autoOn
  "minReplicas" (int $autoscaling.minReplicas) "maxReplicas" (int $autoscaling.maxReplicas)
-}}
{{- $out := index . 1 -}}
{{- range $k, $v := $ctx -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
