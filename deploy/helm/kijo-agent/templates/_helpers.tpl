{{/* Name of every object of the release. */}}
{{- define "kijo-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kijo-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kijo-agent.labels" -}}
{{ include "kijo-agent.selectorLabels" . }}
app.kubernetes.io/part-of: kijo-agent
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* true when the database URL comes from a Secret, false for the embedded store. */}}
{{- define "kijo-agent.externalDatabase" -}}
{{- if or .Values.existingSecret .Values.databaseUrl }}true{{ end -}}
{{- end -}}

{{- define "kijo-agent.secretName" -}}
{{- .Values.existingSecret | default (include "kijo-agent.fullname" .) -}}
{{- end -}}

{{/* Secret values the chart stores itself: key -> value (empty ones dropped). */}}
{{- define "kijo-agent.secretData" -}}
{{- $d := dict -}}
{{- if not .Values.existingSecret -}}
{{- $_ := set $d "database-url" .Values.databaseUrl -}}
{{- $_ := set $d "slack-webhook" .Values.notifications.slack.webhookUrl -}}
{{- $_ := set $d "webhook-url" .Values.notifications.webhook.url -}}
{{- $_ := set $d "webhook-secret" .Values.notifications.webhook.secret -}}
{{- $_ := set $d "saas-api-key" .Values.saas.apiKey -}}
{{- end -}}
{{- $out := dict -}}
{{- range $k, $v := $d }}{{ if $v }}{{ $_ := set $out $k $v }}{{ end }}{{ end -}}
{{- toJson $out -}}
{{- end -}}

{{/* PolicyRules from files/rbac-permissions.json; pass (dict "Files" .Files "namespacedOnly" bool). */}}
{{- define "kijo-agent.readRules" -}}
{{- $namespacedOnly := .namespacedOnly -}}
{{- range (.Files.Get "files/rbac-permissions.json" | fromJsonArray) }}
{{- if or (not $namespacedOnly) .namespaced }}
- apiGroups: [{{ .api_group | quote }}]
  resources: [{{ .resource | quote }}]
  verbs: {{ toJson .verbs }}
{{- end }}
{{- end }}
{{- end -}}

{{/* PolicyRules of rbac.extraOwnerRules: verb get only, whatever the values say (the schema
     refuses any other key); pass the root context. */}}
{{- define "kijo-agent.extraOwnerRules" -}}
{{- range .Values.rbac.extraOwnerRules }}
- apiGroups: [{{ .apiGroup | quote }}]
  resources: {{ toJson .resources }}
  verbs: ["get"]
{{- end }}
{{- end -}}

{{- define "kijo-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}
