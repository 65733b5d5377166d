//! What `strip` and `upx` share: one action per platform that runs one host tool over
//! one input file and writes one output file, keeping the input's platform.

use kiln_engine::action::{Action, ActionKind, Artifact, ExecSpec, Tool};
use kiln_engine::workspace::TargetDecl;

/// `argv` runs `tool` over `input` (both already in `argv`), writing `out`.
pub fn file_transform(
    target: &TargetDecl,
    mnemonic: &str,
    tool: &Tool,
    argv: Vec<String>,
    input: Artifact,
    out: &str,
) -> Action {
    Action {
        owner: target.label.clone(),
        mnemonic: mnemonic.into(),
        discriminator: input.platform.clone().unwrap_or_default(),
        platform: input.platform.clone(),
        inputs: vec![input],
        outputs: vec![out.to_string()],
        kind: ActionKind::Exec(ExecSpec {
            argv,
            tools: vec![tool.clone()],
            ..ExecSpec::default()
        }),
        show_output: false,
    }
}
