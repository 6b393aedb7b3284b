{{/* Names and labels. */}}
{{- define "tunnel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tunnel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "tunnel.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "tunnel.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* A component's resource name: fullname-component, within 63 characters. */}}
{{- define "tunnel.component" -}}
{{- printf "%s-%s" (include "tunnel.fullname" .root | trunc (int (sub 62 (len .name)))) .name | trimSuffix "-" -}}
{{- end -}}

{{- define "tunnel.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "tunnel.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tunnel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunnel.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tunnel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where secrets are mounted. The directory is also the process's CREDENTIALS_DIRECTORY:
     files a platform mounts there for this container alone (the Secret's files, group-readable
     through fsGroup so the non-root user can read them) pass the private-file check, as systemd
     credentials do. */}}
{{- define "tunnel.credentials" -}}/etc/tunnel/credentials{{- end -}}

{{/* The relay transport: tcp, tls or quic. */}}
{{- define "tunnel.transport" -}}{{ .Values.server.relay.transport }}{{- end -}}

{{/* Whether the server's certificate comes from a Secret (named by the user or made here). */}}
{{- define "tunnel.tlsSecret" -}}
{{- if .Values.server.tls.secretName -}}
{{- .Values.server.tls.secretName -}}
{{- else if .Values.server.tls.cert -}}
{{- include "tunnel.component" (dict "root" . "name" "tls") -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the server's tokens. */}}
{{- define "tunnel.tokenSecret" -}}
{{- default (include "tunnel.component" (dict "root" . "name" "tokens")) .Values.server.tokens.existingSecret -}}
{{- end -}}

{{/* Whether the server reads any token. */}}
{{- define "tunnel.hasTokens" -}}
{{- if or .Values.server.tokens.global.enabled .Values.server.tokens.tunnels -}}true{{- end -}}
{{- end -}}

{{/* The lowest port the server container binds: below 1024 it needs NET_BIND_SERVICE. */}}
{{- define "tunnel.lowestPort" -}}
{{- $lowest := int .Values.server.relay.port -}}
{{- range .Values.server.entrypoints -}}
{{- if lt (int .port) $lowest -}}{{- $lowest = int .port -}}{{- end -}}
{{- end -}}
{{- $lowest -}}
{{- end -}}

{{/* A Service spec's public part: type, traffic policy, source ranges, from server.service with
     the overrides of one Service (relay or entrypoint). */}}
{{- define "tunnel.publicServiceSpec" -}}
{{- $s := merge (deepCopy (default dict .override)) (deepCopy .root.Values.server.service) -}}
type: {{ $s.type }}
{{- if ne $s.type "ClusterIP" }}
externalTrafficPolicy: {{ $s.externalTrafficPolicy }}
{{- end }}
{{- if and (eq $s.type "LoadBalancer") $s.loadBalancerSourceRanges }}
loadBalancerSourceRanges:
{{ toYaml $s.loadBalancerSourceRanges }}
{{- end }}
{{- if and (eq $s.type "LoadBalancer") $s.loadBalancerClass }}
loadBalancerClass: {{ $s.loadBalancerClass }}
{{- end }}
{{- end -}}

{{- define "tunnel.publicServiceAnnotations" -}}
{{- $s := merge (deepCopy (default dict .override)) (deepCopy .root.Values.server.service) -}}
{{- with $s.annotations -}}
annotations:
{{ toYaml . | indent 2 }}
{{- end -}}
{{- end -}}

{{/* Container security: non-root, read-only root, no privilege escalation, every capability
     dropped; .bind adds NET_BIND_SERVICE. */}}
{{- define "tunnel.containerSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .root.Values.securityContext.runAsUser }}
runAsGroup: {{ .root.Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
seccompProfile:
  type: RuntimeDefault
capabilities:
  drop: ["ALL"]
  {{- if .bind }}
  add: ["NET_BIND_SERVICE"]
  {{- end }}
{{- end -}}

{{- define "tunnel.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The admin listener's probes: liveness on /healthz only (never on a session to the
     other side), readiness on /readyz, a startup probe that gives the process time to bind. */}}
{{- define "tunnel.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 1
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* The Secret holding the key the cluster's replicas authenticate each other with. */}}
{{- define "tunnel.clusterSecret" -}}
{{- default (include "tunnel.component" (dict "root" . "name" "cluster")) .Values.server.cluster.secret.existingSecret -}}
{{- end -}}

{{/* The Secret holding the admin token. */}}
{{- define "tunnel.adminSecret" -}}
{{- default (include "tunnel.component" (dict "root" . "name" "admin")) .Values.admin.token.existingSecret -}}
{{- end -}}

{{/* The admin token as a projected volume source, at admin-token. */}}
{{- define "tunnel.adminTokenSource" -}}
- secret:
    name: {{ include "tunnel.adminSecret" . }}
    items:
      - key: {{ .Values.admin.token.key }}
        path: admin-token
{{- end -}}

{{/* The [admin] table: on the pod's address, so with a token. */}}
{{- define "tunnel.adminToml" -}}
[admin]
addr = {{ printf "0.0.0.0:%d" (int .Values.admin.port) | toJson }}
tokenFile = {{ printf "%s/admin-token" (include "tunnel.credentials" .) | toJson }}
{{- end -}}
