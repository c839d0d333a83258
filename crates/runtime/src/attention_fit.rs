//! Whether an artifact's attention form ([`AttentionForm`], chosen by `build-graph --attention`)
//! suits the execution provider and video size it is about to run at: a form that some provider
//! cannot run is an error, one that runs poorly there (the score matrices it builds, a fusion it
//! misses) a warning that says what to rebuild with.

use onnx_writer::AttentionForm;

use crate::artifact::Artifact;
use crate::providers::Ep;
use crate::error::{Error, Result, Setting};
use crate::pipeline::VideoShape;

/// From this many latent pixels per frame (256×256 images) on, building the score matrices of the
/// spatial self-attention costs gigabytes.
const LARGE_LATENT_PIXELS: usize = 32 * 32;

/// Why `ep` cannot run `graph` of `artifact`, if it cannot: ONNX Runtime's CPU provider has no
/// fp16 kernel for `com.microsoft.MultiHeadAttention` (the text encoder's attention is plain).
pub fn cannot_run(artifact: &Artifact, ep: Ep, graph: &str) -> Option<String> {
    (ep == Ep::Cpu && artifact.attention() == AttentionForm::Mha && graph != "text_encoder" && artifact.is_fp16(graph)).then(|| {
        format!(
            "{}: this fp16 model's {graph} attentions are com.microsoft.MultiHeadAttention, which ONNX Runtime's CPU provider has no fp16 kernel for; run it on tract (or cuda / directml), or rebuild it with build-graph --attention plain or in fp32",
            artifact.dir.display()
        )
    })
}

/// Warnings for running `artifact` on `ep` at `shape`; an error when `ep` cannot run it at all.
pub fn check(artifact: &Artifact, ep: Ep, shape: VideoShape) -> Result<Vec<String>> {
    let form = artifact.attention();
    if let Some(reason) = ["unet", "vae_decoder"].into_iter().find_map(|g| cannot_run(artifact, ep, g)) {
        return Err(Error::Invalid { setting: Setting::Ep, value: ep.to_string(), reason });
    }
    let pixels = (shape.height / 8) * (shape.width / 8);
    // the largest score matrix: the first level's spatial self-attention, CFG batch 2 x frames
    let score_gb = (2 * shape.frames * artifact.unet_heads()) as f64 * (pixels as f64).powi(2) * 4.0 / 1e9;
    let scores_built = match ep {
        Ep::Cpu => form.materialises_scores_on_ort_cpu(),
        Ep::Tract | Ep::Cuda | Ep::DirectMl => form == AttentionForm::Plain,
        // TensorRT fuses the plain form (in fp16) and the standard Attention operator
        Ep::TensorRt => form == AttentionForm::Plain && !artifact.is_fp16("unet"),
    };
    let mut warnings = Vec::new();
    if scores_built && pixels >= LARGE_LATENT_PIXELS {
        warnings.push(format!(
            "this model's attention form `{form}` makes {ep} build every attention's score matrix: {score_gb:.1} GB for the largest at {}x{}, {} frames; rebuild it with build-graph --attention {} for attention that never builds it",
            shape.width,
            shape.height,
            shape.frames,
            if ep == Ep::TensorRt { "sdpa (TensorRT >= 10.14) or --precision fp16" } else { "mha" }
        ));
    }
    if ep == Ep::TensorRt && form == AttentionForm::Mha {
        warnings.push(
            "TensorRT has no com.microsoft.MultiHeadAttention: ONNX Runtime runs those nodes on the CUDA provider and splits the TensorRT engine around them; rebuild with build-graph --attention sdpa (TensorRT >= 10.14) or --attention plain --precision fp16".into(),
        );
    }
    Ok(warnings)
}
