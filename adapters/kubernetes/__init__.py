"""Kubernetes plumbing shared by the serving and training runtimes (``adapters/serving/kubernetes``,
``adapters/training/kubernetes``): ``client`` builds the API client and makes the calls (off the event loop, with a
timeout, every connection returned to the pool with its answer read or closed), ``objects`` decodes what the
runtimes read back (metadata, conditions, pods) with msgspec. Each runtime keeps its own kinds, manifests, status
reading and error translation next to it."""
