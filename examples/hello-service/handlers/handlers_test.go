package handlers

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"example.com/hello/store"
)

// do sends one request to h and returns the recorded response.
func do(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	return rec
}

func expect(t *testing.T, rec *httptest.ResponseRecorder, code int, body string) {
	t.Helper()
	if rec.Code != code || rec.Body.String() != body {
		t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Body.String(), code, body)
	}
}

func TestHealthzAlways200(t *testing.T) {
	health := NewHealth()
	h := New(store.New(), health)
	expect(t, do(t, h, "GET", "/healthz", ""), 200, "ok\n")
	health.MarkShuttingDown()
	expect(t, do(t, h, "GET", "/healthz", ""), 200, "ok\n")
}

func TestReadyzLifecycle(t *testing.T) {
	health := NewHealth()
	h := New(store.New(), health)
	expect(t, do(t, h, "GET", "/readyz", ""), 503, "not ready\n")
	health.MarkReady()
	expect(t, do(t, h, "GET", "/readyz", ""), 200, "ready\n")
	health.MarkShuttingDown()
	expect(t, do(t, h, "GET", "/readyz", ""), 503, "shutting down\n")
	health.MarkReady()
	expect(t, do(t, h, "GET", "/readyz", ""), 503, "shutting down\n")
}

func TestItemsRoundTrip(t *testing.T) {
	h := New(store.New(), NewHealth())
	expect(t, do(t, h, "GET", "/v1/items/greeting", ""), 404, "not found\n")

	rec := do(t, h, "PUT", "/v1/items/greeting", "hello")
	expect(t, rec, 201, "stored\n")
	if got := rec.Header().Get("ETag"); got != `"1"` {
		t.Fatalf("ETag after first PUT = %s, want \"1\"", got)
	}
	expect(t, do(t, h, "PUT", "/v1/items/greeting", "hello, world"), 200, "stored\n")

	rec = do(t, h, "GET", "/v1/items/greeting", "")
	expect(t, rec, 200, "hello, world")
	if got := rec.Header().Get("ETag"); got != `"2"` {
		t.Fatalf("ETag after second PUT = %s, want \"2\"", got)
	}
}

func TestListAndDelete(t *testing.T) {
	s := store.New()
	s.Put("b", nil)
	s.Put("a", nil)
	h := New(s, NewHealth())

	var keys []string
	rec := do(t, h, "GET", "/v1/items", "")
	if err := json.Unmarshal(rec.Body.Bytes(), &keys); err != nil || !slices.Equal(keys, []string{"a", "b"}) {
		t.Fatalf("list = %q (err %v), want [a b]", rec.Body.String(), err)
	}
	expect(t, do(t, h, "DELETE", "/v1/items/a", ""), 204, "")
	expect(t, do(t, h, "DELETE", "/v1/items/a", ""), 404, "not found\n")
	if got := s.Keys(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("keys after delete = %v, want [b]", got)
	}
}

func TestPutTooLarge(t *testing.T) {
	s := store.New()
	h := New(s, NewHealth())
	expect(t, do(t, h, "PUT", "/v1/items/big", strings.Repeat("x", MaxValueBytes+1)), 413, "value too large\n")
	if s.Len() != 0 {
		t.Fatalf("oversized value was stored")
	}
}

func TestWrongMethod(t *testing.T) {
	rec := do(t, New(store.New(), NewHealth()), "POST", "/v1/items/k", "")
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST status = %d, want 405", rec.Code)
	}
}

// TestOverRealServer drives the handler through a real listener and client.
func TestOverRealServer(t *testing.T) {
	srv := httptest.NewServer(New(store.New(), NewHealth()))
	defer srv.Close()

	req, _ := http.NewRequest("PUT", srv.URL+"/v1/items/k", strings.NewReader("v"))
	resp, err := srv.Client().Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = srv.Client().Get(srv.URL + "/v1/items/k")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); string(body) != "v" {
		t.Fatalf("GET body = %q, want v", body)
	}
}

func TestLogged(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	h := Logged(logger, New(store.New(), NewHealth()))
	do(t, h, "GET", "/v1/items/missing", "")
	line := buf.String()
	for _, want := range []string{"method=GET", "path=/v1/items/missing", "status=404"} {
		if !strings.Contains(line, want) {
			t.Fatalf("log line %q lacks %q", line, want)
		}
	}
}
