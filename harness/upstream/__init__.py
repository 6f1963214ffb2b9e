"""Upstream Kubernetes' own `[sig-network] Services` e2e specs, beside the article's experiments.

    pytest suites/ --proxy-mode=iptables,nftables -n 2 --upstream-conformance
    python -m harness.upstream build      # e2e.test, ginkgo, agnhost image (cached)
    python -m harness.upstream list       # the specs the default focus/skip select

Module map (one concern each):
  build     e2e.test, the ginkgo CLI and the agnhost image from k8s.io/kubernetes at the pinned version
  specs     which specs a focus/skip selects (a dry run, cached by the e2e.test build) and their pytest ids
  run       one e2e.test run per mode (split between its clusters when it has several), read back per spec
  coverage  article experiments -> upstream specs that check the same behaviour (data)
  report    the report's upstream sections: per-mode spec tables and the coverage table
"""
