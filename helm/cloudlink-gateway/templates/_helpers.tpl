{{/* Names and labels. */}}

{{- define "cloudlink-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cloudlink-gateway.fullname" -}}
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

{{- define "cloudlink-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cloudlink-gateway.instanceLabels" -}}
app.kubernetes.io/name: {{ include "cloudlink-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The server's pods. The component tells them from the migration Job's pods, which the
Service, the PodDisruptionBudget and the spread constraints must not count.
*/}}
{{- define "cloudlink-gateway.selectorLabels" -}}
{{ include "cloudlink-gateway.instanceLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "cloudlink-gateway.labels" -}}
helm.sh/chart: {{ include "cloudlink-gateway.chart" . }}
{{ include "cloudlink-gateway.instanceLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cloudlink-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cloudlink-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cloudlink-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/* The database is the embedded SQLite file on a volume. */}}
{{- define "cloudlink-gateway.sqlite" -}}
{{- if eq .Values.database.type "sqlite" }}true{{ end }}
{{- end }}

{{/* The migration Job runs (PostgreSQL only: see templates/migration-job.yaml). */}}
{{- define "cloudlink-gateway.migrationJob" -}}
{{- if and (not (include "cloudlink-gateway.sqlite" .)) .Values.migration.enabled }}true{{ end }}
{{- end }}

{{/* More than one pod may run at once: replicas, or the autoscaler's floor. */}}
{{- define "cloudlink-gateway.severalReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/*
A setting's value as its environment variable's text. Numbers arrive as float64, which
prints 1048576 as 1.048576e+06: a whole number is printed as an integer, so that the
gateway's integer settings read it.
*/}}
{{- define "cloudlink-gateway.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq (floor .) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}{{ . }}{{ end }}
{{- end }}

{{/* The public URL: config.publicUrl, else the first Ingress host. */}}
{{- define "cloudlink-gateway.publicUrl" -}}
{{- if .Values.config.publicUrl }}
{{- .Values.config.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- $scheme := "http" }}
{{- range .Values.ingress.tls }}
{{- if has $host (.hosts | default list) }}{{ $scheme = "https" }}{{ end }}
{{- end }}
{{- printf "%s://%s" $scheme $host }}
{{- else }}
{{- fail "config.publicUrl is required: the https:// URL Entra, Twilio, CM.com and Graph call (tenant URLs and webhook URLs are built from it), or enable the Ingress with a host to take it from" }}
{{- end }}
{{- end }}

{{/*
Every non-secret setting, as a YAML map of environment variable to text. The ConfigMap
holds it for the Deployment, and the migration Job gets the same map as env (see
templates/migration-job.yaml), so the two cannot drift apart.
*/}}
{{- define "cloudlink-gateway.settings" -}}
{{- $settings := dict }}
{{- range $key, $value := .Values.config }}
{{- if and (ne $key "publicUrl") (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{- $_ := set $settings (printf "GATEWAY_%s" ($key | snakecase | upper)) (include "cloudlink-gateway.envValue" $value) }}
{{- end }}
{{- end }}
{{- $_ := set $settings "GATEWAY_PUBLIC_URL" (include "cloudlink-gateway.publicUrl" .) }}
{{- $_ := set $settings "GATEWAY_WORKERS" (include "cloudlink-gateway.envValue" .Values.server.workers) }}
{{- $_ := set $settings "GATEWAY_KEEPALIVE_SECONDS" (include "cloudlink-gateway.envValue" .Values.server.keepaliveSeconds) }}
{{- $_ := set $settings "GATEWAY_DRAIN_SECONDS" (include "cloudlink-gateway.envValue" .Values.shutdown.drainSeconds) }}
{{- $_ := set $settings "GATEWAY_SHUTDOWN_SECONDS" (include "cloudlink-gateway.envValue" .Values.shutdown.shutdownSeconds) }}
{{- if include "cloudlink-gateway.sqlite" . }}
{{- /* A directory the gateway creates itself (0700) inside the volume. */}}
{{- $_ := set $settings "GATEWAY_DATA_DIR" (printf "%s/data" (.Values.persistence.mountPath | trimSuffix "/")) }}
{{- end }}
{{- if .Values.server.forwardedAllowIps }}
{{- $_ := set $settings "FORWARDED_ALLOW_IPS" .Values.server.forwardedAllowIps }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{/*
One env entry read from an existing Secret, or a fail naming what to set.
Arguments: root (the chart's context), path (its values path), env, ref (name, key).
*/}}
{{- define "cloudlink-gateway.secretEnv" -}}
{{- $name := .ref.name | default .root.Values.secrets.existingSecret }}
{{- if not $name }}
{{- fail (printf "%s: no Secret named for %s. Set secrets.existingSecret (or %s.name) to an existing Secret with the key %q; this chart never creates secrets, e.g. kubectl create secret generic cloudlink-gateway --from-literal=%s=..." .path .env .path (.ref.key | default "") (.ref.key | default "KEY")) }}
{{- end }}
{{- if not .ref.key }}
{{- fail (printf "%s.key: the key of Secret %q holding %s is required" .path $name .env) }}
{{- end -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ $name | quote }}
      key: {{ .ref.key | quote }}
{{- end }}

{{/* The database URL from its Secret (PostgreSQL only). */}}
{{- define "cloudlink-gateway.databaseUrlEnv" -}}
{{- if not (include "cloudlink-gateway.sqlite" .) }}
{{- include "cloudlink-gateway.secretEnv" (dict "root" . "path" "secrets.databaseUrl" "env" "GATEWAY_DATABASE_URL" "ref" .Values.secrets.databaseUrl) }}
{{- end }}
{{- end }}

{{/* Every secret the server reads, each from its existing Secret. */}}
{{- define "cloudlink-gateway.secretEnvs" -}}
{{- $secrets := .Values.secrets }}
{{- include "cloudlink-gateway.databaseUrlEnv" . }}
{{- if $secrets.secretKeys.enabled }}
{{ include "cloudlink-gateway.secretEnv" (dict "root" . "path" "secrets.secretKeys" "env" "GATEWAY_SECRET_KEYS" "ref" $secrets.secretKeys) }}
{{- else if not (include "cloudlink-gateway.sqlite" .) }}
{{- fail "secrets.secretKeys.enabled: GATEWAY_SECRET_KEYS is required with PostgreSQL (every replica needs the same keys); only SQLite keeps its key file on the data volume" }}
{{- end }}
{{- if $secrets.adminToken.enabled }}
{{ include "cloudlink-gateway.secretEnv" (dict "root" . "path" "secrets.adminToken" "env" "GATEWAY_ADMIN_TOKEN" "ref" $secrets.adminToken) }}
{{- end }}
{{- if $secrets.o365ClientSecret.enabled }}
{{ include "cloudlink-gateway.secretEnv" (dict "root" . "path" "secrets.o365ClientSecret" "env" "GATEWAY_O365_CLIENT_SECRET" "ref" $secrets.o365ClientSecret) }}
{{- end }}
{{- if $secrets.consoleOidcClientSecret.enabled }}
{{ include "cloudlink-gateway.secretEnv" (dict "root" . "path" "secrets.consoleOidcClientSecret" "env" "GATEWAY_CONSOLE_OIDC_CLIENT_SECRET" "ref" $secrets.consoleOidcClientSecret) }}
{{- end }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: the drain, the shutdown, and 5 to exit. */}}
{{- define "cloudlink-gateway.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.shutdown.terminationGracePeriodSeconds }}
{{- addf .Values.shutdown.drainSeconds .Values.shutdown.shutdownSeconds 5 | ceil | int64 }}
{{- else }}
{{- .Values.shutdown.terminationGracePeriodSeconds | int64 }}
{{- end }}
{{- end }}

{{/* The volumes every pod of the chart mounts: /tmp on a read-only root. */}}
{{- define "cloudlink-gateway.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{/* Checks values.schema.json cannot make as clearly (and that hold when it is skipped). */}}
{{- define "cloudlink-gateway.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas is above autoscaling.maxReplicas" }}
{{- end }}
{{- if include "cloudlink-gateway.sqlite" . }}
{{- if .Values.autoscaling.enabled }}
{{- fail "database.type sqlite runs one replica: the SQLite file is on a ReadWriteOnce volume and has one writer. Turn autoscaling.enabled off, or use PostgreSQL" }}
{{- end }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail "database.type sqlite runs one replica: set replicaCount to 1, or use PostgreSQL" }}
{{- end }}
{{- end }}
{{- end }}
