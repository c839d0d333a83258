//! The cross-runtime suite: one artifact, the same numbers on every execution provider.
//!
//! Written once and instantiated per provider: tract and ONNX Runtime CPU always; CUDA, TensorRT
//! and DirectML when the ONNX Runtime library reports them, otherwise skipped with the reason
//! printed. Each provider runs `animate check` against the golden bundle that `build-graph` stored
//! (computed with tract) for v1, v2 and v3 artifacts, with a written-down tolerance.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use animatediff_runtime::{available, Ep, RuntimeOptions};

/// Tolerance of each provider against tract's golden bundle (max |error| / max |reference|), and why.
fn tolerance(ep: Ep) -> (f64, &'static str) {
    match ep {
        Ep::Tract => (1e-6, "the bundle was computed by tract: identical on the same CPU, ulp-level elsewhere"),
        Ep::Cpu => (1e-4, "fp32 on another kernel library: measured ≤ 2.1e-6 on the fixtures"),
        Ep::Cuda => (1e-3, "cuDNN/cuBLAS may pick TF32 and other reduction orders"),
        Ep::TensorRt => (1e-3, "TensorRT fuses layers and may use TF32"),
        Ep::DirectMl => (1e-3, "GPU kernels with other reduction orders"),
    }
}

fn artifacts() -> &'static [(String, PathBuf)] {
    static A: std::sync::OnceLock<(tempfile::TempDir, Vec<(String, PathBuf)>)> = std::sync::OnceLock::new();
    &A.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let set = animatediff_fixtures::write_fixture_set(&dir.path().join("fx"), animatediff_fixtures::DEFAULT_SEED).unwrap();
        let mut v = Vec::new();
        for mm in ["v1", "v2", "v3"] {
            let out = dir.path().join(format!("artifact_{mm}"));
            let opts = animatediff_build::BuildOptions {
                base: Some(set.path("base.safetensors")),
                quiet: true,
                ..animatediff_build::BuildOptions::new(set.path(&format!("mm_{mm}.ckpt")), &out)
            };
            animatediff_build::build(&opts).unwrap();
            v.push((mm.to_owned(), out));
        }
        (dir, v)
    })
    .1
}

fn check(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_animate")).args(["check", "--model", model.to_str().unwrap()]).args(args).output().unwrap()
}

