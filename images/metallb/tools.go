//go:build tools

// Pins MetalLB's controller and speaker into this module (version: images/versions.env METALLB_VERSION).
package metallb

import (
	_ "go.universe.tf/metallb/controller"
	_ "go.universe.tf/metallb/speaker"
)
