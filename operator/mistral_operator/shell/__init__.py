"""The thin Kopf shell: handlers, indexes and Kubernetes I/O around the pure core."""
