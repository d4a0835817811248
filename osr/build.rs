//! Exports the plugin ABI from the `uppercut` binary, so that a plugin loaded with `--load`
//! links its `registerCustomCallback` calls against the engine.

fn main() {
    let symbol = "registerCustomCallback";
    println!("cargo:rustc-link-arg-bin=uppercut=-Wl,--undefined={symbol}");
    println!("cargo:rustc-link-arg-bin=uppercut=-Wl,--export-dynamic-symbol={symbol}");
}
