//! `kiln explain LABEL` (being written).

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::Cli;

pub fn run(_cli: &Cli, _label: &str) -> Result<ExitCode> {
    bail!("`kiln explain` is not implemented yet")
}
