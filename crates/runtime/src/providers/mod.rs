//! Execution providers: where a graph runs. Each has a module of its own holding its options and
//! how it is registered (its [`Provider`] entry); the `registry!` invocation below names them
//! once, and [`Ep`] with its name, availability, fallback order and loading follow from it.
//!
//! Adding a provider: a module here with its `PROVIDER` entry (for ONNX Runtime's providers, an
//! `ort::ep` builder passed to [`ort_provider::load`], as `cuda.rs` does), and one line in the
//! `registry!` invocation below.

pub(crate) mod ort_provider;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use cpu::{CpuArena, ARENA_MAX_LATENT_PIXELS};

use crate::error::{ProviderFix, Result};
use crate::runtime::RuntimeOptions;
use crate::session::{GraphSession, InputSpec};

/// Why a provider cannot run here.
pub(crate) struct Unavailable {
    pub(crate) reason: String,
    pub(crate) fix: ProviderFix,
}

/// Loads a graph for these inputs on one provider.
pub(crate) type LoadFn = fn(&Path, &[InputSpec], &RuntimeOptions) -> Result<Box<dyn GraphSession>>;

/// A provider's entry in the registry.
pub(crate) struct Provider {
    /// Its name in messages and as [`Ep`]'s `Display` / `FromStr` form.
    pub(crate) name: &'static str,
    /// The providers tried in turn when this one is unavailable and a fallback is allowed.
    pub(crate) fallback: &'static [Ep],
    /// Why it cannot run here, or `None` when it can.
    pub(crate) unavailable: fn(&RuntimeOptions) -> Option<Unavailable>,
    /// Loads a graph for these inputs.
    pub(crate) load: LoadFn,
}

/// Declares each provider's module and [`Ep`] from the registry's lines, `Variant => module` (the
/// module's `PROVIDER`).
macro_rules! registry {
    ($($(#[$doc:meta])* $variant:ident => $module:ident,)*) => {
        $(mod $module;)*

        /// Where a graph runs: tract, or one of ONNX Runtime's execution providers. Parses from and
        /// displays as its lower-case name (`tract`, `cpu`, `cuda`, `tensorrt`, `directml`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Ep {
            $($(#[$doc])* $variant,)*
        }

        impl Ep {
            /// Every provider, in the order [`available`](crate::available) lists them.
            pub const ALL: [Ep; [$(stringify!($variant)),*].len()] = [$(Ep::$variant),*];

            /// The provider's registry entry.
            pub(crate) fn provider(self) -> &'static Provider {
                match self {
                    $(Ep::$variant => &$module::PROVIDER,)*
                }
            }
        }
    };
}

registry! {
    /// tract, pure Rust: always available, nothing to install.
    Tract => tract,
    /// ONNX Runtime's CPU provider.
    Cpu => cpu,
    /// ONNX Runtime's CUDA provider (the `onnxruntime-gpu` library, an NVIDIA GPU).
    Cuda => cuda,
    /// ONNX Runtime's TensorRT provider (the `onnxruntime-gpu` library with TensorRT, an NVIDIA GPU).
    TensorRt => tensorrt,
    /// ONNX Runtime's DirectML provider (Windows).
    DirectMl => directml,
}

impl Ep {
    /// Why the provider cannot run with `options`, or `None` when it can.
    pub(crate) fn unavailable(self, options: &RuntimeOptions) -> Option<Unavailable> {
        (self.provider().unavailable)(options)
    }
}

impl fmt::Display for Ep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.provider().name)
    }
}

impl FromStr for Ep {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let names = Ep::ALL.map(|e| e.to_string());
        Ep::ALL.into_iter().find(|e| e.to_string() == s.to_ascii_lowercase()).ok_or_else(|| {
            let (last, rest) = names.split_last().expect("providers");
            format!("unknown execution provider `{s}`: expected {} or {last}", rest.join(", "))
        })
    }
}