fn suite(ep: Ep) {
    let avail = available(&RuntimeOptions::default());
    if !avail.contains(&ep) {
        println!("SKIP {ep}: not available here (available: {avail:?}; CUDA/TensorRT need the onnxruntime-gpu library and a GPU, DirectML needs Windows)");
        return;
    }
    let (tol, why) = tolerance(ep);
    println!("{ep}: tolerance {tol:e} ({why})");
    for (mm, model) in artifacts() {
        let out = check(model, &["--ep", &ep.to_string(), "--tolerance", &tol.to_string(), "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{ep} {mm}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        for row in report["rows"].as_array().unwrap() {
            println!("  {mm} {:<13} {:<28} max abs {:.3e} rel {:.3e} {}", row["graph"].as_str().unwrap(), row["compared"].as_str().unwrap(), row["max_abs_error"].as_f64().unwrap_or(f64::NAN), row["max_relative_error"].as_f64().unwrap_or(f64::NAN), if row["pass"] == true { "PASS" } else { "FAIL" });
        }
        assert_eq!(report["pass"], true, "{ep} {mm}: {report}");
        assert!(out.status.success());
    }
}

#[test]
fn suite_tract() {
    suite(Ep::Tract)
}
#[test]
fn suite_ort_cpu() {
    suite(Ep::Cpu)
}
#[test]
fn suite_cuda() {
    suite(Ep::Cuda)
}
#[test]
fn suite_tensorrt() {
    suite(Ep::TensorRt)
}
#[test]
fn suite_directml() {
    suite(Ep::DirectMl)
}

#[test]
fn tract_and_ort_cpu_agree_within_1e_4() {
    for (mm, model) in artifacts() {
        let out = check(model, &["--ep", "tract", "--against", "cpu", "--tolerance", "1e-4"]);
        let table = String::from_utf8_lossy(&out.stdout);
        println!("{mm}:\n{table}");
        assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(table.matches("PASS").count(), 4, "files + 3 graphs");
    }
}

#[test]
fn a_corrupted_weight_fails_the_check_and_names_the_graph() {
    let (_, model) = &artifacts()[1];
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("corrupted");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(model).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    // overwrite 64 KiB in the middle of the UNet's external data with 1000.0 (always weights:
    // padding between tensors is under 4 KiB)
    let data = copy.join("unet.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2 / 4 * 4;
    for i in (mid..mid + 65536).step_by(4) {
        bytes[i..i + 4].copy_from_slice(&1000f32.to_le_bytes());
    }
    std::fs::write(&data, &bytes).unwrap();

    let out = check(&copy, &["--ep", "tract"]);
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert_eq!(out.status.code(), Some(1), "{table}");
    let line = |g: &str| table.lines().find(|l| l.starts_with(g)).unwrap_or_default().to_owned();
    assert!(line("unet").contains("FAIL"), "{table}");
    assert!(line("files").contains("FAIL") && line("files").contains("unet.onnx.data"), "{table}");
    assert!(line("text_encoder").contains("PASS") && line("vae_decoder").contains("PASS"), "{table}");
}

#[test]
fn check_without_a_bundle_or_provider_is_a_clear_error() {
    let (_, model) = &artifacts()[0];
    let out = check(model, &["--ep", "cuda"]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("`cuda` is not available") || out.status.success(), "{e}");
    let out = check(model, &["--ep", "tract", "--golden", "/nonexistent/golden.npz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("golden.npz"));
}

/// An fp16 artifact with the default `mha` attention: tract checks it against its golden bundle;
/// ONNX Runtime's CPU provider, which has no fp16 MultiHeadAttention kernel, checks the text
/// encoder and reports SKIP with the reason for the UNet and VAE; `animate --ep cpu` refuses it
/// before loading anything, naming what to do instead.
#[test]
fn fp16_mha_is_checked_on_tract_and_skipped_on_ort_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let set = animatediff_fixtures::write_fixture_set(&dir.path().join("fx"), animatediff_fixtures::DEFAULT_SEED).unwrap();
    let model = dir.path().join("fp16");
    let opts = animatediff_build::BuildOptions {
        base: Some(set.path("base.safetensors")),
        precision: animatediff_build::Precision::Fp16,
        vae_precision: animatediff_build::Precision::Fp16,
        quiet: true,
        ..animatediff_build::BuildOptions::new(set.path("mm_v2.ckpt"), &model)
    };
    animatediff_build::build(&opts).unwrap();

    let out = check(&model, &["--ep", "tract"]);
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table.matches("PASS").count(), 4, "files + 3 graphs: {table}");

    if available(&RuntimeOptions::default()).contains(&Ep::Cpu) {
        let out = check(&model, &["--ep", "cpu"]);
        let table = String::from_utf8_lossy(&out.stdout);
        println!("{table}");
        assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
        let line = |g: &str| table.lines().find(|l| l.starts_with(g)).unwrap_or_default().to_owned();
        assert!(line("text_encoder").contains("PASS"), "{table}");
        for g in ["unet", "vae_decoder"] {
            assert!(line(g).contains("SKIP") && line(g).contains("run it on tract"), "{table}");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_animate"))
            .args(["--model", model.to_str().unwrap(), "--ep", "cpu", "--prompt", "a cat", "--frames", "2", "--width", "64", "--height", "64"])
            .args(["--steps", "1", "--out", dir.path().join("x.gif").to_str().unwrap()])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(e.contains("--ep cpu: ") && e.contains("no fp16 kernel") && e.contains("run it on tract"), "{e}");
        assert!(!dir.path().join("x.gif").exists());
    } else {
        println!("SKIP ort-cpu half: ONNX Runtime's library is not available here");
    }
}
