"""Benchmarks on real kind clusters (`python -m harness.bench ...`), apart from the suites.

Modules:
  scale     grow the number of Services per proxy mode; measure programming and
            first-packet latency, kube-proxy's metrics and the data-plane size
  metrics   kube-proxy's Prometheus metrics read from the host (histogram differences)
  results   summary, Markdown table and PNG charts from the raw samples
  published the nftables post's first-packet chart as data; runs drawn and judged beside it
"""
