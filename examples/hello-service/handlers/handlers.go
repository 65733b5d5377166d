// Package handlers is the service's HTTP surface:
//
//	GET    /healthz          200 while the process is alive
//	GET    /readyz           200 once ready, 503 before that and while shutting down
//	GET    /v1/items         JSON array of keys
//	GET    /v1/items/{key}   the stored value, revision in the ETag header; 404 if absent
//	PUT    /v1/items/{key}   store the body (at most MaxValueBytes); 201 new, 200 replaced
//	DELETE /v1/items/{key}   204, or 404 if absent
//
// Routing uses net/http's method and wildcard patterns, so a wrong method
// gets 405 with an Allow header from the mux itself.
package handlers

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"example.com/hello/store"
)

// MaxValueBytes bounds a PUT body.
const MaxValueBytes = 1 << 20

// New returns the service's handler over s, reporting probes from h.
func New(s *store.Store, h *Health) http.Handler {
	api := &api{store: s}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", h.readyz)
	mux.HandleFunc("GET /v1/items", api.list)
	mux.HandleFunc("GET /v1/items/{key}", api.get)
	mux.HandleFunc("PUT /v1/items/{key}", api.put)
	mux.HandleFunc("DELETE /v1/items/{key}", api.delete)
	return mux
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (h *Health) readyz(w http.ResponseWriter, _ *http.Request) {
	code, reason := h.state()
	writeText(w, code, reason)
}

type api struct {
	store *store.Store
}

func (a *api) list(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(a.store.Keys())
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	it, err := a.store.Get(r.PathValue("key"))
	if errors.Is(err, store.ErrNotFound) {
		writeText(w, http.StatusNotFound, "not found")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", etag(it.Revision))
	w.Write(it.Value)
}

func (a *api) put(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxValueBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		writeText(w, http.StatusRequestEntityTooLarge, "value too large")
		return
	}
	if err != nil {
		writeText(w, http.StatusBadRequest, "bad body")
		return
	}
	rev, err := a.store.Put(r.PathValue("key"), body)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("ETag", etag(rev))
	code := http.StatusOK
	if rev == 1 {
		code = http.StatusCreated
	}
	writeText(w, code, "stored")
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	if err := a.store.Delete(r.PathValue("key")); err != nil {
		writeText(w, http.StatusNotFound, "not found")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Logged wraps next with one structured log line per request.
func Logged(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		logger.Info("request",
			"method", r.Method,
			"path", r.URL.Path,
			"status", rec.status,
			"duration", time.Since(start))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func etag(rev uint64) string {
	return strconv.Quote(strconv.FormatUint(rev, 10))
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
