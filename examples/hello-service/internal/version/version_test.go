package version

import "testing"

func TestStringDefaults(t *testing.T) {
	if got, want := String(), "hello dev (commit none)"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func TestStringStamped(t *testing.T) {
	oldVersion, oldCommit := Version, Commit
	t.Cleanup(func() { Version, Commit = oldVersion, oldCommit })
	Version, Commit = "v1.2.3", "abc123"
	if got, want := String(), "hello v1.2.3 (commit abc123)"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}
