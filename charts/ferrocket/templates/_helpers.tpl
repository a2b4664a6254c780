{{/* The release's full name, at most 63 characters (a DNS label). */}}
{{- define "ferrocket.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "ferrocket.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{ include "ferrocket.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Labels selecting the operator's pods. */}}
{{- define "ferrocket.selectorLabels" -}}
app.kubernetes.io/name: ferrocket-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferrocket.serviceAccountName" -}}
{{- default (include "ferrocket.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "ferrocket.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{/*
What the operator does in the namespaces it watches: its custom resources and their status
and finalizers; the objects a BrokerSet runs as; pods (read, and deleted one at a time to roll
them; never exec); Events. Nothing else.
*/}}
{{- define "ferrocket.rules" -}}
- apiGroups: [ferrocket.io]
  resources: [brokersets, topics, consumergroups, users]
  verbs: [get, list, watch, patch, update]
- apiGroups: [ferrocket.io]
  resources: [brokersets/status, topics/status, consumergroups/status, users/status]
  verbs: [get, patch, update]
- apiGroups: [ferrocket.io]
  resources: [brokersets/finalizers, topics/finalizers, consumergroups/finalizers, users/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [statefulsets, deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
# The cluster's and Users' credentials (generated once, never changed) and the TLS CA the
# operator trusts.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
