{{/*
One service: Deployment, its Service(s), model PVC, PDB, HPA or KEDA ScaledObject.
Arguments (dict): root, component (encoder|llm|gateway|generator), suffix (name after the fullname),
generator (route name or ""), b (the block's values, generators already merged), env (service env),
waitFor (optional: files an init container waits for, e.g. the release.prepare Job's outputs).
*/}}
{{- define "modaverse.workload" -}}
{{- $root := .root -}}
{{- $b := .b -}}
{{- $name := include "modaverse.componentName" (list $root .suffix) -}}
{{- $sel := dict "root" $root "component" .component "generator" .generator -}}
{{- $isGateway := eq .component "gateway" -}}
{{- $gpu := default dict $b.gpu -}}
{{- $gpuOn := eq (toString (default false $gpu.enabled)) "true" -}}
{{- $global := $root.Values.global -}}
{{- $grace := $global.gracePeriodSeconds -}}
{{- $drain := $global.drainDelaySeconds -}}
{{- $metricsPort := int $global.metricsPort -}}
{{- $port := int $b.port -}}
{{- $storage := default dict $b.storage -}}
{{- $download := default dict $storage.download -}}
{{- $downloadOn := eq (toString (default false $download.enabled)) "true" -}}
{{- $mountPath := default "/models" $storage.mountPath -}}
{{- /* TLS of this server */ -}}
{{- $tls := dict -}}
{{- if $isGateway -}}
{{- $tls = default dict $b.tls -}}
{{- else -}}
{{- $tls = include "modaverse.backendTls" (list $root $b) | fromJson -}}
{{- end -}}
{{- $tlsOn := eq (toString (default false $tls.enabled)) "true" -}}
{{- $mtls := and $tlsOn (eq (toString (default false $tls.mtls)) "true") -}}
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
{{- $upstreamTls = eq (toString (default false $global.tls.enabled)) "true" -}}
{{- if $upstreamTls -}}
{{- if not $global.tls.secretName -}}
{{- fail "global.tls.enabled needs global.tls.secretName (tls.crt, tls.key, ca.crt)" -}}
{{- end -}}
{{- $_ := set $env "MODAVERSE_TLS_CA_FILE" "/etc/modaverse/upstream-tls/ca.crt" -}}
{{- if and (eq (toString (default false $global.tls.mtls)) "true") (not $tlsOn) -}}
{{- fail "global.tls.mtls: the gateway must present a client certificate; enable gateway.tls with a secretName" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := .env -}}
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
{{- $autoOn := eq (toString (default false $autoscaling.enabled)) "true" -}}
{{- $claim := include "modaverse.claimName" (list $root .suffix $storage) -}}
{{- $waitFor := default list .waitFor -}}
{{- $repos := default list $download.repos -}}
{{- if and $downloadOn (not $repos) (eq .component "generator") -}}
{{- $repos = list (dict "repo" $b.model "dir" $b.model) -}}
{{- end -}}
{{- if and $downloadOn (not $repos) -}}
{{- fail (printf "%s: storage.download.enabled needs storage.download.repos" $name) -}}
{{- end -}}
{{- $probeHost := default (printf "%s.%s.svc" $name $root.Release.Namespace) $tls.serverName -}}
{{- $svcName := $isGateway | ternary (printf "%s-headless" $name) $name -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $sel | nindent 4 }}
spec:
  {{- if not $autoOn }}
  replicas: {{ int $b.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    {{- toYaml $b.strategy | nindent 4 }}
  selector:
    matchLabels:
      {{- include "modaverse.selectorLabels" $sel | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "modaverse.labels" $sel | nindent 8 }}
        {{- with $b.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- $annotations := deepCopy (default dict $b.podAnnotations) }}
      {{- if $isGateway }}
      {{- $_ := set $annotations "checksum/routes" (include "modaverse.routes" $root | sha256sum) }}
      {{- end }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "modaverse.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ add (int $drain) (int $grace) (int $global.terminationGraceExtraSeconds) }}
      {{- with $runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      {{- with $global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $global.podSecurityContext | nindent 8 }}
      {{- with $nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or $downloadOn $waitFor }}
      initContainers:
      {{- end }}
      {{- if $downloadOn }}
        - name: download-models
          image: {{ default (include "modaverse.image" (list $root $b.image)) $download.image }}
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
              value: {{ $mountPath | quote }}
            - name: MODAVERSE_DOWNLOADS
              value: {{ toJson $repos | quote }}
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
            - {name: models, mountPath: {{ $mountPath | quote }}}
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /cache}
      {{- end }}
      {{- if $waitFor }}
        {{- /* Polls for the files the release.prepare Job writes (it renames each output into place whole). */}}
        - name: wait-for-release
          image: {{ include "modaverse.image" (list $root $b.image) }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          command:
            - sh
            - -c
            - 'for f in "$@"; do until [ -e "$f" ]; do echo "waiting for $f (written by the release.prepare Job)"; sleep 20; done; echo "found $f"; done'
            - wait-for-release
            {{- range $waitFor }}
            - {{ . | quote }}
            {{- end }}
          securityContext:
            {{- toYaml $global.securityContext | nindent 12 }}
          resources:
            requests: {cpu: 10m, memory: 16Mi}
            limits: {memory: 64Mi}
          volumeMounts:
            - {name: models, mountPath: {{ $mountPath | quote }}, readOnly: true}
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /cache}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "modaverse.image" (list $root $b.image) }}
          imagePullPolicy: {{ $b.image.pullPolicy }}
          ports:
            - {name: grpc, containerPort: {{ $port }}, protocol: TCP}
            - {name: metrics, containerPort: {{ $metricsPort }}, protocol: TCP}
          env:
            {{- range $k := keys $env | sortAlpha }}
            - name: {{ $k }}
              value: {{ get $env $k | toString | quote }}
            {{- end }}
            {{- with $b.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- $p := $b.probes }}
          {{- if $tlsOn }}
          {{- /* The kubelet's gRPC probe cannot speak TLS: check grpc.health.v1 from inside the pod. */}}
          {{- $check := printf "import grpc,sys;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;r=lambda p:open(p,'rb').read();d='/etc/modaverse/tls/';c=grpc.secure_channel('127.0.0.1:%d',grpc.ssl_channel_credentials(r(d+'ca.crt'),r(d+'tls.key'),r(d+'tls.crt')),options=[('grpc.ssl_target_name_override','%s')]);sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(),timeout=3).status==1 else 1)" $port $probeHost }}
          startupProbe:
            exec: {command: [python, -c, {{ $check | quote }}]}
            {{- toYaml $p.startup | nindent 12 }}
          readinessProbe:
            exec: {command: [python, -c, {{ $check | quote }}]}
            {{- toYaml $p.readiness | nindent 12 }}
          livenessProbe:
            exec: {command: [python, -c, {{ $check | quote }}]}
            {{- toYaml $p.liveness | nindent 12 }}
          {{- else }}
          startupProbe:
            grpc: {port: {{ $port }}}
            {{- toYaml $p.startup | nindent 12 }}
          readinessProbe:
            grpc: {port: {{ $port }}}
            {{- toYaml $p.readiness | nindent 12 }}
          livenessProbe:
            grpc: {port: {{ $port }}}
            {{- toYaml $p.liveness | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $global.securityContext | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /cache}
            {{- if not $isGateway }}
            - {name: models, mountPath: {{ $mountPath | quote }}}
            {{- end }}
            {{- if $tlsOn }}
            - {name: tls, mountPath: /etc/modaverse/tls, readOnly: true}
            {{- end }}
            {{- if $upstreamTls }}
            - {name: upstream-tls, mountPath: /etc/modaverse/upstream-tls, readOnly: true}
            {{- end }}
            {{- if $isGateway }}
            - {name: routes, mountPath: /etc/modaverse/routes, readOnly: true}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 2Gi}
        - name: cache
          emptyDir: {sizeLimit: 10Gi}
        {{- if not $isGateway }}
        {{- if $claim }}
        - name: models
          persistentVolumeClaim: {claimName: {{ $claim }}}
        {{- else }}
        - name: models
          emptyDir: {sizeLimit: {{ default "20Gi" $storage.emptyDirSizeLimit }}}
        {{- end }}
        {{- end }}
        {{- if $tlsOn }}
        - name: tls
          secret: {secretName: {{ $tls.secretName }}, defaultMode: 0440}
        {{- end }}
        {{- if $upstreamTls }}
        - name: upstream-tls
          secret: {secretName: {{ $global.tls.secretName }}, defaultMode: 0440, items: [{key: ca.crt, path: ca.crt}]}
        {{- end }}
        {{- if $isGateway }}
        - name: routes
          configMap: {name: {{ include "modaverse.componentName" (list $root "routes") }}}
        {{- end }}
---
{{- /* Headless Service: one DNS record per ready pod, for dns:/// round-robin and for metrics. */}}
apiVersion: v1
kind: Service
metadata:
  name: {{ $svcName }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $sel | nindent 4 }}
    modaverse.io/metrics: "true"
spec:
  clusterIP: None
  publishNotReadyAddresses: false
  selector:
    {{- include "modaverse.selectorLabels" $sel | nindent 4 }}
  ports:
    - {name: grpc, port: {{ $port }}, targetPort: grpc, protocol: TCP, appProtocol: grpc}
    - {name: metrics, port: {{ $metricsPort }}, targetPort: metrics, protocol: TCP, appProtocol: http}
{{- if eq $storage.source "pvc" }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ $claim }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $sel | nindent 4 }}
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
{{- end }}
{{- $pdb := default dict $b.pdb }}
{{- if eq (toString (default false $pdb.enabled)) "true" }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $sel | nindent 4 }}
spec:
  {{- if hasKey $pdb "minAvailable" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ default 1 $pdb.maxUnavailable }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "modaverse.selectorLabels" $sel | nindent 6 }}
{{- end }}
{{- if $autoOn }}
{{- $min := int $autoscaling.minReplicas }}
{{- $max := int $autoscaling.maxReplicas }}
{{- if gt $min $max }}
{{- fail (printf "%s: autoscaling.minReplicas (%d) > maxReplicas (%d)" $name $min $max) }}
{{- end }}
---
{{- if eq $autoscaling.kind "hpa" }}
{{- $hpa := default dict $autoscaling.hpa }}
{{- if lt $min 1 }}
{{- fail (printf "%s: an HPA cannot scale to zero; use autoscaling.kind keda for minReplicas 0" $name) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $min }}
  maxReplicas: {{ $max }}
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
{{- else }}
{{- $k := default dict $autoscaling.keda }}
{{- $metricName := eq $k.metric "in_flight" | ternary "modaverse_requests_in_flight" "modaverse_queue_depth" }}
{{- $ns := $root.Release.Namespace }}
{{- $own := printf "(sum(%s{namespace=\"%s\",service=\"%s\"}) or vector(0))" $metricName $ns $svcName }}
{{- /* A generator also counts the invocations the gateway is holding for its route: that is what
       wakes a generator scaled to zero (the gateway waits up to MODAVERSE_GENERATOR_WAKE_S). */}}
{{- $waiting := printf " + (sum(modaverse_gateway_invocations_in_flight{namespace=\"%s\",route=\"%s\"}) or vector(0))" $ns .generator }}
{{- $query := default (printf "%s%s" $own (ternary $waiting "" (ne .generator ""))) $k.query }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "modaverse.labels" $sel | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicaCount: {{ $min }}
  maxReplicaCount: {{ $max }}
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
        serverAddress: {{ $root.Values.keda.prometheusServerAddress | quote }}
        query: {{ $query | quote }}
        threshold: {{ toString $k.threshold | quote }}
        activationThreshold: "0"
{{- end }}
{{- end }}
{{- end -}}
