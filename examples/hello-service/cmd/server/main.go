// Command server runs the hello service.
//
//	server [-addr :8080] [-shutdown-delay 0s] [-shutdown-timeout 10s] [-version]
//
// Each flag's default comes from the environment when set there: ADDR,
// SHUTDOWN_DELAY, SHUTDOWN_TIMEOUT (a duration such as 5s); a value that does
// not parse is an error (exit 2), never silently the default.
//
// On SIGTERM or SIGINT it marks itself not ready (so /readyz answers 503),
// keeps serving for -shutdown-delay (time for load balancers to see the
// probe fail), then stops accepting connections and waits up to
// -shutdown-timeout for in-flight requests with http.Server.Shutdown, then
// exits 0. Logs are
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
	cfg, err := configFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "server:", err)
		return 2
	}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", cfg.addr, "address to listen on (env ADDR)")
	delay := fs.Duration("shutdown-delay", cfg.delay, "how long to keep serving, not ready, after a signal (env SHUTDOWN_DELAY)")
	timeout := fs.Duration("shutdown-timeout", cfg.timeout, "how long to wait for in-flight requests on shutdown (env SHUTDOWN_TIMEOUT)")
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
	if err := serve(ctx, ln, logger, *delay, *timeout); err != nil {
		logger.Error("server failed", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// config is what the environment sets, with defaults for what it does not.
type config struct {
	addr           string
	delay, timeout time.Duration
}

// configFromEnv reads ADDR, SHUTDOWN_DELAY and SHUTDOWN_TIMEOUT through getenv.
func configFromEnv(getenv func(string) string) (config, error) {
	cfg := config{addr: ":8080", delay: 0, timeout: 10 * time.Second}
	if v := getenv("ADDR"); v != "" {
		cfg.addr = v
	}
	for _, d := range []struct {
		name string
		to   *time.Duration
	}{{"SHUTDOWN_DELAY", &cfg.delay}, {"SHUTDOWN_TIMEOUT", &cfg.timeout}} {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		parsed, err := time.ParseDuration(v)
		if err != nil || parsed < 0 {
			return cfg, fmt.Errorf("%s=%q is not a duration such as 5s", d.name, v)
		}
		*d.to = parsed
	}
	return cfg, nil
}

// serve answers requests on ln until ctx is done, then shuts down gracefully:
// not ready at once, still serving for delay, then draining for up to timeout.
func serve(ctx context.Context, ln net.Listener, logger *slog.Logger, delay, timeout time.Duration) error {
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
	logger.Info("shutting down", "delay", delay, "timeout", timeout)
	health.MarkShuttingDown()
	time.Sleep(delay)
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
