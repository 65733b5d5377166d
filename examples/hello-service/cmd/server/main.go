// Command server runs the hello service.
//
//	server [-addr :8080] [-shutdown-timeout 10s] [-version]
//
// On SIGTERM or SIGINT it marks itself not ready (so /readyz answers 503),
// stops accepting connections and waits up to -shutdown-timeout for
// in-flight requests with http.Server.Shutdown, then exits 0. Logs are
// structured (log/slog text) on stderr; the "listening" line carries the
// bound address, so `-addr 127.0.0.1:0` is usable by scripts and tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"example.com/hello/handlers"
	"example.com/hello/internal/version"
	"example.com/hello/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run parses args and serves until a signal arrives; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", ":8080", "address to listen on")
	timeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long to wait for in-flight requests on shutdown")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.String())
		return 0
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Error("listen failed", "addr", *addr, "err", err)
		return 1
	}
	if err := serve(ctx, ln, logger, *timeout); err != nil {
		logger.Error("server failed", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// serve answers requests on ln until ctx is done, then shuts down gracefully.
func serve(ctx context.Context, ln net.Listener, logger *slog.Logger, timeout time.Duration) error {
	health := handlers.NewHealth()
	srv := &http.Server{
		Handler:           handlers.Logged(logger, handlers.New(store.New(), health)),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	health.MarkReady()
	logger.Info("listening", "addr", ln.Addr().String(),
		"version", version.Version, "commit", version.Commit)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", timeout)
	health.MarkShuttingDown()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
