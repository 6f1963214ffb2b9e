// Small static programs the harness ships in its own images: the demo app,
// the traffic probe and the pod sandbox "pause" process. Standard library only.
module harness.local/tools

go 1.24.0
