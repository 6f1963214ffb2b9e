"""Fault injection on real harness runs (`python -m harness.faults`): what a signal at a chosen point
of a run leaves on this machine, and how `svc-harness clean` recovers from it.

  scenarios  the scenarios as data: the run (pytest arguments), the point, the fault and its target,
             the expected outcome; the --ci subset
  inventory  what a run left (its containers, markers, kubeconfigs, run directories; the host's guard
             rules), the leftover diff, processes of a run's group, the plain kind cluster's
             fingerprint, and the sweep of a scenario's own cluster prefix
  bed        one scenario: pytest in a process group of its own, the point polled, the fault sent,
             exit and leftovers measured, `svc-harness clean` run and timed
  results    verdicts (green/red), results.md and results.json
  __main__   the command line (also `svc-harness faults`)

Each scenario runs under a cluster prefix of its own (fault-<tag>-<random>), so nothing of another
run is ever touched; `clean --force` is never run. See docs/faults.md.
"""
