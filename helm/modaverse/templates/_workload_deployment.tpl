{{/* The service's Deployment; . is modaverse.workload.context's dict ($ below). */}}
{{- define "modaverse.workload.deployment" -}}
{{- $root := .root -}}
{{- $b := .b -}}
{{- $global := .global -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $.name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $.sel | nindent 4 }}
spec:
  {{- if not $.autoOn }}
  replicas: {{ int $b.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- toYaml $b.strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "modaverse.selectorLabels" $.sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "modaverse.labels" $.sel | nindent 8 }}
        {{- with $b.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- /* No checksum of the routes ConfigMap here: the gateway watches its mounted file and applies a new
      table without a restart, so swapping a generator leaves the gateway's pods alone. */}}
      {{- with $b.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- /* gateway.discovery kubernetes: the gateway reads EndpointSlices with its own account's token; no other
      pod gets a token. */}}
      {{- $kubeDiscovery := and $.isGateway (eq (toString $b.discovery) "kubernetes") }}
      serviceAccountName: {{ ternary (include "modaverse.gatewayServiceAccountName" $root) (include "modaverse.serviceAccountName" $root) $kubeDiscovery }}
      automountServiceAccountToken: {{ $kubeDiscovery }}
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ add (int $.drain) (int $.grace) (int $global.terminationGraceExtraSeconds) }}
      {{- with $.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- with $global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $global.podSecurityContext | nindent 8 }}
      {{- with $.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or $.downloadOn $.waitFor }}
      initContainers:
      {{- end }}
      {{- if $.downloadOn }}
        - name: download-models
          image: {{ default (include "modaverse.image" (list $root $b.image)) $.download.image }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          command:
            - python
            - -c
            - |
              import json, os
              from huggingface_hub import snapshot_download
              root = os.environ["MODEL_ROOT"]
              for r in json.loads(os.environ["MODAVERSE_DOWNLOADS"]):
                  path = snapshot_download(repo_id=r["repo"], revision=r.get("revision"),
                                           local_dir=os.path.join(root, r.get("dir") or r["repo"]),
                                           allow_patterns=r.get("allowPatterns") or None)
                  print("downloaded", r["repo"], "to", path, flush=True)
          env:
            - name: MODEL_ROOT
              value: {{ $.mountPath | quote }}
            - name: MODAVERSE_DOWNLOADS
              value: {{ toJson $.repos | quote }}
            - name: HF_HUB_OFFLINE
              value: "0"
            - name: HF_HOME
              value: /cache/huggingface
            - name: HOME
              value: /tmp
            {{- if $global.hfToken.secretName }}
            - name: HF_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ $global.hfToken.secretName }}
                  key: {{ $global.hfToken.key }}
            {{- end }}
          securityContext:
            {{- toYaml $global.securityContext | nindent 12 }}
          resources:
            requests: {cpu: 500m, memory: 1Gi}
            limits: {memory: 4Gi}
          volumeMounts:
            - {name: models, mountPath: {{ $.mountPath | quote }}}
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /cache}
      {{- end }}
      {{- if $.waitFor }}
        {{- /* Polls for the files the release.prepare Job writes (it renames each output into place whole). */}}
        - name: wait-for-release
          image: {{ include "modaverse.image" (list $root $b.image) }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          command:
            - sh
            - -c
            - 'for f in "$@"; do until [ -e "$f" ]; do echo "waiting for $f (written by the release.prepare Job)"; sleep 20; done; echo "found $f"; done'
            - wait-for-release
            {{- range $.waitFor }}
            - {{ . | quote }}
            {{- end }}
          securityContext:
            {{- toYaml $global.securityContext | nindent 12 }}
          resources:
            requests: {cpu: 10m, memory: 16Mi}
            limits: {memory: 64Mi}
          volumeMounts:
            - {name: models, mountPath: {{ $.mountPath | quote }}, readOnly: true}
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /cache}
      {{- end }}
      containers:
        - name: {{ $.component }}
          image: {{ include "modaverse.image" (list $root $b.image) }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          ports:
            - {name: grpc, containerPort: {{ $.port }}, protocol: TCP}
            - {name: metrics, containerPort: {{ $.metricsPort }}, protocol: TCP}
          env:
            {{- range $k := keys $.env | sortAlpha }}
            - name: {{ $k }}
              value: {{ get $.env $k | toString | quote }}
            {{- end }}
            {{- with $b.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- $handler := printf "grpc: {port: %d}" $.port }}
          {{- if $.tlsOn }}
          {{- /* The kubelet's gRPC probe cannot speak TLS: check grpc.health.v1 from inside the pod. */}}
          {{- $check := printf "import grpc,sys;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;r=lambda p:open(p,'rb').read();d='/etc/modaverse/tls/';c=grpc.secure_channel('127.0.0.1:%d',grpc.ssl_channel_credentials(r(d+'ca.crt'),r(d+'tls.key'),r(d+'tls.crt')),options=[('grpc.ssl_target_name_override','%s')]);sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(),timeout=3).status==1 else 1)" $.port $.probeHost }}
          {{- $handler = printf "exec: {command: [python, -c, %s]}" (quote $check) }}
          {{- end }}
          {{- range $kind := list "startup" "readiness" "liveness" }}
          {{- include "modaverse.probe" (dict "kind" $kind "handler" $handler "settings" (index $b.probes $kind)) | nindent 10 }}
          {{- end }}
          resources:
            {{- toYaml $.resources | nindent 12 }}
          securityContext:
            {{- toYaml $global.securityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /cache}
            {{- if not $.isGateway }}
            - {name: models, mountPath: {{ $.mountPath | quote }}}
            {{- end }}
            {{- if $.tlsOn }}
            - {name: tls, mountPath: /etc/modaverse/tls, readOnly: true}
            {{- end }}
            {{- if $.upstreamTls }}
            - {name: upstream-tls, mountPath: /etc/modaverse/upstream-tls, readOnly: true}
            {{- end }}
            {{- if $.isGateway }}
            - {name: routes, mountPath: /etc/modaverse/routes, readOnly: true}
            {{- end }}
            {{- range $.secretFiles }}
            - {name: {{ .volume }}, mountPath: /etc/modaverse/{{ .volume }}, readOnly: true}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 2Gi}
        - name: cache
          emptyDir: {sizeLimit: 10Gi}
        {{- if not $.isGateway }}
        {{- if $.claim }}
        - name: models
          persistentVolumeClaim: {claimName: {{ $.claim }}}
        {{- else }}
        - name: models
          emptyDir: {sizeLimit: {{ default "20Gi" $.storage.emptyDirSizeLimit }}}
        {{- end }}
        {{- end }}
        {{- if $.tlsOn }}
        - name: tls
          secret: {secretName: {{ $.tls.secretName }}, defaultMode: 0440}
        {{- end }}
        {{- if $.upstreamTls }}
        - name: upstream-tls
          secret: {secretName: {{ $global.tls.secretName }}, defaultMode: 0440, items: [{key: ca.crt, path: ca.crt}]}
        {{- end }}
        {{- if $.isGateway }}
        - name: routes
          configMap: {name: {{ include "modaverse.componentName" (list $root "routes") }}}
        {{- end }}
        {{- /* A whole-volume mount (no subPath): the kubelet updates the file when the Secret changes. */}}
        {{- range $.secretFiles }}
        - name: {{ .volume }}
          secret: {secretName: {{ .secret }}, defaultMode: 0440, items: [{key: {{ .key }}, path: {{ .path }}}]}
        {{- end }}
{{- end -}}
