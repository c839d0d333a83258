//! Helpers shared by the integration tests in `tests/`: one fixture set per test binary, golden
//! bundles, and error metrics.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use animatediff_fixtures::FixtureSet;

/// The default fixture set, written once per test process into a temporary directory.
pub fn fixtures() -> &'static FixtureSet {
    static SET: OnceLock<(tempfile::TempDir, FixtureSet)> = OnceLock::new();
    &SET.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let set = animatediff_fixtures::write_fixture_set(dir.path(), animatediff_fixtures::DEFAULT_SEED)
            .expect("writing fixtures");
        (dir, set)
    })
    .1
}

/// `tests/goldens/` of this checkout.
pub fn goldens_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("goldens")
}

/// Max absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Path of ONNX Runtime's shared library: `ORT_DYLIB_PATH`, else what `tools/setup.sh` put in `.ort/`.
pub fn ort_library() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so.") || n == "libonnxruntime.dylib" || n == "onnxruntime.dll"))
        })
        .ok_or_else(|| format!("no ONNX Runtime library in {} and ORT_DYLIB_PATH is unset: run tools/setup.sh", dir.display()))
}

/// Error of `got` against `reference`, with the bound `tol × max|reference|`.
#[derive(Debug, Clone, Copy)]
pub struct Deviation {
    pub max_abs: f32,
    pub max_ref: f32,
}

impl Deviation {
    pub fn of(got: &[f32], reference: &[f32]) -> Self {
        let max_ref = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_abs = if got.len() == reference.len() && got.iter().all(|v| v.is_finite()) { max_abs_diff(got, reference) } else { f32::INFINITY };
        Self { max_abs, max_ref }
    }

    pub fn relative(&self) -> f32 {
        self.max_abs / self.max_ref
    }
}

impl std::fmt::Display for Deviation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "max abs err {:.3e} (max |ref| {:.3}, relative {:.3e})", self.max_abs, self.max_ref, self.relative())
    }
}

/// Build options for one golden variant (`base`, `personalized`, `personalized_lora_official`,
/// `personalized_lora_kohya`) with motion module `mm` (`v1`, `v2`, `v3`): LoRA multiplier 0.8, as
/// the reference tool.
pub fn variant_options(variant: &str, mm: &str, out: &Path) -> animatediff_build::BuildOptions {
    use animatediff_formats::{LoraScaling, LoraSpec};
    let set = fixtures();
    animatediff_build::BuildOptions {
        base: Some(set.path("base.safetensors")),
        personalized: (variant != "base").then(|| set.path("personalized.safetensors")),
        loras: if variant.contains("lora") { vec![LoraSpec { path: set.path("lora.safetensors"), multiplier: 0.8 }] } else { vec![] },
        lora_scaling: if variant.ends_with("kohya") { LoraScaling::Kohya } else { LoraScaling::Official },
        quiet: true,
        ..animatediff_build::BuildOptions::new(set.path(&format!("mm_{mm}.ckpt")), out)
    }
}
