{{/* The models claim of storage.source pvc, kept when the release is deleted (the weights are slow to fetch).
     . is modaverse.workload.context's dict. */}}
{{- define "modaverse.workload.pvc" -}}
{{- $storage := .storage -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .claim }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" .sel | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml $storage.accessModes | nindent 4 }}
  {{- with $storage.storageClassName }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $storage.size }}
{{- end -}}
