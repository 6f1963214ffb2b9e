//go:build tools

// Pins crictl (built as sigs.k8s.io/cri-tools/cmd/crictl) into this module.
package crictl

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
