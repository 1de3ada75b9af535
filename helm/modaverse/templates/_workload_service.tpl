{{/* Headless Service: one DNS record per ready pod, for dns:/// round-robin and for metrics.
     . is modaverse.workload.context's dict. */}}
{{- define "modaverse.workload.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .svcName }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" .sel | nindent 4 }}
    modaverse.io/metrics: "true"
spec:
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- include "modaverse.selectorLabels" .sel | nindent 4 }}
  ports:
    - {name: grpc, port: {{ .port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
    - {name: metrics, port: {{ .metricsPort }}, targetPort: metrics, protocol: TCP, appProtocol: http}
{{- end -}}
