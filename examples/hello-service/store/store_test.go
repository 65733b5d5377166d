package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

func TestPutGet(t *testing.T) {
	s := New()
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on empty store: err = %v, want ErrNotFound", err)
	}
	for want := uint64(1); want <= 3; want++ {
		rev, err := s.Put("a", []byte(fmt.Sprint(want)))
		if err != nil || rev != want {
			t.Fatalf("Put #%d = (%d, %v), want (%d, nil)", want, rev, err, want)
		}
	}
	it, err := s.Get("a")
	if err != nil || string(it.Value) != "3" || it.Revision != 3 {
		t.Fatalf("Get = (%+v, %v), want value 3 at revision 3", it, err)
	}
}

func TestPutEmptyKey(t *testing.T) {
	if _, err := New().Put("", []byte("x")); !errors.Is(err, ErrEmptyKey) {
		t.Fatalf("Put(\"\") err = %v, want ErrEmptyKey", err)
	}
}

func TestValuesAreCopied(t *testing.T) {
	s := New()
	in := []byte("abc")
	s.Put("k", in)
	in[0] = 'X'
	out, _ := s.Get("k")
	out.Value[1] = 'Y'
	again, _ := s.Get("k")
	if string(again.Value) != "abc" {
		t.Fatalf("stored value changed through caller slices: %q", again.Value)
	}
}

func TestDeleteAndKeys(t *testing.T) {
	s := New()
	for _, k := range []string{"c", "a", "b"} {
		s.Put(k, nil)
	}
	if err := s.Delete("b"); err != nil {
		t.Fatalf("Delete(b) = %v", err)
	}
	if err := s.Delete("b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete(b) = %v, want ErrNotFound", err)
	}
	if got := s.Keys(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("Keys() = %v, want [a c]", got)
	}
	if s.Len() != 2 {
		t.Fatalf("Len() = %d, want 2", s.Len())
	}
}

// TestConcurrentPuts runs writers and readers at once; with -race it proves
// the store's locking, and the final revision proves no write was lost.
func TestConcurrentPuts(t *testing.T) {
	s := New()
	const writers, writes = 8, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range writes {
				s.Put("shared", []byte(fmt.Sprint(w, i)))
			}
		}()
		go func() {
			defer wg.Done()
			for range writes {
				s.Get("shared")
				s.Keys()
			}
		}()
	}
	wg.Wait()
	it, err := s.Get("shared")
	if err != nil || it.Revision != writers*writes {
		t.Fatalf("final revision = %d (err %v), want %d", it.Revision, err, writers*writes)
	}
}
