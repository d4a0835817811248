//! Built-in callbacks: one for each use the design note names for hypercalls.
//!
//! | name | `args` points to | does | returns |
//! |---|---|---|---|
//! | `uppercut.recompile` | `struct { const char *function; long opt_level; }` | hot function replacement: a new version of `function` at `-O<opt_level>`, relinked | a status line |
//! | `uppercut.bind` | `struct { const char *name; void *address; }` | links `name` to `address` ([`Engine::bind`]) | a status line |
//! | `uppercut.code_info` | `const char *function`, or NULL for every unit | reports code placement and sizes | the report |
//! | `uppercut.print_frames` | ignored | debugging aid: prints the JIT frames on the stack to stderr | the frame count |
//!
//! Strings returned are NUL-terminated and stay valid until the next built-in hypercall on the
//! same thread.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt::Write as _;

use crate::engine::Engine;
use crate::error::Result;
use crate::hypercall::{CallbackError, Hypercall};
use crate::types::OptLevel;

/// `uppercut.recompile`.
pub const RECOMPILE: &str = "uppercut.recompile";
/// `uppercut.bind`.
pub const BIND: &str = "uppercut.bind";
/// `uppercut.code_info`.
pub const CODE_INFO: &str = "uppercut.code_info";
/// `uppercut.print_frames`.
pub const PRINT_FRAMES: &str = "uppercut.print_frames";

thread_local! {
    static REPLY: RefCell<CString> = RefCell::new(CString::default());
}

/// Keeps `text` for the guest and returns a pointer to it.
fn reply(text: String) -> *mut c_void {
    let text = CString::new(text.replace('\0', " ")).expect("NULs replaced");
    REPLY.with(|r| {
        *r.borrow_mut() = text;
        r.borrow().as_ptr() as *mut c_void
    })
}

/// Reads a guest C string.
///
/// # Safety
///
/// `p` must be null or point at a NUL-terminated string.
unsafe fn guest_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, CallbackError> {
    if p.is_null() {
        return Err(format!("{what} is NULL").into());
    }
    // SAFETY: as the caller vouches.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| format!("{what} is not UTF-8").into())
}

#[repr(C)]
struct RecompileArgs {
    function: *const c_char,
    opt_level: i64,
}

#[repr(C)]
struct BindArgs {
    name: *const c_char,
    address: *const c_void,
}

fn recompile(h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    let args = h.args().cast::<RecompileArgs>();
    if args.is_null() {
        return Err("uppercut.recompile needs a { const char *function; long opt_level; }".into());
    }
    // SAFETY: the guest passes a pointer to this struct, as the table above documents.
    let args = unsafe { &*args };
    // SAFETY: `function` is a guest C string.
    let function = unsafe { guest_str(args.function, "function") }?;
    let opt = u8::try_from(args.opt_level)
        .ok()
        .and_then(OptLevel::from_u8)
        .ok_or_else(|| format!("opt_level {} is not 0, 1, 2 or 3", args.opt_level))?;
    let done = h.engine().recompile(function, opt)?;
    Ok(reply(format!(
        "recompiled {} at {} as {} ({} bytes at {:#x}); {} older entr{} redirected",
        function,
        opt,
        done.version.id,
        done.version.size,
        done.version.entry,
        done.redirected,
        if done.redirected == 1 { "y" } else { "ies" },
    )))
}

fn bind(h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    let args = h.args().cast::<BindArgs>();
    if args.is_null() {
        return Err("uppercut.bind needs a { const char *name; void *address; }".into());
    }
    // SAFETY: the guest passes a pointer to this struct, as the table above documents.
    let args = unsafe { &*args };
    // SAFETY: `name` is a guest C string.
    let name = unsafe { guest_str(args.name, "name") }?;
    h.engine().bind(name, args.address as u64)?;
    Ok(reply(format!("bound {name} to {:p}", args.address)))
}

fn code_info(h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    let engine = h.engine();
    let name = h.args().cast::<c_char>();
    let mut out = String::new();
    if name.is_null() {
        for unit in engine.units() {
            let _ = write!(out, "{} {}:", unit.id, unit.name);
            for (address, size) in &unit.code {
                let _ = write!(out, " code {size}@{address:#x}");
            }
            for (section, address, size) in &unit.data {
                let _ = write!(out, " {section} {size}@{address:#x}");
            }
            out.push('\n');
        }
        let stats = engine.arena().stats();
        let _ = writeln!(
            out,
            "arena: {} bytes reserved, {} committed, {} live regions",
            stats.reserved_bytes, stats.committed_bytes, stats.live_regions
        );
    } else {
        // SAFETY: the guest passes a C string (or NULL, handled above).
        let function = unsafe { guest_str(name, "function") }?;
        let versions = engine.versions(function);
        if versions.is_empty() {
            return Err(format!("no function named `{function}` has been compiled").into());
        }
        for v in versions {
            let _ = writeln!(
                out,
                "{} {} {} entry={:#x} size={} {}",
                v.function, v.id, v.opt_level, v.entry, v.size, v.unit
            );
        }
    }
    Ok(reply(out))
}

fn print_frames(h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    let frames = h.engine().jit_frames();
    let mut out = String::new();
    for (i, f) in frames.iter().enumerate() {
        let _ = writeln!(
            out,
            "#{i} {} {} return={:#x} fp={:#x}",
            f.version.label(),
            f.version.id,
            f.return_address,
            f.frame_pointer
        );
    }
    eprint!("{out}");
    Ok(frames.len() as *mut c_void)
}

/// Registers the built-in callbacks on `engine`.
pub(crate) fn install(engine: &Engine) -> Result<()> {
    engine.register_callback(RECOMPILE, recompile)?;
    engine.register_callback(BIND, bind)?;
    engine.register_callback(CODE_INFO, code_info)?;
    engine.register_callback(PRINT_FRAMES, print_frames)?;
    Ok(())
}
