//! The process groups of running actions, so that all of them can be ended at once
//! (when kiln is interrupted) and each ends whole when its first process exits.
//!
//! Every action's process starts a group of its own (`process_group(0)`). When it exits,
//! [`Running::kill_group`] kills what is left of the group: background processes it
//! started (`sleep 999 &`) end with it, before its outputs are hashed. Under bubblewrap
//! the PID namespace does that already (and catches processes that left the group);
//! in `dir` mode a process that starts a session of its own escapes, as documented.

use std::collections::HashSet;
use std::sync::Mutex;

static GROUPS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// A running action's process group, registered until it is dropped.
pub struct Running(u32);

impl Running {
    pub fn register(pid: u32) -> Running {
        GROUPS
            .lock()
            .unwrap()
            .get_or_insert_with(HashSet::new)
            .insert(pid);
        Running(pid)
    }

    /// Kills every process left in the group.
    pub fn kill_group(&self) {
        kill(self.0);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(set) = GROUPS.lock().unwrap().as_mut() {
            set.remove(&self.0);
        }
    }
}

fn kill(group: u32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is touched.
    unsafe {
        libc::kill(-(group as i32), libc::SIGKILL);
    }
}

/// Kills the process group of every running action (kiln is being interrupted).
pub fn kill_all() {
    let groups: Vec<u32> = GROUPS
        .lock()
        .unwrap()
        .as_ref()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    for group in groups {
        kill(group);
    }
}
