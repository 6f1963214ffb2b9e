package main

// First-packet timing: -connect IP:PORT times, for each of n new TCP connections, connect() until
// the SYN-ACK is in (connect_us) and, when -request is set, until the first byte of the answer
// (first_byte_us). Raw non-blocking sockets and poll(2) instead of Go's net package: no netpoller
// wake-up between the kernel's answer and the timestamp, so the resolution is that of the clock
// and two syscalls. Each socket is closed with a reset (SO_LINGER 0), so thousands of samples leave
// no TIME_WAIT sockets behind. One JSON record per sample:
//
//	{"i":0,"kind":"ok","connect_us":41.2,"first_byte_us":180.5,"error":""}

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

type timing struct {
	I           int     `json:"i"`
	Kind        string  `json:"kind"`
	ConnectUS   float64 `json:"connect_us"`
	FirstByteUS float64 `json:"first_byte_us,omitempty"`
	Error       string  `json:"error"`
}

type pollFd struct {
	fd      int32
	events  int16
	revents int16
}

const (
	pollIn  = 0x1
	pollOut = 0x4
)

// waitFor polls fd for events until they come or the deadline passes (EINTR: poll again).
func waitFor(fd int, events int16, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return syscall.ETIMEDOUT
		}
		p := pollFd{fd: int32(fd), events: events}
		ms := left.Milliseconds() + 1
		n, _, errno := syscall.Syscall(syscall.SYS_POLL, uintptr(unsafe.Pointer(&p)), 1, uintptr(ms))
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		if n == 1 {
			return nil
		}
	}
}

func kindOf(err error) string {
	switch err {
	case syscall.ECONNREFUSED:
		return "refused"
	case syscall.ECONNRESET:
		return "reset"
	case syscall.ETIMEDOUT:
		return "timeout"
	case syscall.EHOSTUNREACH, syscall.ENETUNREACH:
		return "unreachable"
	}
	return "other"
}

func connectOnce(addr *syscall.SockaddrInet4, timeout time.Duration, request []byte) timing {
	t := timing{Kind: "ok"}
	fail := func(err error) timing {
		t.Kind, t.Error = kindOf(err), err.Error()
		return t
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	defer syscall.Close(fd)
	syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	deadline := time.Now().Add(timeout)
	start := time.Now()
	err = syscall.Connect(fd, addr)
	if err != nil && err != syscall.EINPROGRESS {
		return fail(err)
	}
	if err == syscall.EINPROGRESS {
		if err := waitFor(fd, pollOut, deadline); err != nil {
			return fail(err)
		}
	}
	connected := time.Now()
	if soErr, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ERROR); err != nil || soErr != 0 {
		if err == nil {
			err = syscall.Errno(soErr)
		}
		return fail(err)
	}
	t.ConnectUS = float64(connected.Sub(start).Nanoseconds()) / 1000
	if len(request) == 0 {
		return t
	}
	if _, err := syscall.Write(fd, request); err != nil {
		return fail(err)
	}
	if err := waitFor(fd, pollIn, deadline); err != nil {
		return fail(err)
	}
	t.FirstByteUS = float64(time.Since(start).Nanoseconds()) / 1000
	buf := make([]byte, 1)
	if n, err := syscall.Read(fd, buf); n != 1 {
		if err == nil {
			err = syscall.ECONNRESET // closed without a byte
		}
		return fail(err)
	}
	return t
}

// runConnect is main's -connect mode; it returns the exit code.
func runConnect(target string, n int, timeout, maxDur, gap time.Duration, request string) int {
	host, portText, err := net.SplitHostPort(target)
	ip := net.ParseIP(host).To4()
	var port int
	if err == nil {
		_, err = fmt.Sscanf(portText, "%d", &port)
	}
	if err != nil || ip == nil || port < 1 || port > 65535 {
		fmt.Fprintf(os.Stderr, "svc-probe: -connect wants IPv4:PORT, got %q\n", target)
		return 2
	}
	addr := &syscall.SockaddrInet4{Port: port}
	copy(addr.Addr[:], ip)
	var req []byte
	if request != "" {
		req = []byte(fmt.Sprintf("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", request, host))
	}
	deadline := time.Now().Add(maxDur)
	enc := json.NewEncoder(os.Stdout)
	written := 0
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		t := connectOnce(addr, timeout, req)
		t.I = i
		enc.Encode(t)
		written++
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	writeEnd(enc, written)
	return 0
}
