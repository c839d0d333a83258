//! `animate --demo`: the tiny seeded fixture model (random weights: the frames are noise, not a
//! picture), built once with `build-graph` into a cache directory and reused.

use std::path::PathBuf;

use crate::build::{build, BuildOptions};

/// Where the demo artifact is cached: `$ANIMATEDIFF_CACHE`, `$XDG_CACHE_HOME/animatediff-onnx`,
/// `~/.cache/animatediff-onnx`, else the system temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("ANIMATEDIFF_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("animatediff-onnx");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("animatediff-onnx");
    }
    std::env::temp_dir().join("animatediff-onnx")
}

/// The demo artifact, built if it is not cached yet. Returns its directory and whether it was built now.
pub fn artifact(quiet: bool) -> Result<(PathBuf, bool), String> {
    let root = cache_dir().join(format!("demo-{}", env!("CARGO_PKG_VERSION")));
    let out = root.join("artifact");
    if out.join("manifest.json").is_file() {
        return Ok((out, false));
    }
    let fixtures = root.join("fixtures");
    let set = animatediff_fixtures::write_fixture_set(&fixtures, animatediff_fixtures::DEFAULT_SEED)
        .map_err(|e| format!("writing the demo model to {}: {e}", fixtures.display()))?;
    build(&BuildOptions { base: Some(set.path("base.safetensors")), quiet, ..BuildOptions::new(set.path("mm_v2.ckpt"), &out) })
    .map_err(|e| format!("building the demo model: {e}"))?;
    let _ = std::fs::remove_dir_all(&fixtures);
    Ok((out, true))
}
