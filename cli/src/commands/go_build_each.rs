//! `kiln go-build-each GO build FLAGS... [PLATFORM OUT PKG]...`: the go_binary builds
//! of several platforms in one sandbox.
//!
//! A go_binary's platforms that miss the cache run as one batch (see
//! `kiln_rules::go::binary`): their sources are staged once. The engine's batch file
//! (`KILN_BATCH`) says how many members there are; each brings its last three
//! arguments: the platform, the output and the main package. This command runs
//! `GO build FLAGS... -o OUT PKG` for each, one after another (go build uses every core
//! itself), with the platform's GOOS, GOARCH and pinned level, and prints one JSON line
//! per member (`kiln_rules::go::binary::EachResult`) for the engine to split.

use std::path::Path;
use std::process::{Command, ExitCode};

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
    let mut all_ok = true;
    for (i, member) in members.chunks(3).enumerate() {
        let [platform, out, pkg] = member else {
            unreachable!("chunks of three")
        };
        let mut cmd = Command::new(&common[0]);
        cmd.args(&common[1..]).args(["-o", out, pkg]);
        for (k, v) in kiln_rules::go::platform_env(platform) {
            cmd.env(k, v);
        }
        let done = cmd
            .output()
            .with_context(|| format!("failed to run {}", common[0]))?;
        let exit = done.status.code().unwrap_or(1);
        all_ok &= exit == 0;
        let mut output = String::from_utf8_lossy(&done.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&done.stderr));
        let line = EachResult {
            member: i,
            exit,
            output,
        };
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
