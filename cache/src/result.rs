//! What an action produced, as stored in the action cache.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// One output file of an action: its path relative to the sandbox root, its content
/// digest and size, and whether it is executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

/// The result of a successful action. Failures are never cached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    pub outputs: Vec<OutputFile>,
    pub exit_code: i32,
    pub stdout: Digest,
    pub stderr: Digest,
    /// How long the action took to execute, in milliseconds (information only).
    #[serde(default)]
    pub duration_ms: u64,
}

impl ActionResult {
    /// Every blob this result refers to.
    pub fn blobs(&self) -> impl Iterator<Item = Digest> + '_ {
        self.outputs
            .iter()
            .map(|o| o.digest)
            .chain([self.stdout, self.stderr])
    }

    pub fn output(&self, path: &str) -> Option<&OutputFile> {
        self.outputs.iter().find(|o| o.path == path)
    }
}
