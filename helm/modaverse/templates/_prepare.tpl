{{/*
The release.prepare Job (templates/prepare.yaml): fills the model claim with the ModaVerse release in the layout
release.root points the services at. A plain Job, not a hook: `helm install` does not wait for its hour of
downloads; the encoder and LLM pods wait for its outputs in an init container instead (backends.yaml).
*/}}

{{/* The Job's spec. */}}
{{- define "modaverse.prepareJobSpec" -}}
{{- $root := . -}}
{{- $global := $root.Values.global -}}
{{- $prepare := $root.Values.release.prepare -}}
{{- $p := include "modaverse.releasePrepare" $root | fromJson -}}
{{- $sel := dict "root" $root "component" "prepare" "generator" "" -}}
{{- $env := dict
  "PREPARE_ROOT" $p.root
  "PREPARE_IMAGEBIND" $p.imagebind
  "PREPARE_IMAGEBIND_URL" $prepare.imagebindUrl
  "PREPARE_VICUNA_DIR" $p.vicuna
  "PREPARE_VERIFY" (toString (default false $prepare.verify))
  "HF_HUB_OFFLINE" "1"
  "HF_HOME" "/cache/huggingface"
  "HF_XET_CHUNK_CACHE_SIZE_BYTES" "0"
  "HOME" "/tmp"
  "XDG_CACHE_HOME" "/cache"
  "PYTHONUNBUFFERED" "1"
-}}
{{- range $key, $prefix := dict "modaverse" "PREPARE_RELEASE" "llama" "PREPARE_LLAMA" "vicunaDelta" "PREPARE_DELTA" -}}
{{- $src := required (printf "release.prepare.sources.%s is missing" $key) (get $p.sources $key) -}}
{{- $_ := set $env (printf "%s_REPO" $prefix) $src.repo -}}
{{- $_ := set $env (printf "%s_REVISION" $prefix) $src.revision -}}
{{- $_ := set $env (printf "%s_DIR" $prefix) $src.path -}}
{{- $_ := set $env (printf "%s_INCLUDE" $prefix) (join " " $src.include) -}}
{{- end -}}
{{- range $k, $v := (default dict $prepare.env) -}}
{{- $_ := set $env $k (toString $v) -}}
{{- end -}}
backoffLimit: {{ int $prepare.backoffLimit }}
template:
  metadata:
    labels:
      {{- include "modaverse.labels" $sel | nindent 6 }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "modaverse.serviceAccountName" $root }}
    automountServiceAccountToken: false
    enableServiceLinks: false
    {{- with $global.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $global.podSecurityContext | nindent 6 }}
    {{- with $prepare.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $prepare.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $prepare.affinity }}
    affinity:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      - name: prepare
        image: {{ default (include "modaverse.image" (list $root $root.Values.llm.image)) $prepare.image }}
        imagePullPolicy: {{ $root.Values.llm.image.pullPolicy }}
        command:
          - sh
          - -c
          - |
            {{- $root.Files.Get "files/prepare-release.sh" | nindent 12 }}
        env:
          {{- range $k := keys $env | sortAlpha }}
          - name: {{ $k }}
            value: {{ get $env $k | toString | quote }}
          {{- end }}
          {{- if $global.hfToken.secretName }}
          - name: HF_TOKEN
            valueFrom:
              secretKeyRef:
                name: {{ $global.hfToken.secretName }}
                key: {{ $global.hfToken.key }}
          {{- end }}
        resources:
          {{- toYaml (default dict $prepare.resources) | nindent 10 }}
        securityContext:
          {{- toYaml $global.securityContext | nindent 10 }}
        volumeMounts:
          - {name: models, mountPath: {{ $p.mountPath | quote }}}
          - {name: tmp, mountPath: /tmp}
          - {name: cache, mountPath: /cache}
    volumes:
      - name: models
        persistentVolumeClaim: {claimName: {{ $p.claim }}}
      - name: tmp
        emptyDir: {sizeLimit: 4Gi}
      - name: cache
        emptyDir: {sizeLimit: 12Gi}
{{- end -}}

{{/* The Job's name carries a hash of its spec: a Job's pod template is immutable, so changed values make a new
     Job (helm deletes the old one) instead of a failed upgrade; unchanged values keep the finished Job. */}}
{{- define "modaverse.prepareJobName" -}}
{{- printf "%s-prepare-%s" (include "modaverse.fullname" .) (include "modaverse.prepareJobSpec" . | sha256sum | trunc 8) -}}
{{- end -}}
