//! `kiln-launch`: starts a remote action's process in the worker's input root (see
//! [`kiln_launch::run`]). The Command kiln gives an engine for every remote action.

fn main() {
    let e = kiln_launch::run();
    eprintln!("kiln-launch: error: {e}");
    // As a shell says a command could not be run.
    std::process::exit(127);
}
