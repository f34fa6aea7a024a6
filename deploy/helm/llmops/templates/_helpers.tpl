{{/*
Names, labels and the pieces shared by the Deployment and the migration Job.
*/}}

{{- define "llmops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmops.fullname" -}}
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

{{- define "llmops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llmops.labels" -}}
helm.sh/chart: {{ include "llmops.chart" . }}
{{ include "llmops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmops
{{- end }}

{{- define "llmops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when the control plane uses PostgreSQL (or any URL) instead of SQLite. */}}
{{- define "llmops.externalDatabase" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{/* "true" when the control plane is on (it is unless config.control.enabled is false). */}}
{{- define "llmops.controlEnabled" -}}
{{- $control := get (.Values.config | default dict) "control" | default dict }}
{{- if not (and (hasKey $control "enabled") (not $control.enabled)) }}true{{ end }}
{{- end }}

{{- define "llmops.runMigrationJob" -}}
{{- if and .Values.migrations.enabled (include "llmops.externalDatabase" .) (include "llmops.controlEnabled" .) }}true{{ end }}
{{- end }}

{{- define "llmops.hasAdminKey" -}}
{{- if or .Values.adminKey.existingSecret .Values.adminKey.value }}true{{ end }}
{{- end }}

{{/* The chart's own Secret holds the admin key and URLs given as plain values. */}}
{{- define "llmops.chartSecretNeeded" -}}
{{- if or (and .Values.adminKey.value (not .Values.adminKey.existingSecret))
          (and .Values.database.url (not .Values.database.existingSecret))
          (and .Values.redis.url (not .Values.redis.existingSecret)) }}true{{ end }}
{{- end }}

{{/* The gateway config file: .Values.config plus the defaults that tie it to this chart. */}}
{{- define "llmops.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $control := deepCopy (get $cfg "control" | default dict) }}
{{- if not (hasKey $control "data_dir") }}
{{- $_ := set $control "data_dir" .Values.dataDir.mountPath }}
{{- end }}
{{- if and (include "llmops.runMigrationJob" .) (not (hasKey $control "auto_migrate")) }}
{{- $_ := set $control "auto_migrate" false }}
{{- end }}
{{- $_ := set $cfg "control" $control }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Secret-backed env vars. Call with (dict "ctx" $ "secretName" NAME): NAME is the chart
Secret for the gateway, or the hook Secret for the migration Job (which runs first).
*/}}
{{- define "llmops.databaseEnv" -}}
{{- $v := .ctx.Values }}
{{- if $v.database.existingSecret }}
- name: LLMOPS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.database.existingSecret }}
      key: {{ $v.database.key }}
{{- else if $v.database.url }}
- name: LLMOPS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: database-url
{{- end }}
{{- end }}

{{- define "llmops.runtimeEnv" -}}
{{- $v := .Values }}
{{- $secret := include "llmops.fullname" . }}
{{- include "llmops.databaseEnv" (dict "ctx" . "secretName" $secret) }}
{{- if $v.adminKey.existingSecret }}
- name: LLMOPS_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $v.adminKey.existingSecret }}
      key: {{ $v.adminKey.key }}
{{- else if $v.adminKey.value }}
- name: LLMOPS_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: admin-key
{{- end }}
{{- with $v.kubernetesRuntimes.serving }}{{ if .enabled }}
- name: SERVING_RUNTIME
  value: kubernetes
- name: SERVING_NAMESPACE
  value: {{ .namespace | quote }}
{{- end }}{{ end }}
{{- with $v.kubernetesRuntimes.training }}{{ if .enabled }}
- name: TRAINING_RUNTIME
  value: kubernetes
- name: TRAINING_NAMESPACE
  value: {{ .namespace | quote }}
- name: TRAINING_API_BASE_URL
  value: {{ .apiBaseUrl | default (printf "http://%s.%s.svc:%v/llm-ops/v1" (include "llmops.fullname" $) $.Release.Namespace $v.service.port) | quote }}
{{- end }}{{ end }}
{{- if $v.redis.existingSecret }}
- name: LLMOPS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.existingSecret }}
      key: {{ $v.redis.key }}
{{- else if $v.redis.url }}
- name: LLMOPS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: redis-url
{{- end }}
{{- end }}

{{/* Refuse combinations that would install but not work. */}}
{{- define "llmops.validate" -}}
{{- $multi := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- if and $multi (include "llmops.controlEnabled" .) (not (include "llmops.externalDatabase" .)) }}
{{- fail "more than one gateway replica needs an external database (database.url or database.existingSecret): SQLite is single-writer. Set config.control.enabled=false for a gateway without control plane." }}
{{- end }}
{{- if and .Values.configReloader.enabled (not (include "llmops.hasAdminKey" .)) }}
{{- fail "configReloader.enabled needs an admin key (adminKey.existingSecret or adminKey.value) to call the reload endpoint." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetInflightPerPod) }}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage and/or targetInflightPerPod." }}
{{- end }}
{{- end }}

{{/* "true" when serving or training runs on Kubernetes: the control plane calls the API. */}}
{{- define "llmops.usesKubernetes" -}}
{{- if or .Values.kubernetesRuntimes.serving.enabled .Values.kubernetesRuntimes.training.enabled }}true{{ end }}
{{- end }}
