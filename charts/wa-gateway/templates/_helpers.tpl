{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "wa-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless already in it. */}}
{{- define "wa-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The admin Service's name; Prometheus' `job` label for the scraped targets. */}}
{{- define "wa-gateway.adminName" -}}
{{- printf "%s-admin" (include "wa-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wa-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wa-gateway.labels" -}}
helm.sh/chart: {{ include "wa-gateway.chart" . }}
{{ include "wa-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "wa-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wa-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "wa-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "wa-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the gateway's environment comes from: an existing one, or the chart's. */}}
{{- define "wa-gateway.secretName" -}}
{{- default (include "wa-gateway.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The port the webhook listener binds inside the pod. */}}
{{- define "wa-gateway.webhookPort" -}}
{{- if .Values.tls.enabled }}8443{{ else }}8080{{ end }}
{{- end }}

{{- define "wa-gateway.adminPort" -}}9090{{- end }}

{{/* Where the configuration ConfigMap is mounted (a directory, so the `..data` swap reaches the watcher). */}}
{{- define "wa-gateway.configDir" -}}/etc/wa-gateway/config{{- end }}

{{- define "wa-gateway.dataDir" -}}/var/lib/wa-gateway{{- end }}

{{/* storage.url for the gateway: SQLite on the data volume, or PostgreSQL with its password from PGPASSWORD. */}}
{{- define "wa-gateway.storageUrl" -}}
{{- if eq .Values.storage.kind "sqlite" -}}
sqlite://{{ include "wa-gateway.dataDir" . }}/gateway.db
{{- else -}}
{{- with .Values.storage.postgres -}}
postgres://{{ .user }}@{{ .host }}:{{ .port }}/{{ .database }}?sslmode={{ .sslmode }}
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The gateway's configuration file: `.Values.config` with the parts the chart owns (listen
addresses, TLS files, the admin token reference, storage URL) filled in from the chart's values.
*/}}
{{- define "wa-gateway.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $listen := dict "webhook" (printf "0.0.0.0:%s" (include "wa-gateway.webhookPort" .)) "admin" (printf "0.0.0.0:%s" (include "wa-gateway.adminPort" .)) -}}
{{- if .Values.tls.enabled -}}
{{- $_ := set $listen "tls" (dict "cert" (printf "%s/tls.crt" .Values.tls.mountPath) "key" (printf "%s/tls.key" .Values.tls.mountPath)) -}}
{{- else -}}
{{- $_ := set $listen "plain_http" true -}}
{{- end -}}
{{- $_ := set $listen "admin_token" (dict "env" .Values.adminToken.secretKey) -}}
{{- $admin := include "wa-gateway.adminName" . -}}
{{- $hosts := list $admin (printf "%s.%s.svc" $admin .Release.Namespace) (printf "%s.%s.svc.cluster.local" $admin .Release.Namespace) -}}
{{- $_ := set $listen "admin_hosts" (concat $hosts ((.Values.config.listen | default dict).admin_hosts | default list)) -}}
{{- $_ := set $listen "shutdown_delay" (printf "%ds" (int .Values.shutdown.drainDelaySeconds)) -}}
{{- $_ := set $listen "shutdown_timeout" (printf "%ds" (int .Values.shutdown.deadlineSeconds)) -}}
{{- $_ := set $cfg "listen" (merge $listen (.Values.config.listen | default dict)) -}}
{{- $_ := set $cfg "storage" (merge (dict "url" (include "wa-gateway.storageUrl" .)) (.Values.config.storage | default dict)) -}}
{{- $_ := set $cfg "version" 1 -}}
{{- toYaml $cfg -}}
{{- end }}

{{/* The names of every `{ env: NAME }` secret reference under a value, one a line. */}}
{{- define "wa-gateway.envRefs" -}}
{{- if kindIs "map" . -}}
{{- if and (hasKey . "env") (eq (len .) 1) -}}
{{ .env }}
{{ else -}}
{{- range $k, $v := . }}{{ include "wa-gateway.envRefs" $v }}{{ end -}}
{{- end -}}
{{- else if kindIs "slice" . -}}
{{- range . }}{{ include "wa-gateway.envRefs" . }}{{ end -}}
{{- end -}}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express; fails the install with a sentence
saying what to change. With a chart-created Secret, every environment variable the gateway will
read must be one of its keys.
*/}}
{{- define "wa-gateway.checks" -}}
{{- if not .Values.secrets.existingSecret -}}
{{- $needed := splitList "\n" (include "wa-gateway.envRefs" .Values.config) -}}
{{- if eq .Values.storage.kind "postgres" }}{{ $needed = append $needed .Values.storage.postgres.passwordKey }}{{ end -}}
{{- range $needed -}}
{{- if and . (not (hasKey $.Values.secrets.values .)) -}}
{{- fail (printf "the gateway reads environment variable %s, but secrets.values has no key %s: add it, or set secrets.existingSecret to a Secret that has it" . .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not .Values.adminToken.enabled -}}
{{- fail "adminToken.enabled must stay true: the admin port listens on the pod's network, and the gateway refuses an admin listener off loopback without a token (a random one is generated and kept when secrets.values has none)" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.ingress.enabled (not (hasKey .Values.ingress.annotations "nginx.ingress.kubernetes.io/backend-protocol")) (eq .Values.ingress.className "nginx") -}}
{{- fail "tls.enabled makes the pod speak HTTPS: set ingress.annotations.\"nginx.ingress.kubernetes.io/backend-protocol\": HTTPS" -}}
{{- end -}}
{{- end }}

{{/*
The admin token of a chart-created Secret when secrets.values has none: the one already in the
release's Secret (kept across upgrades), else a new random one.
*/}}
{{- define "wa-gateway.adminToken" -}}
{{- $key := .Values.adminToken.secretKey -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "wa-gateway.fullname" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data $key) -}}
{{- index $existing.data $key | b64dec -}}
{{- else -}}
{{- randAlphaNum 48 -}}
{{- end -}}
{{- end }}
