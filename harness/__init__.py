"""Integration-test harness for Kubernetes Services on real kind clusters.

Module map (one concern each):
  runner        the single seam for running commands (kind, docker, kubectl) and host-side HTTP
  config        defaults, pinned versions, paths
  engine        Docker engine checks, IPVS preflight, engine choice per mode, the egress guard
  guest/        (sub-package) an engine with IPVS: Docker in a user-mode-Linux guest
                (build: kernel + rootfs; vm: boot/ready/images/shutdown; mconsole)
  images        offline image build (node image, workload images)
  cluster       kind cluster lifecycle (create/reuse/delete, xdist lock)
  kube          Kubernetes API helpers (apply, scale, patch, read objects)
  peers         vantage points: client pod, node, external client
  probe         traffic samples (one exec per sample) and their records
  waits         polling waits that explain themselves on timeout
  stats         judging samples: coverage, uniformity, round-robin
  expectations  expected outcomes as data, per experiment/vantage/mode
  modes         proxy-mode inspection and data-plane dumps
  artifacts     what is saved when a test fails
  report        the Markdown/JSON reproduction report
  breaks        deliberate breaks that must turn experiments red
  gate          the run as a CI gate: mode preflight, PASS/FAIL/NOT RUN per mode, exit codes
  upstream/     upstream Kubernetes' own Services e2e specs as results beside the experiments
                (build, specs, run, coverage, report; see harness/upstream/__init__.py)
  bench/        benchmarks apart from the suites (python -m harness.bench): scale
  plugin        pytest options, hooks and fixtures
  byo/          bring your own cluster (--kubeconfig): preflight and discovery, the
                before/after snapshot, and the foreign-kind-cluster test bed
"""
