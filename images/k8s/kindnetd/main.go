// kindnetd is a small stand-in for kind's default CNI daemon, built offline.
//
// On a kind cluster every node sits on one L2 Docker network, so pod
// networking needs only three things, which this daemon keeps in place:
//   - a CNI config on this node (ptp + host-local over the node's podCIDR),
//   - a route to every other node's podCIDR via that node's InternalIP,
//   - masquerading of pod traffic that leaves the pod network,
//   - an "unreachable" route for the whole pod subnet, so packets for a pod
//     that is gone stop at the node instead of heading for the default route,
//   - the Service range routed to an unused neighbour address, for the same reason.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const cniConfPath = "/etc/cni/net.d/10-kindnet.conflist"

const cniConfTemplate = `{
  "cniVersion": "0.4.0",
  "name": "kindnet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [{"dst": "0.0.0.0/0"}],
        "ranges": [[{"subnet": "%s"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func nodeIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && !strings.Contains(a.Address, ":") {
			return a.Address
		}
	}
	return ""
}

// ensureMasquerade sends pod traffic to non-pod destinations out with the
// node's address, like kind's ip-masq-agent: pod-to-pod keeps its source.
func ensureMasquerade(podSubnet string) error {
	const chain = "KINDNET-MASQ"
	_ = run("iptables", "-t", "nat", "-N", chain) // exists after the first pass
	if err := run("iptables", "-t", "nat", "-F", chain); err != nil {
		return err
	}
	if err := run("iptables", "-t", "nat", "-A", chain, "-d", podSubnet, "-j", "RETURN"); err != nil {
		return err
	}
	if err := run("iptables", "-t", "nat", "-A", chain, "-j", "MASQUERADE"); err != nil {
		return err
	}
	jump := []string{"POSTROUTING", "-s", podSubnet, "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", chain}
	if run("iptables", append([]string{"-t", "nat", "-C"}, jump...)...) != nil {
		return run("iptables", append([]string{"-t", "nat", "-A"}, jump...)...)
	}
	return nil
}

func syncOnce(ctx context.Context, cs kubernetes.Interface, self, podSubnet string) error {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	selfIP := ""
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.Name == self {
			selfIP = nodeIP(n)
		}
		if n.Spec.PodCIDR == "" {
			continue
		}
		if n.Name == self {
			want := fmt.Sprintf(cniConfTemplate, n.Spec.PodCIDR)
			if have, _ := os.ReadFile(cniConfPath); string(have) != want {
				if err := os.WriteFile(cniConfPath+".tmp", []byte(want), 0o644); err != nil {
					return err
				}
				if err := os.Rename(cniConfPath+".tmp", cniConfPath); err != nil {
					return err
				}
				log.Printf("wrote %s for podCIDR %s", cniConfPath, n.Spec.PodCIDR)
			}
			continue
		}
		if ip := nodeIP(n); ip != "" {
			if err := run("ip", "route", "replace", n.Spec.PodCIDR, "via", ip); err != nil {
				return err
			}
		}
	}
	// Traffic to a pod IP that no longer exists (a pod just deleted) must not
	// follow the default route out of the node: answer it with "unreachable".
	if err := run("ip", "route", "replace", "unreachable", podSubnet); err != nil {
		return err
	}
	if err := ensureServiceSink(os.Getenv("SERVICE_SUBNET"), selfIP); err != nil {
		return err
	}
	return ensureMasquerade(podSubnet)
}

// ensureServiceSink routes the Service range to an address on the node
// network that nobody holds. A packet kube-proxy did not DNAT (ICMP to a
// ClusterIP, or anything in the moment between two proxy modes) then dies
// unanswered on the local bridge instead of following the default route off
// the machine. A real route (not "unreachable"/"blackhole", which fail local
// connects before DNAT) keeps node-local connects to ClusterIPs working: the
// kernel re-routes them after kube-proxy's DNAT, and ipvs's local addresses
// win anyway. (No dummy device: not every kernel has the module.)
func ensureServiceSink(serviceSubnet, nodeIP string) error {
	if serviceSubnet == "" || nodeIP == "" {
		return nil
	}
	sink, err := unusedAddressNear(nodeIP)
	if err != nil {
		return err
	}
	return run("ip", "route", "replace", serviceSubnet, "via", sink)
}

// unusedAddressNear returns the last host address of the network that holds
// nodeIP (e.g. 172.18.255.254 for 172.18.0.3/16), which the harness keeps free.
func unusedAddressNear(nodeIP string) (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.String() != nodeIP || ipnet.IP.To4() == nil {
			continue
		}
		last := make(net.IP, 4)
		for i := range last {
			last[i] = ipnet.IP.To4()[i] | ^ipnet.Mask[len(ipnet.Mask)-4+i]
		}
		last[3]--
		return last.String(), nil
	}
	return "", fmt.Errorf("no interface holds %s", nodeIP)
}

func main() {
	self, podSubnet := os.Getenv("NODE_NAME"), os.Getenv("POD_SUBNET")
	if self == "" || podSubnet == "" {
		log.Fatal("NODE_NAME and POD_SUBNET must be set")
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		log.Fatalf("in-cluster config: %v", err)
	}
	// kind passes the API server's node address so pod networking does not
	// wait for kube-proxy to program the kubernetes Service.
	if ep := os.Getenv("CONTROL_PLANE_ENDPOINT"); ep != "" {
		cfg.Host = "https://" + ep
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	for {
		if err := syncOnce(ctx, cs, self, podSubnet); err != nil {
			log.Printf("sync: %v", err)
		}
		time.Sleep(5 * time.Second) // a poll loop keeps this daemon tiny; nodes join rarely
	}
}
