package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"example.com/hello/internal/version"
)

func TestVersionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-version"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	if got, want := stdout.String(), version.String()+"\n"; got != want {
		t.Fatalf("stdout = %q, want %q", got, want)
	}
}

func TestBadFlag(t *testing.T) {
	if code := run([]string{"-no-such-flag"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
}

func TestListenFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stderr bytes.Buffer
	if code := run([]string{"-addr", ln.Addr().String()}, io.Discard, &stderr); code != 1 {
		t.Fatalf("exit code %d on a taken port, want 1", code)
	}
	if !strings.Contains(stderr.String(), "listen failed") {
		t.Fatalf("stderr %q lacks the listen error", stderr.String())
	}
}

// TestServeShutsDownGracefully serves on a real port, then cancels the
// context as a signal would, and checks serve returns cleanly and the port
// stops answering.
func TestServeShutsDownGracefully(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, slog.New(slog.NewTextHandler(io.Discard, nil)), 0, time.Second) }()

	client := &http.Client{Timeout: time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := client.Get(url + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if _, err := client.Get(url + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	cfg, err := configFromEnv(getenv)
	if err != nil || cfg.addr != ":8080" || cfg.delay != 0 || cfg.timeout != 10*time.Second {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	env["ADDR"], env["SHUTDOWN_DELAY"], env["SHUTDOWN_TIMEOUT"] = "127.0.0.1:9", "2s", "30s"
	cfg, err = configFromEnv(getenv)
	if err != nil || cfg.addr != "127.0.0.1:9" || cfg.delay != 2*time.Second || cfg.timeout != 30*time.Second {
		t.Fatalf("from the environment: %+v %v", cfg, err)
	}
	env["SHUTDOWN_TIMEOUT"] = "soon"
	if _, err := configFromEnv(getenv); err == nil || !strings.Contains(err.Error(), "SHUTDOWN_TIMEOUT") {
		t.Fatalf("a bad duration: %v", err)
	}
}
