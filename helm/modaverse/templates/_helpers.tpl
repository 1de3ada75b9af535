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
{{- $isDefault := eq (toString (default false $g.default)) "true" -}}
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
