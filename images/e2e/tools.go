//go:build tools

// Pins upstream's e2e suite, the ginkgo CLI that runs it in parallel, and agnhost
// (the image its pods run) into this module's build list. Built by
// harness/upstream/build.py: `go test -c k8s.io/kubernetes/test/e2e` and
// `go build` of the other two. Version: images/versions.env (KUBERNETES_VERSION).
package e2e

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/e2e/network"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
