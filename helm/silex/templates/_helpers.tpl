{{/* Chart name. */}}
{{- define "silex.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: RELEASE-silex, or RELEASE when it already contains the chart name. */}}
{{- define "silex.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "silex.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "silex.selectorLabels" -}}
app.kubernetes.io/name: {{ include "silex.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "silex.labels" -}}
helm.sh/chart: {{ include "silex.chart" . }}
{{ include "silex.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "silex.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "silex.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "silex.electionId" -}}
{{- default (printf "%s-leader" (include "silex.fullname" .)) .Values.controller.electionId -}}
{{- end -}}

{{/* Namespaces given Secret access by Roles when rbac.namespacedSecrets is on. */}}
{{- define "silex.secretNamespaces" -}}
{{- $nss := .Values.controller.watchNamespaces -}}
{{- with .Values.controller.defaultSslCertificate -}}
{{- $nss = append $nss (first (splitList "/" .)) -}}
{{- end -}}
{{- $nss | uniq | toJson -}}
{{- end -}}

{{/* Checks of values the schema cannot express. */}}
{{- define "silex.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.controller.gracePeriodSeconds) -}}
{{- fail "terminationGracePeriodSeconds must be longer than controller.gracePeriodSeconds (the drain)" -}}
{{- end -}}
{{- if and .Values.rbac.namespacedSecrets (not .Values.controller.watchNamespaces) -}}
{{- fail "rbac.namespacedSecrets needs controller.watchNamespaces (cluster-wide watching lists Secrets in all namespaces)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (eq .Values.kind "DaemonSet") -}}
{{- fail "autoscaling applies to kind Deployment only" -}}
{{- end -}}
{{- end -}}
