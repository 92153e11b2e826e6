{{- define "lrm-safety.name" -}}lrm-safety-operator{{- end -}}
{{- define "lrm-safety.fullname" -}}{{- printf "%s-%s" .Release.Name "lrm-safety-operator" | trunc 63 | trimSuffix "-" -}}{{- end -}}
{{- define "lrm-safety.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{- default (include "lrm-safety.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}{{- default "default" .Values.serviceAccount.name -}}{{- end -}}
{{- end -}}
{{- define "lrm-safety.labels" -}}
app.kubernetes.io/name: {{ include "lrm-safety.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "lrm-safety.selector" -}}
app.kubernetes.io/name: {{ include "lrm-safety.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{/* The least-privilege rules shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "lrm-safety.namespacedRules" -}}
- apiGroups: ["lrmsafety.io"]
  resources: ["safetyexperiments"]
  verbs: ["get", "list", "watch", "patch", "create"]
- apiGroups: ["lrmsafety.io"]
  resources: ["safetyexperiments/status"]
  verbs: ["get", "patch"]
- apiGroups: ["lrmsafety.io"]
  resources: ["safetystudies"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["lrmsafety.io"]
  resources: ["safetystudies/status"]
  verbs: ["get", "patch"]
{{- /* Owner references with blockOwnerDeletion need update on the owner's finalizers wherever the
       OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift's default): without it every
       Job and ConfigMap create is 403. */}}
- apiGroups: ["lrmsafety.io"]
  resources: ["safetyexperiments/finalizers", "safetystudies/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create"]
{{- /* Services: multi-node train rendezvous, and served models (watched, so a missing one is made again; patched
       to adopt one its Deployment does not own; deleted with an idle server). */}}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- /* A served model is ready when its Service has a ready endpoint: read-only. */}}
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- /* Served models (serve: on a model reference): one Deployment per model, deleted when idle. */}}
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- /* Claims on identical stage work (one Lease per work id, owned by the holding experiment). */}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}
{{/* Pull secret names from a list written either way people type it: [regcred] or [{name: regcred}]
     (`--set x.imagePullSecrets[0].name=regcred`, `--set x.imagePullSecrets={regcred}`, --set-json or a values file). */}}
{{- define "lrm-safety.secretNames" -}}
{{- $names := list -}}
{{- range . -}}
{{- if kindIs "map" . -}}{{- $names = append $names (toString .name) -}}{{- else -}}{{- $names = append $names (toString .) -}}{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}
