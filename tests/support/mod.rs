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
