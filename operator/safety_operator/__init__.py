"""The lrm-safety Kubernetes operator (kopf). Never runs ML code; needs no GPU."""
