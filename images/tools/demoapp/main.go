// demoapp serves the HTTP contract of ikubernetes/demoapp:v1.0, which the
// Services article uses as its backend:
//
//	GET /          iKubernetes demoapp v1.0 !! ClientIP: <peer>, ServerName: <pod>, ServerIP: <pod ip>!
//	GET /hostname  ServerName: <pod>
//	GET /json      the same facts as JSON, for parsing
//	GET /livez, /readyz  health
//
// Access log lines start with the client IP, as the article's pod logs show.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

func podIP() string {
	if ip := os.Getenv("POD_IP"); ip != "" {
		return ip
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return "unknown"
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func accessLog(next http.Handler) http.Handler {
	logger := log.New(os.Stdout, "", 0)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: 200}
		next.ServeHTTP(sw, r)
		logger.Printf("%s - - [%s] \"%s %s %s\" %d -", clientIP(r),
			time.Now().Format("02/Jan/2006 15:04:05"), r.Method, r.URL.Path, r.Proto, sw.status)
	})
}

func main() {
	port := flag.String("port", envOr("PORT", "80"), "listen port")
	flag.Parse()
	name, _ := os.Hostname()
	ip := podIP()

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "iKubernetes demoapp v1.0 !! ClientIP: %s, ServerName: %s, ServerIP: %s!\n", clientIP(r), name, ip)
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ServerName: %s\n", name)
	})
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"client_ip": clientIP(r), "server_name": name, "server_ip": ip, "version": "v1.0",
		})
	})
	health := func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "OK") }
	mux.HandleFunc("/livez", health)
	mux.HandleFunc("/readyz", health)

	srv := &http.Server{Addr: ":" + *port, Handler: accessLog(mux), ReadHeaderTimeout: 5 * time.Second}
	log.Printf("demoapp listening on :%s as %s (%s)", *port, name, ip)
	log.Fatal(srv.ListenAndServe())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
