"""An engine with IPVS: Docker inside a user-mode-Linux (UML) guest.

This host's kernel has no IPVS and cannot load modules, so kube-proxy's ipvs
mode runs against a Docker engine inside a UML guest whose kernel we build.

  build     offline, cached-by-input-hash build of the UML kernel and the
            guest root filesystem (`python -m harness.guest build`)
  vm        the guest's lifecycle as timed steps: link + egress guard, boot,
            dockerd readiness, image load, clean shutdown
  mconsole  UML's management console protocol (clean halt without a shell)
"""
