//! Prints the stack map of an object file as `llvm-readobj --stackmap` does, or looks up
//! return addresses in it.
//!
//! ```text
//! cargo run -p uppercut-stackmaps --example dump -- FILE.o              # readobj-style dump
//! cargo run -p uppercut-stackmaps --example dump -- FILE.o 0x28 0x83    # records and CFI there
//! ```
//!
//! In a relocatable object, addresses are offsets in the code section (as `objdump -d` shows).

use std::error::Error;
use std::process::ExitCode;

use uppercut_stackmaps::{EhFrameSection, ReturnAddress, StackMap};

fn parse_address(text: &str) -> Result<u64, Box<dyn Error>> {
    let value = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16)?,
        None => text.parse()?,
    };
    Ok(value)
}

fn run(args: &[String]) -> Result<(), Box<dyn Error>> {
    let [path, addresses @ ..] = args else {
        return Err("usage: dump FILE.o [RETURN_ADDRESS...]".into());
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if addresses.is_empty() {
        print!("{}", uppercut_stackmaps::dump_object_file(&bytes)?);
        return Ok(());
    }

    let map = StackMap::from_object(&bytes)?;
    let cfi = EhFrameSection::from_object(&bytes).ok();
    for text in addresses {
        let address = ReturnAddress(parse_address(text)?);
        let mut found = false;
        for record in map.lookup_all(address) {
            found = true;
            println!(
                "{address}: record #{} ID {} in function #{} at {:#x}",
                record.index().0,
                record.id(),
                record.function().index().0,
                record.function().address()
            );
            for (i, location) in record.locations().enumerate() {
                println!("  location {}: {location:?}", i + 1);
            }
            for live_out in record.live_outs() {
                println!("  live-out {} ({} bytes)", live_out.reg, live_out.size);
            }
        }
        if !found {
            println!("{address}: no record");
        }
        match cfi
            .as_ref()
            .map(|cfi| cfi.frame_info_for_return_address(address))
        {
            Some(Ok(frame)) => {
                println!("  CFA = {} + {}", frame.cfa.register, frame.cfa.offset);
                println!("  return address: {:?}", frame.return_address);
                for saved in frame.callee_saved {
                    println!("  {}: {:?}", saved.register, saved.rule);
                }
            }
            Some(Err(e)) => println!("  no CFI: {e}"),
            None => println!("  no .eh_frame"),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dump: {e}");
            ExitCode::FAILURE
        }
    }
}
