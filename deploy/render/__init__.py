"""`safehub deploy render`: Kubernetes (Strimzi) and compose files generated from the registry.

Pure renderers (a `Site` and the registry in, a list of manifests out) and one thin command
that writes them as YAML, sorted and stable, so that rendering again is a no-op.
"""
