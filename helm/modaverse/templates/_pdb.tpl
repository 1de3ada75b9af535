{{/* A PodDisruptionBudget over one component's pods, for the gRPC services and the web front door alike.
     (dict "name" name "sel" selector-labels' dict (root component generator) "pdb" the block's pdb values) */}}
{{- define "modaverse.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .sel.root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" .sel | nindent 4 }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ default 1 .pdb.maxUnavailable }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "modaverse.selectorLabels" .sel | nindent 6 }}
{{- end -}}
