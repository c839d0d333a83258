//! ONNX Runtime's TensorRT provider (NVIDIA GPUs): in the `onnxruntime-gpu` library, which needs
//! the CUDA 13, cuDNN 9 and TensorRT 10 libraries. Its one option here is the engine cache
//! ([`RuntimeOptions::trt_cache`](crate::RuntimeOptions::trt_cache)): TensorRT compiles an engine
//! per graph and input shapes, minutes for the UNet, and with a cache directory it compiles each
//! once. The session fails rather than silently running elsewhere.

use super::{ort_provider, Ep, Provider};
use crate::error::Error;
use ort::ep::ExecutionProvider;

pub(crate) const PROVIDER: Provider = Provider {
    name: "tensorrt",
    fallback: &[Ep::Cuda, Ep::Cpu, Ep::Tract],
    unavailable: |options| {
        ort_provider::unavailable(
            options,
            Ep::TensorRt,
            ort::ep::TensorRT::is_available,
            "the onnxruntime-gpu wheel with CUDA 13, cuDNN 9 and TensorRT 10 libraries",
        )
    },
    load: |path, _, options| {
        ort_provider::load(path, options, Ep::TensorRt, || {
            let mut trt = ort::ep::TensorRT::default();
            if let Some(dir) = &options.trt_cache {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
                trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
            }
            Ok(trt.build().error_on_failure())
        })
    },
};
