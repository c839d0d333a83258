//! Choosing where graphs run: [`RuntimeOptions`] ask for a provider, [`Runtime::new`] checks it
//! and applies the fallback policy, [`Runtime::load`] loads graphs on the provider in use. An
//! unavailable provider is an error listing those that are; falling back to another happens only
//! when asked, and is reported ([`Runtime::notes`]).

use std::path::{Path, PathBuf};

use crate::error::{Error, ProviderFix, Result};
use crate::providers::{CpuArena, Ep};
use crate::session::{GraphSession, InputSpec};

/// What [`Runtime::new`] is asked for.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The execution provider to run on (default: tract).
    pub ep: Ep,
    /// When `ep` is unavailable, fall back instead of failing: tensorrt → cuda → cpu, cuda or
    /// directml → cpu, cpu → tract (the first available).
    pub fallback: bool,
    /// ONNX Runtime's shared library; else `ORT_DYLIB_PATH`, else the first `.ort/` found under
    /// the working directory or beside the executable. Read once per process (see
    /// [`ort_environment`](crate::ort_environment)).
    pub ort_library: Option<PathBuf>,
    /// TensorRT engine cache directory (created if missing); none: engines are rebuilt per session.
    pub trt_cache: Option<PathBuf>,
    /// ONNX Runtime CPU provider's memory arena (`ANIMATEDIFF_ORT_ARENA=on|off` overrides it).
    pub cpu_arena: CpuArena,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self { ep: Ep::Tract, fallback: false, ort_library: None, trt_cache: None, cpu_arena: CpuArena::Auto }
    }
}

/// Loads graphs on the chosen provider; remembers what was actually used.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The options it was made with.
    pub options: RuntimeOptions,
    /// The provider in use (differs from `options.ep` only after an allowed fallback).
    pub ep: Ep,
    /// Fallbacks that happened, one sentence each, for the user.
    pub notes: Vec<String>,
}

/// Providers usable here, in [`Ep::ALL`]'s order: tract always; ONNX Runtime's when its library
/// loads (from `options.ort_library`, see [`RuntimeOptions::ort_library`]) and lists them.
pub fn available(options: &RuntimeOptions) -> Vec<Ep> {
    Ep::ALL.into_iter().filter(|ep| ep.unavailable(options).is_none()).collect()
}

impl Runtime {
    /// Checks the provider; with `fallback`, picks the next one that works and records it in
    /// `notes`. Without it, an unavailable provider is [`Error::ProviderUnavailable`].
    pub fn new(options: RuntimeOptions) -> Result<Self> {
        // tract needs nothing: ONNX Runtime is not touched unless one of its providers is asked for
        if options.ep == Ep::Tract {
            return Ok(Self { ep: Ep::Tract, options, notes: Vec::new() });
        }
        let avail = available(&options);
        if avail.contains(&options.ep) {
            return Ok(Self { ep: options.ep, options, notes: Vec::new() });
        }
        let why = options.ep.unavailable(&options);
        let (reason, fix) = why.map_or((String::new(), ProviderFix::ChooseOrFallback), |u| (u.reason, u.fix));
        if !options.fallback {
            return Err(Error::ProviderUnavailable {
                requested: options.ep.to_string(),
                reason,
                available: avail.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "),
                fix: Some(fix),
            });
        }
        let ep = options.ep.provider().fallback.iter().copied().find(|e| avail.contains(e)).unwrap_or(Ep::Tract);
        let note = format!("execution provider {} is not available ({reason}); falling back to {ep}", options.ep);
        Ok(Self { ep, options, notes: vec![note] })
    }

    /// Loads the graph at `path` for these inputs (in the graph's input order; tract optimises for
    /// their shapes, which every later run must then have). Sets glibc's heap thresholds for
    /// loading, then for running (see `heap`).
    pub fn load(&self, path: &Path, inputs: &[InputSpec]) -> Result<Box<dyn GraphSession>> {
        let _loading = crate::heap::Loading::begin();
        (self.ep.provider().load)(path, inputs, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fallback_ends_on_tract_and_tract_never_falls_back() {
        for ep in Ep::ALL {
            let order = ep.provider().fallback;
            assert_eq!(order.last().copied().unwrap_or(Ep::Tract), Ep::Tract, "{ep}");
            assert!(!order.contains(&ep), "{ep}");
        }
        assert_eq!(Ep::TensorRt.provider().fallback, &[Ep::Cuda, Ep::Cpu, Ep::Tract]);
        assert_eq!(Ep::Cuda.provider().fallback, &[Ep::Cpu, Ep::Tract]);
        assert_eq!(Ep::DirectMl.provider().fallback, &[Ep::Cpu, Ep::Tract]);
    }

    #[test]
    fn providers_parse_from_and_display_as_their_names() {
        for (ep, name) in Ep::ALL.into_iter().zip(["tract", "cpu", "cuda", "tensorrt", "directml"]) {
            assert_eq!(ep.to_string(), name);
            assert_eq!(name.parse::<Ep>(), Ok(ep));
            assert_eq!(name.to_uppercase().parse::<Ep>(), Ok(ep));
        }
        let e = "metal".parse::<Ep>().unwrap_err();
        assert_eq!(e, "unknown execution provider `metal`: expected tract, cpu, cuda, tensorrt or directml");
    }

    /// Where a GPU provider is missing (everywhere without the onnxruntime-gpu library and a GPU):
    /// without a fallback the error names the settings that fix it, with one the first available
    /// provider of its order runs and a note says so.
    #[test]
    fn an_unavailable_provider_fails_or_falls_back_as_asked() {
        let avail = available(&RuntimeOptions::default());
        for ep in [Ep::Cpu, Ep::Cuda, Ep::TensorRt, Ep::DirectMl].into_iter().filter(|ep| !avail.contains(ep)) {
            let e = Runtime::new(RuntimeOptions { ep, ..Default::default() }).expect_err("unavailable");
            let Error::ProviderUnavailable { fix: Some(fix), .. } = &e else { panic!("{e:?}") };
            let fix_names = match fix {
                ProviderFix::OrtLibrary => "RuntimeOptions::ort_library",
                ProviderFix::ChooseOrFallback => "RuntimeOptions::fallback",
            };
            let message = e.to_string();
            assert!(message.contains(&format!("`{ep}` is not available")) && message.contains(fix_names), "{message}");
            let runtime = Runtime::new(RuntimeOptions { ep, fallback: true, ..Default::default() }).unwrap();
            let expected = ep.provider().fallback.iter().copied().find(|e| avail.contains(e)).unwrap();
            assert_eq!(runtime.ep, expected);
            assert!(runtime.notes.len() == 1 && runtime.notes[0].contains(&format!("falling back to {expected}")), "{:?}", runtime.notes);
        }
    }

    #[test]
    fn tract_needs_no_onnx_runtime() {
        let options = RuntimeOptions { ort_library: Some("/nonexistent/libonnxruntime.so.1".into()), ..Default::default() };
        let runtime = Runtime::new(options).unwrap();
        assert_eq!(runtime.ep, Ep::Tract);
        assert!(runtime.notes.is_empty());
    }
}
