//! ONNX Runtime's shared library and the process's one environment on it. `ort` is built with
//! `load-dynamic`: nothing of ONNX Runtime is linked, the library (from the `onnxruntime` or
//! `onnxruntime-gpu` wheel) is found and loaded the first time one of its providers is used.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, ProviderFix, Result};

/// File names ONNX Runtime's shared library has on Linux, macOS and Windows.
fn is_library_name(name: &str) -> bool {
    name.starts_with("libonnxruntime.so.") || name == "libonnxruntime.dylib" || name == "onnxruntime.dll"
}

/// The library to load: `explicit`, else `ORT_DYLIB_PATH`, else the first found in `.ort/` under
/// the working directory or beside the executable (up to four levels up); else why there is none.
fn library(explicit: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = vec![PathBuf::from(".ort")];
    if let Ok(exe) = std::env::current_exe() {
        for a in exe.ancestors().skip(1).take(4) {
            dirs.push(a.join(".ort"));
        }
    }
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if is_library_name(&e.file_name().to_string_lossy()) {
                    return Ok(e.path());
                }
            }
        }
    }
    Err("no ONNX Runtime shared library found".into())
}

static ORT_ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Why the process's ONNX Runtime environment could not be created, if it could not (creating it
/// on first use, from `library`).
pub(crate) fn load_error(library: Option<&Path>) -> Option<String> {
    environment(library).err().map(|e| match e {
        Error::ProviderUnavailable { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// The process's ONNX Runtime environment (ONNX Runtime allows one per process), created on first
/// use from `library`, else `ORT_DYLIB_PATH`, else `.ort/` under the working directory or beside
/// the executable; later calls return the first one, whatever `library` they pass. Anything else
/// in the process that uses `ort` must go through this.
pub fn environment(library: Option<&Path>) -> Result<&'static ort::environment::Environment> {
    let env = ORT_ENV.get_or_init(|| {
        let lib = self::library(library)?;
        if !lib.is_file() {
            return Err(format!("{}: no such file", lib.display()));
        }
        let builder = ort::init_from(&lib).map_err(|e| format!("loading {}: {e}", lib.display()))?;
        builder.build().map_err(|e| format!("starting ONNX Runtime from {}: {e}", lib.display()))
    });
    env.as_ref().map_err(|reason| Error::ProviderUnavailable {
        requested: "ONNX Runtime".into(),
        reason: reason.clone(),
        available: "tract".into(),
        fix: Some(ProviderFix::OrtLibrary),
    })
}
