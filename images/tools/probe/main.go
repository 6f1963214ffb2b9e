// svc-probe sends a bounded sample of requests in one process, so that a whole
// sample costs one `kubectl exec` / `docker exec` instead of one per request.
//
//	svc-probe -url http://10.96.0.10:80/ -n 300 -timeout 2s -concurrency 1
//
// Every request uses a new connection (as `curl` in a loop would, so each one
// goes through the Service's load-balancing decision again). It prints one
// JSON record per request on stdout, in request order:
//
//	{"i":0,"status":200,"server_name":"demoapp-7c..","client_ip":"10.244.1.1",
//	 "server_ip":"10.244.2.3","latency_ms":1.8,"kind":"ok","error":""}
//
// With -connect IP:PORT it times connection set-up in microseconds instead (connect.go).
//
// The last line is {"end":N} with N the number of records before it: `kubectl exec` can
// cut stdout short and still exit 0 (kubernetes/kubernetes#124571), so the reader
// needs to tell a whole answer from a truncated one.
//
// kind is one of ok, http (non-2xx), refused, timeout, reset, unreachable, other.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sync"
	"syscall"
	"time"
)

type record struct {
	I          int     `json:"i"`
	Status     int     `json:"status"`
	ServerName string  `json:"server_name"`
	ClientIP   string  `json:"client_ip"`
	ServerIP   string  `json:"server_ip"`
	LatencyMS  float64 `json:"latency_ms"`
	Kind       string  `json:"kind"`
	Error      string  `json:"error"`
}

// The demo app's text answers; the real ikubernetes/demoapp has no JSON endpoint.
var (
	fullRe = regexp.MustCompile(`ClientIP: ([^,]*), ServerName: ([^,]*), ServerIP: ([^!\s]*)!`)
	nameRe = regexp.MustCompile(`ServerName: (\S+)`)
)

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

func parseBody(rec *record, body []byte) {
	var j struct {
		ClientIP   string `json:"client_ip"`
		ServerName string `json:"server_name"`
		ServerIP   string `json:"server_ip"`
	}
	if json.Unmarshal(body, &j) == nil && j.ServerName != "" {
		rec.ClientIP, rec.ServerName, rec.ServerIP = j.ClientIP, j.ServerName, j.ServerIP
		return
	}
	if m := fullRe.FindSubmatch(body); m != nil {
		rec.ClientIP, rec.ServerName, rec.ServerIP = string(m[1]), string(m[2]), string(m[3])
		return
	}
	if m := nameRe.FindSubmatch(body); m != nil {
		rec.ServerName = string(m[1])
	}
}

// onceConn is a connection the request loop closes itself, once the answer is read, before it
// starts the next request: the transport alone closes it from a goroutine of its own, which a
// slow node may run after the next connect, so the previous connection would still count as
// active at the load balancer (ipvs's nq and sed schedulers pick by active connections).
type onceConn struct {
	net.Conn
	once sync.Once
	err  error
}

func (c *onceConn) Close() error {
	c.once.Do(func() { c.err = c.Conn.Close() })
	return c.err
}

// newClient makes a client whose connections are recorded in *last as they are made.
func newClient(timeout time.Duration, last **onceConn) *http.Client {
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		oc := &onceConn{Conn: c}
		*last = oc
		return oc, nil
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil, DialContext: dial}}
}

func main() {
	url := flag.String("url", "", "URL to request (this or -connect is required)")
	connect := flag.String("connect", "", "IPv4:PORT: time new connections instead (connect.go)")
	request := flag.String("request", "", "with -connect: also send GET <this path> and time the first byte")
	gap := flag.Duration("gap", 0, "with -connect: pause between samples")
	n := flag.Int("n", 1, "number of requests (at most 100000)")
	timeout := flag.Duration("timeout", 2*time.Second, "per-request timeout")
	conc := flag.Int("concurrency", 1, "requests in flight at once")
	maxDur := flag.Duration("max-duration", 120*time.Second, "stop starting requests after this long")
	flag.Parse()
	if *connect != "" && *n >= 1 && *n <= 100000 {
		os.Exit(runConnect(*connect, *n, *timeout, *maxDur, *gap, *request))
	}
	if *url == "" || *n < 1 || *n > 100000 || *conc < 1 {
		fmt.Fprintln(os.Stderr, "usage: svc-probe -url URL [-n N<=100000] [-timeout D] [-concurrency C] [-max-duration D]\n"+
			"       svc-probe -connect IP:PORT [-request PATH] [-n N<=100000] [-timeout D] [-gap D] [-max-duration D]")
		os.Exit(2)
	}

	deadline := time.Now().Add(*maxDur)
	recs := make([]*record, *n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last *onceConn // this worker's connection of the request in flight
			client := newClient(*timeout, &last)
			for i := range jobs {
				rec := &record{I: i, Kind: "ok"}
				start := time.Now()
				resp, err := client.Get(*url)
				if err == nil {
					body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					rec.Status = resp.StatusCode
					parseBody(rec, body)
					if rerr != nil {
						err = rerr
					} else if resp.StatusCode >= 300 {
						rec.Kind, rec.Error = "http", resp.Status
					}
				}
				if err != nil {
					rec.Kind, rec.Error = classify(err), err.Error()
				}
				rec.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
				if last != nil {
					last.Close()
					last = nil
				}
				recs[i] = rec
			}
		}()
	}
	sent := 0
	for i := 0; i < *n && time.Now().Before(deadline); i++ {
		jobs <- i
		sent++
	}
	close(jobs)
	wg.Wait()
	enc := json.NewEncoder(os.Stdout)
	for _, r := range recs[:sent] {
		enc.Encode(r)
	}
	writeEnd(enc, sent)
}

// writeEnd closes the output with the number of records written (see the package comment).
func writeEnd(enc *json.Encoder, records int) {
	enc.Encode(struct {
		End int `json:"end"`
	}{records})
}
