// Package store is a concurrency-safe in-memory key/value store.
//
// Values are byte slices; the store copies them on the way in and on the way
// out, so a caller can never mutate what another goroutine reads. Every Put
// bumps a per-key revision, which handlers expose as an ETag-like header.
package store

import (
	"errors"
	"sort"
	"sync"
)

// ErrNotFound is returned by Get and Delete for a key the store does not hold.
var ErrNotFound = errors.New("key not found")

// ErrEmptyKey is returned by Put for the empty key.
var ErrEmptyKey = errors.New("empty key")

// Item is one stored value and the number of times its key has been written.
type Item struct {
	Value    []byte
	Revision uint64
}

// Store is safe for concurrent use. The zero value is not usable; call New.
type Store struct {
	mu    sync.RWMutex
	items map[string]Item
}

// New returns an empty store.
func New() *Store {
	return &Store{items: make(map[string]Item)}
}

// Get returns a copy of the item stored under key.
func (s *Store) Get(key string) (Item, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items[key]
	if !ok {
		return Item{}, ErrNotFound
	}
	return Item{Value: clone(it.Value), Revision: it.Revision}, nil
}

// Put stores a copy of value under key and returns the key's new revision.
func (s *Store) Put(key string, value []byte) (uint64, error) {
	if key == "" {
		return 0, ErrEmptyKey
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rev := s.items[key].Revision + 1
	s.items[key] = Item{Value: clone(value), Revision: rev}
	return rev, nil
}

// Delete removes key.
func (s *Store) Delete(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.items[key]; !ok {
		return ErrNotFound
	}
	delete(s.items, key)
	return nil
}

// Keys returns every key, sorted.
func (s *Store) Keys() []string {
	s.mu.RLock()
	keys := make([]string, 0, len(s.items))
	for k := range s.items {
		keys = append(keys, k)
	}
	s.mu.RUnlock()
	sort.Strings(keys)
	return keys
}

// Len returns the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.items)
}

func clone(b []byte) []byte {
	return append([]byte(nil), b...)
}
