//! Looking up and storing actions that discover their inputs as they run
//! ([`crate::action::Reads`]): `K1` holds the read set of the last run, `K2` (the key
//! record extended by the state of each read) the result. See [`crate::reads`].

use kiln_cache::{ActionResult, Digest, KeyOutcome};

use super::{Executor, Failure, Ran};
use crate::action::{Action, ActionKind, Reads};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{KeyInput, KeyRecord};
use crate::reads::{self, Read};
use crate::sandbox::{is_volatile, Sandbox};

/// What an action with reads read in its run.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub set: Vec<Read>,
    /// The state of each read, as it extends the key record.
    pub inputs: Vec<KeyInput>,
    /// False when the process left no usable log (it did not get as far as writing
    /// one): then what it read is unknown and its result is not cached.
    pub complete: bool,
}

/// A cache hit: the result, whether it came from a remote, and the key it was found
/// under with its record (`K2` for an action with reads).
#[derive(Debug, Clone)]
pub struct Found {
    pub result: ActionResult,
    pub remote: bool,
    pub key: Digest,
    pub record: KeyRecord,
}

fn reads_of(action: &Action) -> Option<&Reads> {
    match &action.kind {
        ActionKind::Exec(spec) => spec.reads.as_ref(),
        ActionKind::Builtin(_) => None,
    }
}

/// The key record extended by what was read.
fn extended(record: &KeyRecord, inputs: &[KeyInput]) -> KeyRecord {
    KeyRecord {
        discovered: Some(inputs.to_vec()),
        ..record.clone()
    }
}

impl Executor {
    /// Looks an action up under its key `key` (whose record is `record`); for an action
    /// with reads, through the read set stored under it.
    pub fn lookup(
        &self,
        action: &Action,
        key: &Digest,
        record: &KeyRecord,
    ) -> Result<Option<Found>> {
        let found = |(result, remote), key: Digest, record: KeyRecord| Found {
            result,
            remote,
            key,
            record,
        };
        let valid = |r: &ActionResult| action.check_result(r);
        if reads_of(action).is_none() {
            let hit = self.store.lookup_checked(key, &valid)?;
            return Ok(hit.map(|first| found(first, *key, record.clone())));
        }
        // The first level holds a read set: no outputs, the set as its stdout.
        let index = |r: &ActionResult| match r.outputs.is_empty() && r.exit_code == 0 {
            true => Ok(()),
            false => Err("a read set with outputs".to_string()),
        };
        let Some(first) = self.store.lookup_checked(key, &index)? else {
            return Ok(None);
        };
        let (index, remote) = first;
        let Some(set) = self
            .store
            .read(&index.stdout)?
            .and_then(|b| reads::decode(&b))
        else {
            return Ok(None);
        };
        let env = self.volatile_env(action);
        let Ok(inputs) = reads::states(&set, &self.root, self.local.file_states(), &env, None)
        else {
            return Ok(None);
        };
        let record = extended(record, &inputs);
        let key = record.digest();
        Ok(self
            .store
            .lookup_checked(&key, &valid)?
            .map(|(result, r)| found((result, r || remote), key, record)))
    }

    /// Stores what an action that ran successfully gave, under its key (`K1` with the
    /// read set and `K2` with the result, for an action with reads), and notes the key
    /// for `kiln explain`.
    pub fn store_ran(
        &self,
        action: &Action,
        key: &Digest,
        record: &KeyRecord,
        ran: &Ran,
    ) -> Result<()> {
        // Results of unisolated runs stay on this machine.
        let store: &dyn kiln_cache::Store = match record.unisolated {
            true => self.local.as_ref(),
            false => self.store.as_ref(),
        };
        let Some(reads) = &ran.reads else {
            store.put_action(key, &ran.result)?;
            self.note_key(action, key, record, KeyOutcome::Executed);
            return Ok(());
        };
        if !reads.complete {
            // What it read is unknown: nothing can say when this result holds.
            self.note_key(action, key, record, KeyOutcome::NotKept);
            return Ok(());
        }
        let record = extended(record, &reads.inputs);
        let final_key = record.digest();
        let index = ActionResult {
            outputs: Vec::new(),
            exit_code: 0,
            stdout: store.put_bytes(&reads::encode(&reads.set))?,
            stderr: store.put_bytes(b"")?,
            duration_ms: 0,
        };
        // The result first: a read set is only ever found with its result in place.
        store.put_action(&final_key, &ran.result)?;
        store.put_action(key, &index)?;
        self.note_key(action, &final_key, &record, KeyOutcome::Executed);
        Ok(())
    }

    /// Notes a failed action's key for `kiln explain` (`K2` when its reads are known).
    pub fn note_failure(
        &self,
        action: &Action,
        key: &Digest,
        record: &KeyRecord,
        failure: &Failure,
    ) {
        match &failure.reads {
            Some(reads) if reads.complete => {
                let record = extended(record, &reads.inputs);
                self.note_key(action, &record.digest(), &record, KeyOutcome::Failed);
            }
            _ => self.note_key(action, key, record, KeyOutcome::Failed),
        }
    }

    /// What an action with reads read in the run that just ended in `sandbox`, which
    /// started at `since` (ns since the epoch). A path below the readable directory that
    /// changed since then fails the action: its result would be keyed by a state the
    /// process may not have seen.
    pub(super) fn discover(
        &self,
        action: &Action,
        sandbox: &Sandbox,
        since: i64,
    ) -> Result<Option<Discovered>> {
        let (ActionKind::Exec(spec), Some(reads)) = (&action.kind, reads_of(action)) else {
            return Ok(None);
        };
        // Its own file, not a link the process left there to a file of the host.
        let own = crate::sandbox::lstat_beneath(sandbox.root(), &reads.log)
            .is_ok_and(|meta| meta.is_some_and(|m| m.is_file()));
        let log = match own {
            true => std::fs::read(sandbox.root().join(&reads.log)).unwrap_or_default(),
            false => Vec::new(),
        };
        let Ok(entries) = reads.parse.entries(&log) else {
            return Ok(Some(Discovered {
                set: Vec::new(),
                inputs: Vec::new(),
                complete: false,
            }));
        };
        let mode = self.sandbox_mode()?;
        let root = sandbox.seen_root(mode);
        let volatile = |name: &str| spec.env.get(name).is_some_and(|v| is_volatile(v));
        let set = reads::resolve(&entries, reads, &root, &spec.workdir, volatile);
        let env = self.volatile_env(action);
        let states = reads::states(
            &set,
            &self.root,
            self.local.file_states(),
            &env,
            Some(since),
        );
        let inputs = states.map_err(|changed| {
            Error::new(
                ErrorKind::Action,
                format!(
                    "{}: {} changed during the build; run it again",
                    action.describe(),
                    changed.0
                ),
            )
        })?;
        Ok(Some(Discovered {
            set,
            inputs,
            complete: true,
        }))
    }

    /// The values of an action's environment variables that are not in its key.
    fn volatile_env(&self, action: &Action) -> std::collections::BTreeMap<String, String> {
        let ActionKind::Exec(spec) = &action.kind else {
            return Default::default();
        };
        spec.env
            .iter()
            .filter(|(_, v)| is_volatile(v))
            .map(|(k, v)| (k.clone(), crate::sandbox::expand_volatile(v)))
            .collect()
    }
}
