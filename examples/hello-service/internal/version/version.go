// Package version holds the build's identity. kiln stamps both variables at
// link time through its go_binary x_defs:
//
//	-X example.com/hello/internal/version.Version=v0.1.0
//	-X example.com/hello/internal/version.Commit=1a2b3c4
//
// They are plain string variables (not constants) because -X can only set
// package-level string variables.
package version

// Version is the release version, e.g. the output of `git describe`.
var Version = "dev"

// Commit is the source commit the binary was built from.
var Commit = "none"

// String reports the version and commit on one line, as `server -version`
// prints it: "hello v0.1.0 (commit 1a2b3c4)".
func String() string {
	return "hello " + Version + " (commit " + Commit + ")"
}
