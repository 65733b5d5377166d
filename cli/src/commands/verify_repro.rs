//! `kiln verify-repro LABEL...` (being written).

use std::process::ExitCode;

use anyhow::{bail, Result};

use crate::Cli;

pub fn run(_cli: &Cli, _labels: &[String]) -> Result<ExitCode> {
    bail!("`kiln verify-repro` is not implemented yet")
}
