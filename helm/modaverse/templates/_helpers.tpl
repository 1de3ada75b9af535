{{/* Names ---------------------------------------------------------------------------------------- */}}
{{- define "modaverse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modaverse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of a component's resources: (list $ "encoder") or (list $ "gen-sd15"). */}}
{{- define "modaverse.componentName" -}}
{{- printf "%s-%s" (include "modaverse.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modaverse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modaverse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The gateway's own ServiceAccount, rendered with gateway.discovery kubernetes (it watches EndpointSlices). */}}
{{- define "modaverse.gatewayServiceAccountName" -}}
{{- include "modaverse.componentName" (list . "gateway") -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------------- */}}
{{- define "modaverse.commonLabels" -}}
app.kubernetes.io/name: {{ include "modaverse.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "modaverse.metaLabels" . }}
{{- end -}}

{{- define "modaverse.metaLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modaverse
{{- end -}}

{{/* Selector labels of one workload: dict root component generator(optional). */}}
{{- define "modaverse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modaverse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .generator }}
modaverse.io/generator: {{ .generator }}
{{- end }}
{{- end -}}

{{- define "modaverse.labels" -}}
{{ include "modaverse.metaLabels" .root }}
{{ include "modaverse.selectorLabels" . }}
{{- end -}}

{{/* Values helpers ------------------------------------------------------------------------------- */}}
{{/* Is a value that may be a bool or a string (--set-string, a quoted "true") true? "true" or "" (so `if` works
     on it); pipe into `eq "true"` where a real bool is needed (ternary, toString, toYaml). */}}
{{- define "modaverse.isTrue" -}}
{{- if eq (toString (default false .)) "true" -}}true{{- end -}}
{{- end -}}

{{/* Deep merge of two maps (list base override) as JSON: maps merge, anything else (false, 0, lists)
     in override replaces. Sprig's mergeOverwrite would ignore false/0/"" overrides. */}}
{{- define "modaverse.deepMerge" -}}
{{- $out := deepCopy (index . 0) -}}
{{- range $k, $v := (index . 1) -}}
{{- if and (kindIs "map" $v) (kindIs "map" (index $out $k)) -}}
{{- $_ := set $out $k (include "modaverse.deepMerge" (list (index $out $k) $v) | fromJson) -}}
{{- else if kindIs "invalid" $v -}}
{{- $_ := unset $out $k -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* A generator's settings: generatorDefaults merged with its entry. (list $ name) */}}
{{- define "modaverse.generatorBlock" -}}
{{- $root := index . 0 -}}
{{- $spec := index $root.Values.generators (index . 1) -}}
{{- include "modaverse.deepMerge" (list $root.Values.generatorDefaults $spec) -}}
{{- end -}}

{{/* Enabled generator names, sorted, as a JSON list. */}}
{{- define "modaverse.generatorNames" -}}
{{- $names := list -}}
{{- range $name, $spec := .Values.generators -}}
{{- if ne (toString (dig "enabled" true $spec)) "false" -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- toJson (sortAlpha $names) -}}
{{- end -}}

{{- define "modaverse.generatorKind" -}}
{{- if .kind -}}{{ .kind }}{{- else -}}{{ printf "text-to-%s" .modality }}{{- end -}}
{{- end -}}

{{/* Effective backend TLS of a block: global.tls overridden by the block's tls. (list $ block) */}}
{{- define "modaverse.backendTls" -}}
{{- include "modaverse.deepMerge" (list (index . 0).Values.global.tls (default dict (index . 1).tls)) -}}
{{- end -}}

{{/* dns:/// target of a headless backend Service. (list $ componentSuffix port) */}}
{{- define "modaverse.target" -}}
{{- $root := index . 0 -}}
{{- printf "dns:///%s.%s.svc.%s:%v" (include "modaverse.componentName" (list $root (index . 1))) $root.Release.Namespace $root.Values.clusterDomain (index . 2) -}}
{{- end -}}

{{- define "modaverse.image" -}}
{{- $root := index . 0 -}}{{- $img := index . 1 -}}
{{- printf "%s%s:%s" $root.Values.global.imageRegistry $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}

{{/* The gateway's routing table (MODAVERSE_ROUTES_FILE), from .Values.generators. */}}
{{- define "modaverse.routes" -}}
{{- $root := . -}}
{{- $routes := dict -}}
{{- $defaults := dict -}}
{{- range $name := include "modaverse.generatorNames" $root | fromJsonArray -}}
{{- $g := include "modaverse.generatorBlock" (list $root $name) | fromJson -}}
{{- $isDefault := include "modaverse.isTrue" $g.default | eq "true" -}}
{{- if $isDefault -}}
{{- if hasKey $defaults $g.modality -}}
{{- fail (printf "generators: %s and %s are both default for modality %s; mark at most one default per modality" (get $defaults $g.modality) $name $g.modality) -}}
{{- end -}}
{{- $_ := set $defaults $g.modality $name -}}
{{- end -}}
{{- $target := include "modaverse.target" (list $root (printf "gen-%s" $name) (int $g.port)) -}}
{{- $_ := set $routes $name (dict "modality" $g.modality "endpoints" (list $target) "default" $isDefault "model" $g.model) -}}
{{- end -}}
{{- toYaml (dict "generators" $routes) -}}
{{- end -}}


{{/* The PVC a block's models volume uses: "" (an emptyDir), storage.existingClaim, or <component>-models
     (storage.source pvc). (list $ componentSuffix storage) */}}
{{- define "modaverse.claimName" -}}
{{- $root := index . 0 -}}
{{- $storage := default dict (index . 2) -}}
{{- $name := include "modaverse.componentName" (list $root (index . 1)) -}}
{{- if eq $storage.source "existingClaim" -}}
{{- required (printf "%s: storage.source existingClaim needs storage.existingClaim" $name) $storage.existingClaim -}}
{{- else if eq $storage.source "pvc" -}}
{{- printf "%s-models" $name -}}
{{- end -}}
{{- end -}}

{{/* Model release ------------------------------------------------------------------------------------ */}}
{{/* The paths of the converted ModaVerse release under release.root, as JSON (keys absent when not set):
     root, base, adapter, adaptor (the sub-paths `modaverse-llm convert-release` writes: OUT_BASE, OUT_ADAPTER,
     OUT_ADAPTOR in services/llm/src/modaverse_llm/release.py; tests/helm checks they agree), imagebind. */}}
{{- define "modaverse.releasePaths" -}}
{{- $rel := default dict .Values.release -}}
{{- $out := dict -}}
{{- $root := trimSuffix "/" (default "" $rel.root) -}}
{{- if $root -}}
{{- $_ := set $out "root" $root -}}
{{- $_ := set $out "base" (printf "%s/base" $root) -}}
{{- $_ := set $out "adapter" (printf "%s/adapters/default" $root) -}}
{{- $_ := set $out "adaptor" (printf "%s/adaptor" $root) -}}
{{- $_ := set $out "imagebind" (default (printf "%s/imagebind/imagebind_huge.pth" (trimSuffix "/" (dir $root))) $rel.imagebindCheckpoint) -}}
{{- else if $rel.imagebindCheckpoint -}}
{{- $_ := set $out "imagebind" $rel.imagebindCheckpoint -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Is the release.prepare Job on? "true" or "". */}}
{{- define "modaverse.prepareEnabled" -}}
{{- $prepare := default dict (default dict .Values.release).prepare -}}
{{- include "modaverse.isTrue" $prepare.enabled -}}
{{- end -}}

{{/* The release.prepare Job's settings, checked, as JSON: claim, mountPath, root, imagebind, vicuna and
     sources (name -> {repo, revision, path, include}). Fails on values the Job cannot serve. */}}
{{- define "modaverse.releasePrepare" -}}
{{- $root := . -}}
{{- $v := $root.Values -}}
{{- $prepare := $v.release.prepare -}}
{{- $paths := include "modaverse.releasePaths" $root | fromJson -}}
{{- $releaseRoot := required "release.prepare.enabled needs release.root (where convert-release writes)" $paths.root -}}
{{- $blocks := list -}}
{{- if $v.llm.enabled -}}{{- $blocks = append $blocks (list "llm" $v.llm) -}}{{- end -}}
{{- if $v.encoder.enabled -}}{{- $blocks = append $blocks (list "encoder" $v.encoder) -}}{{- end -}}
{{- if not $blocks -}}
{{- fail "release.prepare.enabled: neither the llm nor the encoder is enabled" -}}
{{- end -}}
{{- $first := index $blocks 0 -}}
{{- $mountPath := default "/models" (default dict (index $first 1).storage).mountPath -}}
{{- $firstClaim := include "modaverse.claimName" (list $root (index $first 0) (index $first 1).storage) -}}
{{- range $blocks -}}
{{- $name := index . 0 -}}
{{- $storage := default dict (index . 1).storage -}}
{{- $claim := include "modaverse.claimName" (list $root $name $storage) -}}
{{- if not $claim -}}
{{- fail (printf "release.prepare.enabled: %s.storage.source is none (an emptyDir the Job cannot fill); use existingClaim or pvc" $name) -}}
{{- end -}}
{{- if and (not $prepare.existingClaim) (ne $claim $firstClaim) -}}
{{- fail (printf "release.prepare.enabled: the Job fills one claim but the encoder and llm mount %s and %s; give both the same storage.existingClaim (or set release.prepare.existingClaim to a writable claim on the storage both read)" $firstClaim $claim) -}}
{{- end -}}
{{- if ne (default "/models" $storage.mountPath) $mountPath -}}
{{- fail (printf "release.prepare.enabled: %s.storage.mountPath (%s) differs from %s.storage.mountPath (%s); the Job writes the paths both read" $name (default "/models" $storage.mountPath) (index $first 0) $mountPath) -}}
{{- end -}}
{{- end -}}
{{- $base := trimSuffix "/" (dir $releaseRoot) -}}
{{- $sources := dict -}}
{{- range $key, $src := $prepare.sources -}}
{{- $path := $src.path -}}
{{- if not $path -}}
{{- $path = printf "%s/sources/%s" $base (required (printf "release.prepare.sources.%s needs a repo or a path" $key) $src.repo) -}}
{{- end -}}
{{- $_ := set $sources $key (dict "repo" (default "" $src.repo) "revision" (default "" $src.revision) "path" (trimSuffix "/" $path) "include" (default list $src.include)) -}}
{{- end -}}
{{- $vicuna := trimSuffix "/" (default (printf "%s/sources/vicuna-7b-v0" $base) $prepare.vicunaPath) -}}
{{- $written := list (list "release.root" $releaseRoot) (list "the ImageBind checkpoint" $paths.imagebind) (list "release.prepare.vicunaPath" $vicuna) -}}
{{- range $key, $src := $sources -}}
{{- $written = append $written (list (printf "release.prepare.sources.%s" $key) $src.path) -}}
{{- end -}}
{{- range $written -}}
{{- if not (hasPrefix (printf "%s/" (trimSuffix "/" $mountPath)) (index . 1)) -}}
{{- fail (printf "release.prepare.enabled: %s (%s) is not under the claim's mountPath %s" (index . 0) (index . 1) $mountPath) -}}
{{- end -}}
{{- end -}}
{{- $claim := default $firstClaim $prepare.existingClaim -}}
{{- toJson (dict "claim" $claim "mountPath" $mountPath "root" $releaseRoot "imagebind" $paths.imagebind "vicuna" $vicuna "sources" $sources) -}}
{{- end -}}
