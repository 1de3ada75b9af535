{{/* autoscaling.kind keda: a ScaledObject on the service's own load (in-flight requests or queue depth), to zero
     if minReplicas is 0. . is modaverse.workload.context's dict. */}}
{{- define "modaverse.workload.scaledObject" -}}
{{- $k := default dict .autoscaling.keda -}}
{{- $metricName := eq $k.metric "in_flight" | ternary "modaverse_requests_in_flight" "modaverse_queue_depth" -}}
{{- $ns := .root.Release.Namespace -}}
{{- $own := printf "(sum(%s{namespace=\"%s\",service=\"%s\"}) or vector(0))" $metricName $ns .svcName -}}
{{- /* A generator also counts the invocations the gateway is holding for its route: that is what
       wakes a generator scaled to zero (the gateway waits up to MODAVERSE_GENERATOR_WAKE_S). */ -}}
{{- $waiting := printf " + (sum(modaverse_gateway_invocations_in_flight{namespace=\"%s\",route=\"%s\"}) or vector(0))" $ns .generator -}}
{{- $query := default (printf "%s%s" $own (ternary $waiting "" (ne .generator ""))) $k.query -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ .name }}
  namespace: {{ $ns }}
  labels:
    {{- include "modaverse.labels" .sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicaCount: {{ .minReplicas }}
  maxReplicaCount: {{ .maxReplicas }}
  pollingInterval: {{ int $k.pollingInterval }}
  cooldownPeriod: {{ int $k.cooldownPeriod }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: {{ int $k.cooldownPeriod }}
  triggers:
    - type: prometheus
      metadata:
        serverAddress: {{ .root.Values.keda.prometheusServerAddress | quote }}
        query: {{ $query | quote }}
        threshold: {{ toString $k.threshold | quote }}
        activationThreshold: "0"
{{- end -}}
