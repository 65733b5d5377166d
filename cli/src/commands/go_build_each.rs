//! `kiln go-build-each GO build FLAGS... [PLATFORM OUT PKG]...`: the go_binary builds
//! of several platforms in one sandbox.
//!
//! A go_binary's platforms that miss the cache run as one batch (see
//! `kiln_rules::go::binary`): their sources are staged once. The engine's batch file
//! (`KILN_BATCH`) says how many members there are; each brings its last three
//! arguments: the platform, the output and the main package. This command runs
//! `GO build FLAGS... -o OUT PKG` for each, as many at once as there are cores, with the
//! platform's GOOS, GOARCH and pinned level, and prints one JSON line per member
//! (`kiln_rules::go::binary::EachResult`) for the engine to split.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context as _, Result};
use kiln_engine::executor::{BatchFile, BATCH_ENV};
use kiln_rules::go::binary::EachResult;

pub fn run(args: &[String]) -> Result<ExitCode> {
    let file = std::env::var_os(BATCH_ENV)
        .filter(|f| !f.is_empty())
        .with_context(|| {
            format!("{BATCH_ENV} is not set: go-build-each runs inside a go_binary build")
        })?;
    let file = Path::new(&file);
    let text = std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let batch: BatchFile = serde_json::from_slice(&text)
        .with_context(|| format!("failed to read {}", file.display()))?;
    let own = 3 * batch.members.len();
    if args.len() < own + 1 {
        bail!("usage: kiln go-build-each GO build FLAGS... [PLATFORM OUT PKG]...");
    }
    let (common, members) = args.split_at(args.len() - own);
    // As many at once as there are cores: a link uses one, and kiln gave this batch one
    // worker where the platforms would have had one each.
    let width = std::thread::available_parallelism().map_or(2, |n| n.get());
    let members: Vec<&[String]> = members.chunks(3).collect();
    let mut all_ok = true;
    for (wave_no, wave) in members.chunks(width).enumerate() {
        let running: Vec<_> = wave
            .iter()
            .map(|member| spawn(common, member))
            .collect::<Result<_>>()?;
        for (k, child) in running.into_iter().enumerate() {
            let done = child.wait_with_output()?;
            let mut output = String::from_utf8_lossy(&done.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&done.stderr));
            let exit = done.status.code().unwrap_or(1);
            all_ok &= exit == 0;
            let line = EachResult {
                member: wave_no * width + k,
                exit,
                output,
            };
            println!("{}", serde_json::to_string(&line)?);
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `GO build FLAGS... -o OUT PKG` for one member (`PLATFORM OUT PKG`).
fn spawn(common: &[String], member: &[String]) -> Result<std::process::Child> {
    let [platform, out, pkg] = member else {
        bail!("a member brings three arguments");
    };
    let mut cmd = Command::new(&common[0]);
    cmd.args(&common[1..])
        .args(["-o", out, pkg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in kiln_rules::go::platform_env(platform) {
        cmd.env(k, v);
    }
    cmd.spawn()
        .with_context(|| format!("failed to run {}", common[0]))
}
