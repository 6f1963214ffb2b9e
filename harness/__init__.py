"""Integration-test harness for Kubernetes Services on real kind clusters.

Module map (one concern each):
  runner        the single seam for running commands (kind, docker, kubectl), docker SDK calls
                (Runner.engine) and host-side HTTP
  progress      live progress of long steps, also from xdist workers (shown by the controller)
  config        defaults, pinned versions, paths
  owners        who owns what the harness leaves on the machine (pid + start time), machine-wide leases
  engine/       (sub-package) Docker engines that run kind nodes: engine.choose picks one per mode
                (the only place that decides host or guest); base: Engine, HostEngine, the kind
                network, IPVS preflight, the host's egress guard
  guest/        (sub-package) an engine with IPVS: Docker in a user-mode-Linux guest
                (build: kernel + rootfs; vm: boot/TLS/images/shutdown; engine: GuestEngine with
                leases; mconsole)
  images        offline image build (node image, workload images)
  cluster       kind cluster lifecycle (create/reuse/delete, ownership markers, name claims, xdist lock)
  assembly      one way to assemble a cluster: engine -> kind create -> images -> load balancer -> breaks
  kube          Kubernetes API helpers (apply, scale, patch, read objects)
  peers         vantage points: client pod, node, external client
  probe         traffic samples (one exec per sample) and their records
  waits         polling waits that explain themselves on timeout
  stats         judging samples: coverage, uniformity, round-robin
  expectations  expected outcomes as data, per experiment/vantage/mode
  modes         proxy-mode inspection and data-plane dumps
  artifacts     what is saved when a test fails
  report        the Markdown/JSON reproduction report
  migration     report section "Moving from ipvs to nftables": what the two modes observed differently
  breaks        deliberate breaks that must turn experiments red
  gate          the run as a CI gate: mode preflight, PASS/FAIL/NOT RUN per mode, exit codes
  releases      several Kubernetes releases in one command (--kubernetes-version=1.36,1.37): a run
                per release, one release x mode report
  upstream/     upstream Kubernetes' own Services e2e specs as results beside the experiments
                (build, specs, run, coverage, report; see harness/upstream/__init__.py)
  bench/        benchmarks apart from the suites (python -m harness.bench): scale
  faults/       fault injection (python -m harness.faults): what a signal leaves, how clean recovers
  session       a run's clusters: acquire once per run (runstate.run_once), the end of a run, SIGTERM
  plugin        pytest options, hooks and fixtures
  runstate      what one pytest run keeps between its hooks (config.stash) and across its workers (run_once)
  byo/          bring your own cluster (--byo-kubeconfig): preflight and discovery, attaching a run
                and accounting for it, the before/after snapshot, the foreign-kind-cluster test bed
"""
