// goproxy: the Go standard library's reverse proxy (net/http/httputil.ReverseProxy) doing aml-auth-proxy's job
// with a static token, as a peer in benches/load/run.sh. Standard library only; built with Debian's golang-go.
//
//	goproxy -listen 127.0.0.1:PORT -upstream http(s)://HOST:PORT -token-file FILE -access-log FILE
//	        [-ca-file CA.pem -server-name NAME] [-idle-conns N]
//
// Every request gets "Authorization: Bearer <token>" (the file's first line) and goes to the upstream over
// HTTP/1.1 with keep-alive (up to -idle-conns idle connections kept). An HTTPS upstream is verified against
// -ca-file with -server-name. One access line per request is written to -access-log with one write(2) per line,
// unbuffered, like nginx's access_log without buffer=. SIGTERM/SIGINT: exit 0.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// detached is a context that is never canceled but carries ctx's values. Go 1.19's Transport dials (and does the
// TLS handshake) with the context of the request that found no idle connection; when that request is served by a
// connection freed meanwhile and ends, the half-done dial is canceled and the work thrown away (golang/go#50984,
// golang/go#66442). Measured here with a TLS upstream at saturation: about one new upstream connection, and one
// wasted handshake, per request; the pool never fills. Dialing with a detached context lets every started dial finish and join the
// pool, which is what "keep upstream connections alive" needs (the dial still times out after 5 s).
type detached struct{ ctx context.Context }

func (detached) Deadline() (time.Time, bool)         { return time.Time{}, false }
func (detached) Done() <-chan struct{}               { return nil }
func (detached) Err() error                          { return nil }
func (d detached) Value(key interface{}) interface{} { return d.ctx.Value(key) }

// statusWriter remembers the status and body size for the access line.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush lets ReverseProxy stream (FlushInterval) through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	upstream := flag.String("upstream", "", "upstream base URL, http:// or https://")
	tokenFile := flag.String("token-file", "", "file whose first line is the bearer token")
	caFile := flag.String("ca-file", "", "PEM CA certificates trusted for an https upstream (instead of the system's)")
	serverName := flag.String("server-name", "", "name to verify the upstream certificate against (and SNI)")
	accessLog := flag.String("access-log", "", "access log file (appended)")
	idleConns := flag.Int("idle-conns", 1024, "idle upstream connections kept (MaxIdleConnsPerHost)")
	flag.Parse()
	if *upstream == "" || *tokenFile == "" || *accessLog == "" {
		log.Fatal("goproxy: -upstream, -token-file and -access-log are required")
	}
	target, err := url.Parse(*upstream)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		log.Fatalf("goproxy: bad -upstream %q", *upstream)
	}
	raw, err := os.ReadFile(*tokenFile)
	if err != nil {
		log.Fatalf("goproxy: %v", err)
	}
	token := strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0])
	if token == "" {
		log.Fatal("goproxy: empty token")
	}
	authorization := []string{"Bearer " + token}

	tlsConfig := &tls.Config{ServerName: *serverName}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatalf("goproxy: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("goproxy: no certificate in %s", *caFile)
		}
		tlsConfig.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialer.DialContext(detached{ctx}, network, addr)
	}
	transport := &http.Transport{
		DialContext: dial,
		// The TLS handshake too, with the detached context (and a 5 s limit).
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := tlsConfig.Clone()
			if cfg.ServerName == "" {
				cfg.ServerName, _, _ = net.SplitHostPort(addr)
			}
			conn := tls.Client(raw, cfg)
			hctx, cancel := context.WithTimeout(detached{ctx}, 5*time.Second)
			defer cancel()
			if err := conn.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, err
			}
			return conn, nil
		},
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        *idleConns,
		MaxIdleConnsPerHost: *idleConns,
		IdleConnTimeout:     75 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false, // HTTP/1.1 to the upstream, like the other proxies
	}

	logFile, err := os.OpenFile(*accessLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatalf("goproxy: %v", err)
	}

	proxy := httputil.NewSingleHostReverseProxy(target)
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		r.Header["Authorization"] = authorization
	}
	proxy.Transport = transport
	proxy.ErrorLog = log.New(os.Stderr, "goproxy: ", log.LstdFlags)

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		proxy.ServeHTTP(sw, r)
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		// One line, one write(2): time, client, request line, status, bytes, duration (µs).
		line := make([]byte, 0, 256)
		line = start.UTC().AppendFormat(line, time.RFC3339Nano)
		line = append(line, ' ')
		line = append(line, r.RemoteAddr...)
		line = append(line, ` "`...)
		line = append(line, r.Method...)
		line = append(line, ' ')
		line = append(line, r.RequestURI...)
		line = append(line, ' ')
		line = append(line, r.Proto...)
		line = append(line, `" `...)
		line = strconv.AppendInt(line, int64(sw.status), 10)
		line = append(line, ' ')
		line = strconv.AppendInt(line, sw.bytes, 10)
		line = append(line, ' ')
		line = strconv.AppendInt(line, time.Since(start).Microseconds(), 10)
		line = append(line, '\n')
		_, _ = logFile.Write(line)
	})

	server := &http.Server{
		Addr:              *listen,
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       75 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("goproxy: %v", err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		_ = logFile.Close()
		os.Exit(0)
	}()
	fmt.Fprintf(os.Stderr, "goproxy: listening on %s, upstream %s\n", ln.Addr(), target)
	if err := server.Serve(ln); err != nil {
		log.Fatalf("goproxy: %v", err)
	}
}
