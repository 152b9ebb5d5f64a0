"""Pure decisions: no Kopf, no Kubernetes client, no clock reads, no I/O."""
