//! ONNX Runtime's CUDA provider (NVIDIA GPUs): in the `onnxruntime-gpu` library, which needs the
//! CUDA 13 and cuDNN 9 libraries. Registered with ONNX Runtime's defaults (device 0), failing the
//! session rather than silently running on the CPU.

use super::{ort_provider, Ep, Provider};
use ort::ep::ExecutionProvider;

pub(crate) const PROVIDER: Provider = Provider {
    name: "cuda",
    fallback: &[Ep::Cpu, Ep::Tract],
    unavailable: |options| {
        ort_provider::unavailable(options, Ep::Cuda, ort::ep::CUDA::is_available, "the onnxruntime-gpu wheel with CUDA 13 and cuDNN 9 libraries")
    },
    load: |path, _, options| ort_provider::load(path, options, Ep::Cuda, || Ok(ort::ep::CUDA::default().build().error_on_failure())),
};
