//! The `kiln-launch` binary is copied into every remote action's input root: linked
//! without debug info (std's included), it is a few hundred KB instead of several MB.
fn main() {
    println!("cargo:rustc-link-arg-bin=kiln-launch=-Wl,--strip-all");
}
