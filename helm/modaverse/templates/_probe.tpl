{{/* One container probe, for every probe of the chart: (dict "kind" startup|readiness|liveness "handler" the
     probe's action as one line of flow YAML, e.g. "grpc: {port: 50051}", "settings" timings from values).
     Indent it to the container's keys: include "modaverse.probe" … | nindent 10. */}}
{{- define "modaverse.probe" -}}
{{ .kind }}Probe:
  {{ .handler }}
  {{- toYaml .settings | nindent 2 }}
{{- end -}}
