"""Bring your own cluster (`pytest suites/ --byo-kubeconfig FILE`): a cluster the harness did not make.

  discover   reach it (clear errors for a bad kubeconfig/context, too few workers), then find
             what the kind path knows by construction: mode, node addresses and access, pod and
             Service ranges, a LoadBalancer provider, the external vantage point
  snapshot   kube-system objects and nodes before and after a run: the run fails if they differ
  attach     the run's handle on the cluster (discovery once per run) and its end: our
             containers removed, the snapshot compared
  testbed    `python -m harness.byo check`: foreign kind clusters made with plain `kind create
             cluster`, the whole suite against each, and the failure cases

Hands off: with --byo-kubeconfig nothing outside the harness's own (labelled) test namespaces is
created, changed or restarted; experiments that would need that skip and name
--allow-cluster-changes, the user's consent (each change is then undone and reported).
"""
