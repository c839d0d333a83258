//! ONNX Runtime's DirectML provider (any DirectX 12 GPU, Windows only). Registered with ONNX
//! Runtime's defaults, failing the session rather than silently running on the CPU.

use super::{ort_provider, Ep, Provider};
use ort::ep::ExecutionProvider;

pub(crate) const PROVIDER: Provider = Provider {
    name: "directml",
    fallback: &[Ep::Cpu, Ep::Tract],
    unavailable: |options| {
        ort_provider::unavailable(options, Ep::DirectMl, ort::ep::DirectML::is_available, "DirectML needs Windows and its onnxruntime-directml library")
    },
    load: |path, _, options| ort_provider::load(path, options, Ep::DirectMl, || Ok(ort::ep::DirectML::default().build().error_on_failure())),
};
