//! `kiln cache gc` and `kiln cache verify` (being written).

use std::process::ExitCode;

use anyhow::{bail, Result};

pub fn gc(_max_size: &str) -> Result<ExitCode> {
    bail!("`kiln cache gc` is not implemented yet")
}

pub fn verify() -> Result<ExitCode> {
    bail!("`kiln cache verify` is not implemented yet")
}
