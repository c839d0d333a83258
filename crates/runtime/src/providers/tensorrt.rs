//! ONNX Runtime's TensorRT provider (NVIDIA GPUs): in the `onnxruntime-gpu` library, which needs
//! the CUDA 13, cuDNN 9 and TensorRT 10 libraries. Its one option here is the engine cache
//! ([`RuntimeOptions::trt_cache`](crate::RuntimeOptions::trt_cache)): TensorRT compiles an engine
//! per graph and input shapes, minutes for the UNet, and with a cache directory it compiles each
//! once. The session fails rather than silently running elsewhere.

use super::{ort_provider, Ep, Provider};
use crate::error::{Error, Result};
use crate::runtime::RuntimeOptions;
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
    load: |path, _, options| ort_provider::load(path, options, Ep::TensorRt, || register(options)),
};

/// The provider's registration: with [`RuntimeOptions::trt_cache`] (created if missing), engines
/// are cached there.
fn register(options: &RuntimeOptions) -> Result<ort::ep::ExecutionProviderDispatch> {
    let mut trt = ort::ep::TensorRT::default();
    if let Some(dir) = &options.trt_cache {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        trt = trt.with_engine_cache(true).with_engine_cache_path(dir.display());
    }
    Ok(trt.build().error_on_failure())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs without TensorRT: the registration is built, and the cache directory made, before
    /// ONNX Runtime sees it.
    #[test]
    fn the_engine_cache_directory_is_created_and_a_file_in_its_way_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trt/engines");
        register(&RuntimeOptions { trt_cache: Some(dir.clone()), ..Default::default() }).unwrap();
        assert!(dir.is_dir());
        register(&RuntimeOptions::default()).unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let e = register(&RuntimeOptions { trt_cache: Some(file.join("x")), ..Default::default() }).err().unwrap();
        assert!(matches!(&e, Error::Io { path, .. } if *path == file.join("x")), "{e}");
    }
}
