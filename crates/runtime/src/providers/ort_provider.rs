//! What ONNX Runtime's providers share: availability (the library loads, and lists the provider)
//! and loading a session with a provider's registration.

use std::path::Path;

use super::{Ep, Unavailable};
use crate::error::{ProviderFix, Result};
use crate::runtime::{available, RuntimeOptions};
use crate::session::ort::OrtSession;
use crate::session::GraphSession;

/// Why no ONNX Runtime provider can run: the library does not load.
pub(crate) fn library_unavailable(options: &RuntimeOptions) -> Option<Unavailable> {
    crate::ort_env::load_error(options.ort_library.as_deref()).map(|reason| Unavailable { reason, fix: ProviderFix::OrtLibrary })
}

/// Why an ONNX Runtime provider cannot run: the library does not load, or `listed` (the provider's
/// `is_available`) says it lacks the provider, whose requirements `needs` states.
pub(crate) fn unavailable(options: &RuntimeOptions, ep: Ep, listed: fn() -> ort::Result<bool>, needs: &str) -> Option<Unavailable> {
    library_unavailable(options).or_else(|| {
        (!listed().unwrap_or(false)).then(|| Unavailable {
            reason: format!("the ONNX Runtime library in use was not built with the {ep} provider ({needs})"),
            fix: ProviderFix::ChooseOrFallback,
        })
    })
}

/// Loads `path` on `ep` in the process's ONNX Runtime environment, registering the provider
/// `register` builds.
pub(crate) fn load(
    path: &Path,
    options: &RuntimeOptions,
    ep: Ep,
    register: impl FnOnce() -> Result<ort::ep::ExecutionProviderDispatch>,
) -> Result<Box<dyn GraphSession>> {
    let env = crate::ort_env::environment(options.ort_library.as_deref())?;
    let list = || available(options).iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
    Ok(Box::new(OrtSession::load(path, env, ep, register()?, list)?))
}
