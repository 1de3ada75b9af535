{{/* autoscaling.kind hpa: CPU (hpa.targetCPUUtilizationPercentage) and any hpa.metrics; never to zero.
     . is modaverse.workload.context's dict. */}}
{{- define "modaverse.workload.hpa" -}}
{{- $hpa := default dict .autoscaling.hpa -}}
{{- if lt .minReplicas 1 -}}
{{- fail (printf "%s: an HPA cannot scale to zero; use autoscaling.kind keda for minReplicas 0" .name) -}}
{{- end -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" .sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicas: {{ .minReplicas }}
  maxReplicas: {{ .maxReplicas }}
  metrics:
    {{- with $hpa.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: {{ int . }}}
    {{- end }}
    {{- with $hpa.metrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
