//! Plugins: shared libraries whose constructors register callbacks with
//! `registerCustomCallback`.

use std::ffi::{CStr, CString};
use std::path::Path;

use crate::error::{Error, Result};

/// Loads the shared library at `path` for the rest of the process's life (its constructors run
/// now and usually call `registerCustomCallback`).
///
/// The `uppercut` binary exports `registerCustomCallback` so a plugin links against it; a Rust
/// program that embeds the engine and loads plugins must export it too (for example with
/// `-Wl,--export-dynamic-symbol=registerCustomCallback`).
pub fn load_plugin(path: &Path) -> Result<()> {
    let plugin_error = |message: String| Error::Plugin {
        path: path.to_owned(),
        message,
    };
    let text = path
        .to_str()
        .ok_or_else(|| plugin_error("the path is not UTF-8".to_owned()))?;
    // A bare name would make dlopen search the library path; a plugin is a file.
    let text = if text.contains('/') {
        text.to_owned()
    } else {
        format!("./{text}")
    };
    let c = CString::new(text).map_err(|_| plugin_error("the path contains a NUL".to_owned()))?;
    // SAFETY: dlopen with a NUL-terminated path; the library's constructors run, which is what
    // loading a plugin means. The handle is never closed: callbacks may point into it.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a NUL-terminated message owned by libc.
        let message = unsafe {
            let e = libc::dlerror();
            if e.is_null() {
                "unknown error".to_owned()
            } else {
                CStr::from_ptr(e).to_string_lossy().into_owned()
            }
        };
        return Err(plugin_error(message));
    }
    Ok(())
}
