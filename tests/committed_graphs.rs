//! The committed artifact `graphs/micro_v2`: checked on tract and ONNX Runtime CPU against its
//! golden bundle (a runner change that breaks numerics fails here without rebuilding), and
//! rebuilt from the regenerated micro fixtures byte for byte (the build is deterministic).

use std::path::{Path, PathBuf};

use animatediff_runtime::check;
use animatediff_runtime::{Artifact, Ep, Runtime, RuntimeOptions};

/// Tract against goldens that tract computed on another CPU (see the first test).
const TRACT_ACROSS_CPUS: f64 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_artifact_checks_on_tract_and_ort_cpu() {
    let artifact = Artifact::open(root().join("graphs/micro_v2")).unwrap();
    let files = check::verify_files(&artifact);
    assert!(files.pass, "{files:?}");
    // The golden bundle was computed by tract on an AVX2 machine; tract picks its matrix kernels
    // by CPU, and AVX-512's sum in another order (unet: 1.6e-6 relative on a Xeon with AVX-512,
    // 0 on AVX2), so tract is held to 1e-5 rather than to its own bits.
    for (ep, tol) in [(Ep::Tract, TRACT_ACROSS_CPUS), (Ep::Cpu, 1e-4)] {
        let runtime = Runtime::new(RuntimeOptions { ep, ..Default::default() }).unwrap();
        for case in check::read_bundle(&artifact.dir.join("golden.npz"), &artifact).unwrap() {
            let file = format!("{}.onnx", case.graph);
            let got = check::run(&runtime, &artifact.dir, &file, &case).unwrap();
            let row = check::compare(&case.graph, &format!("{ep} vs golden"), &got, case.expected.as_ref().unwrap(), tol);
            println!("{:<13} {:<16} max abs {:.3e} rel {:.3e}", row.graph, row.compared, row.max_abs_error, row.max_relative_error);
            assert!(row.pass, "{row:?}");
        }
    }
}

#[test]
fn rebuilding_from_the_fixtures_reproduces_the_committed_artifact() {
    // the same relative paths as tools/graphs/rebuild.sh: they are recorded in the manifest
    std::env::set_current_dir(root()).unwrap();
    let fixtures = Path::new("target/graphs-fixtures");
    animatediff_fixtures::write_fixture_set_with(fixtures, animatediff_fixtures::DEFAULT_SEED, &animatediff_fixtures::TinyArch::micro()).unwrap();
    let out = Path::new("target/graphs-rebuild/micro_v2");
    let opts = animatediff_build::BuildOptions {
        base: Some(fixtures.join("base.safetensors")),
        quiet: true,
        motion_windows: true, // tools/graphs/rebuild.sh: --motion-windows
        ..animatediff_build::BuildOptions::new(fixtures.join("mm_v2.ckpt"), out)
    };
    animatediff_build::build(&opts).unwrap();
    let committed = root().join("graphs/micro_v2");
    let mut names: Vec<String> = std::fs::read_dir(&committed).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut rebuilt: Vec<String> = std::fs::read_dir(out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    rebuilt.sort();
    assert_eq!(names, rebuilt);
    for n in &names {
        let (a, b) = (std::fs::read(committed.join(n)).unwrap(), std::fs::read(out.join(n)).unwrap());
        match n.as_str() {
            "golden.npz" => {
                let ca = check::read_bundle(&committed.join(n), &Artifact::open(&committed).unwrap()).unwrap();
                let cb = check::read_bundle(&out.join(n), &Artifact::open(out).unwrap()).unwrap();
                for (x, y) in ca.iter().zip(&cb) {
                    let row = check::compare(&x.graph, "rebuilt vs committed", y.expected.as_ref().unwrap(), x.expected.as_ref().unwrap(), TRACT_ACROSS_CPUS);
                    assert!(row.pass, "{row:?}");
                }
                println!("{n}: {}", if a == b { "identical bytes" } else { "equal within 1e-5" });
            }
            "manifest.json" => {
                // input files' and the executable's sizes and times are this machine's (they let a
                // rebuild skip hashing and re-use weights)
                fn strip_stamps(v: &mut serde_json::Value) {
                    match v {
                        serde_json::Value::Object(m) => {
                            m.remove("size");
                            m.remove("mtime_ns");
                            m.values_mut().for_each(strip_stamps);
                        }
                        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_stamps),
                        _ => {}
                    }
                }
                let strip = |bytes: &[u8]| {
                    let mut m: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                    m["files"].as_object_mut().unwrap().remove("golden.npz");
                    strip_stamps(&mut m["inputs"]);
                    strip_stamps(&mut m["tool"]);
                    m
                };
                assert_eq!(strip(&a), strip(&b), "manifest differs");
                println!("{n}: equal (golden.npz hash and input file times aside)");
            }
            _ => {
                assert!(a == b, "{n} differs from the committed artifact: rebuild with tools/graphs/rebuild.sh if the change is intended");
                println!("{n}: identical bytes ({} bytes)", a.len());
            }
        }
    }
}
