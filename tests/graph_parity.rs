//! `build-graph` on the tiny fixtures, all three graphs run with tract AND with ONNX Runtime (CPU,
//! through `ort` load-dynamic) and compared with the reference goldens of `tools/reference`
//! (official AnimateDiff semantics): for v1, v2, v3 × base / personalised / personalised + LoRA
//! with both scalings. Bound: max abs error ≤ 1e-3 × max |reference|; a faithful fp32 graph
//! measures ~1e-6 here, structural mistakes give 1e-1.

use std::fs::File;
use std::path::Path;

use animatediff_build::{build, BuildOptions, Precision};
use onnx_writer::AttentionForm;
use animatediff_onnx::{goldens_dir, ort_library, variant_options, Deviation};
use ndarray::ArrayD;
use ndarray_npy::NpzReader;

/// fp32 graphs: max abs error ≤ 1e-3 × max |reference| (measured: ≤ 5e-6).
const TOLERANCE: f32 = 1e-3;
/// fp16 graphs (weights, matmuls and activations in fp16; norm statistics and softmax in fp32)
/// on ONNX Runtime CPU: half precision's 11-bit mantissa through ~60 layers (measured ≤ 2e-3).
const TOLERANCE_FP16_ORT: f32 = 1e-2;
/// The same graphs on tract measure ~5× more (≤ 1.2e-2 on the UNet; cause not established —
/// possibly f16 accumulation in tract's CPU kernels), hence a separate bound.
const TOLERANCE_FP16_TRACT: f32 = 3e-2;

struct Golden(NpzReader<File>);

impl Golden {
    fn open(name: &str) -> Self {
        let p = goldens_dir().join(format!("{name}.npz"));
        Golden(NpzReader::new(File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap())
    }
    fn f32(&mut self, n: &str) -> ArrayD<f32> {
        self.0.by_name(n).unwrap()
    }
    fn i64(&mut self, n: &str) -> ArrayD<i64> {
        self.0.by_name(n).unwrap()
    }
}

enum Input {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

impl Input {
    fn shape(&self) -> Vec<usize> {
        match self {
            Input::F32(a) => a.shape().to_vec(),
            Input::I64(a) => a.shape().to_vec(),
        }
    }
}

/// tract as the product runs it: `animatediff_runtime`'s session, with its load-time rewrites.
fn run_tract(model: &Path, inputs: &[(&str, &Input)]) -> Vec<f32> {
    use animatediff_runtime::{InputSpec, Runtime, RuntimeOptions, Tensor};
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let specs: Vec<InputSpec> = inputs
        .iter()
        .map(|(_, i)| if matches!(i, Input::I64(_)) { InputSpec::i64(i.shape()) } else { InputSpec::f32(i.shape()) })
        .collect();
    let mut session = runtime.load(model, &specs).unwrap_or_else(|e| panic!("tract loading {}: {e}", model.display()));
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|(_, input)| match input {
            Input::F32(a) => Tensor::F32 { shape: a.shape().to_vec(), data: a.iter().copied().collect() },
            Input::I64(a) => Tensor::I64 { shape: a.shape().to_vec(), data: a.iter().copied().collect() },
        })
        .collect();
    session.run(&tensors).unwrap_or_else(|e| panic!("tract running {}: {e}", model.display())).1
}

/// ONNX Runtime allows one environment per process: share the runtime crate's.
fn ort_env() -> &'static ort::environment::Environment {
    let lib = ort_library().unwrap();
    animatediff_runtime::ort_environment(Some(&lib)).unwrap_or_else(|e| panic!("{e}"))
}

fn run_ort(model: &Path, inputs: &[(&str, &Input)]) -> Vec<f32> {
    let mut session = ort::session::Session::builder(ort_env())
        .unwrap()
        .commit_from_file(model)
        .unwrap_or_else(|e| panic!("ORT loading {}: {e}", model.display()));
    let values: Vec<(String, ort::session::SessionInputValue)> = inputs
        .iter()
        .map(|(n, input)| {
            let v: ort::session::SessionInputValue = match input {
                Input::F32(a) => ort::value::Tensor::from_array(a.clone()).unwrap().into(),
                Input::I64(a) => ort::value::Tensor::from_array(a.clone()).unwrap().into(),
            };
            (n.to_string(), v)
        })
        .collect();
    let outputs = session.run(values).unwrap_or_else(|e| panic!("ORT running {}: {e}", model.display()));
    let (_, data) = outputs[0].try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

fn check(what: &str, got: &[f32], reference: &ArrayD<f32>, tolerance: f32) -> Deviation {
    let d = Deviation::of(got, reference.as_slice().unwrap());
    println!("{what:45} {d}");
    assert!(d.max_abs <= tolerance * d.max_ref, "{what}: {d} exceeds {tolerance} × max|ref|");
    d
}

fn parity(variant: &str, mm: &str) {
    parity_at(variant, mm, Precision::Fp32, AttentionForm::default())
}

/// Builds `variant` with `mm` at `precision` with attention in `form`, runs the three graphs on
/// tract and ONNX Runtime CPU and compares them with the reference. ONNX Runtime's CPU provider
/// has no fp16 MultiHeadAttention kernel: fp16 `mha` graphs are checked on tract alone, and the
/// runner must refuse them on ORT CPU with an error that says what to do instead.
fn parity_at(variant: &str, mm: &str, precision: Precision, attention: AttentionForm) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("artifact");
    let report = build(&BuildOptions { precision, vae_precision: precision, attention, ..variant_options(variant, mm, &out) })
    .unwrap();
    assert_eq!(report.manifest.attention, attention);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.manifest.motion_version.to_string(), mm);

    let name = format!("{variant}_{mm}");
    let mut g = Golden::open(&name);
    let label = match precision {
        Precision::Fp16 => format!("{name} fp16 {attention}"),
        Precision::Fp32 => format!("{name} {attention}"),
    };
    let ids = Input::I64(g.i64("te_input_ids"));
    let te_ref = g.f32("te_last_hidden_state");
    let unet_in = [
        ("sample", Input::F32(g.f32("unet_sample"))),
        ("timestep", Input::F32(g.f32("unet_timestep"))),
        ("encoder_hidden_states", Input::F32(g.f32("unet_encoder_hidden_states"))),
    ];
    let unet_ref = g.f32("unet_noise_pred");
    let vae_in = Input::F32(g.f32("vae_latent_sample"));
    let vae_ref = g.f32("vae_sample");
    let unet_inputs: Vec<(&str, &Input)> = unet_in.iter().map(|(n, i)| (*n, i)).collect();

    let mut runtimes = vec![("tract", run_tract as fn(&Path, &[(&str, &Input)]) -> Vec<f32>)];
    if precision == Precision::Fp16 && attention == AttentionForm::Mha {
        assert_ort_cpu_refuses(&out);
    } else {
        runtimes.push(("ort-cpu", run_ort));
    }
    for (runtime, run) in runtimes {
        let tol = match (precision, runtime) {
            (Precision::Fp32, _) => TOLERANCE,
            (Precision::Fp16, "tract") => TOLERANCE_FP16_TRACT,
            (Precision::Fp16, _) => TOLERANCE_FP16_ORT,
        };
        check(&format!("{label} {runtime} text_encoder"), &run(&out.join("text_encoder.onnx"), &[("input_ids", &ids)]), &te_ref, tol);
        check(&format!("{label} {runtime} unet"), &run(&out.join("unet.onnx"), &unet_inputs), &unet_ref, tol);
        check(&format!("{label} {runtime} vae_decoder"), &run(&out.join("vae_decoder.onnx"), &[("latent_sample", &vae_in)]), &vae_ref, tol);
    }
}

/// The runner's check before it loads an fp16 `mha` artifact on ONNX Runtime CPU.
fn assert_ort_cpu_refuses(artifact: &Path) {
    use animatediff_runtime::{attention_fit, Artifact, Ep, VideoShape};
    let a = Artifact::open(artifact).unwrap();
    let shape = VideoShape { frames: 2, height: 64, width: 64 };
    let e = attention_fit::check(&a, Ep::Cpu, shape).expect_err("fp16 mha on ORT CPU must be refused").to_string();
    assert!(e.starts_with("RuntimeOptions::ep cpu: ") && e.contains("run it on tract") && e.contains("--attention plain"), "{e}");
    assert!(attention_fit::check(&a, Ep::Tract, shape).unwrap().is_empty());
}

macro_rules! parity_tests {
    ($($test:ident => ($variant:expr, $mm:expr),)*) => {
        $(#[test] fn $test() { parity($variant, $mm) })*
    };
}

parity_tests! {
    base_v1 => ("base", "v1"),
    base_v2 => ("base", "v2"),
    base_v3 => ("base", "v3"),
    personalized_v1 => ("personalized", "v1"),
    personalized_v2 => ("personalized", "v2"),
    personalized_v3 => ("personalized", "v3"),
    personalized_lora_official_v1 => ("personalized_lora_official", "v1"),
    personalized_lora_official_v2 => ("personalized_lora_official", "v2"),
    personalized_lora_official_v3 => ("personalized_lora_official", "v3"),
    personalized_lora_kohya_v1 => ("personalized_lora_kohya", "v1"),
    personalized_lora_kohya_v2 => ("personalized_lora_kohya", "v2"),
    personalized_lora_kohya_v3 => ("personalized_lora_kohya", "v3"),
}

macro_rules! parity_tests_fp16 {
    ($($test:ident => ($variant:expr, $mm:expr),)*) => {
        $(#[test] fn $test() { parity_at($variant, $mm, Precision::Fp16, AttentionForm::Mha) })*
    };
}

/// The other attention forms on one variant per motion-module version, fp32 and fp16.
macro_rules! parity_tests_form {
    ($($test:ident => ($variant:expr, $mm:expr, $precision:expr, $form:expr),)*) => {
        $(#[test] fn $test() { parity_at($variant, $mm, $precision, $form) })*
    };
}

parity_tests_form! {
    plain_base_v1 => ("base", "v1", Precision::Fp32, AttentionForm::Plain),
    sdpa_base_v2 => ("base", "v2", Precision::Fp32, AttentionForm::Sdpa),
    plain_personalized_lora_official_v3 => ("personalized_lora_official", "v3", Precision::Fp32, AttentionForm::Plain),
    fp16_plain_base_v2 => ("base", "v2", Precision::Fp16, AttentionForm::Plain),
}

parity_tests_fp16! {
    fp16_base_v1 => ("base", "v1"),
    fp16_base_v2 => ("base", "v2"),
    fp16_base_v3 => ("base", "v3"),
    fp16_personalized_lora_kohya_v2 => ("personalized_lora_kohya", "v2"),
}

/// The tract session's load-time rewrites (`animatediff_runtime::tract_rewrite`) fire on the UNet
/// at the goldens' shape, so the tract parity checks above cover them: at 8×8 latents the
/// convolutions of the 4×4, 2×2 and 1×1 levels become products over the whole batch, one per
/// kernel tap, GroupNorm's per-channel scale and shift are broadcast over the batch, and every
/// attention (tract's SDPA, imported from MultiHeadAttention) runs as the session's block
/// attention. No convolution is split image by image at this size (its im2col is under 4 MiB).
#[test]
fn tract_rewrites_fire_on_the_unet() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("artifact");
    build(&variant_options("base", "v2", &out)).unwrap();
    let mut g = Golden::open("base_v2");
    let specs: Vec<animatediff_runtime::InputSpec> = ["unet_sample", "unet_timestep", "unet_encoder_hidden_states"]
        .into_iter()
        .map(|n| animatediff_runtime::InputSpec::f32(g.f32(n).shape()))
        .collect();
    let mut typed = animatediff_runtime::tract_decluttered(&out.join("unet.onnx"), &specs).unwrap();
    let convs = typed.nodes().iter().filter(|n| n.op_is::<tract_onnx::tract_core::ops::cnn::Conv>()).count();
    let done = animatediff_runtime::tract_rewrite::apply(&mut typed).unwrap();
    eprintln!("{convs} convolutions; rewritten: {done:?}");
    // down: 2 resnets × 2 convs at 4×4, 2×2 and 1×1 levels + 2 downsamplers (stride 2: kept) ;
    // mid: 4; up: 3 resnets × 2 convs at 1×1, 2×2, 4×4 + the upsamplers' convs at 2×2 and 4×4
    assert_eq!(done.small_convs, 3 * 4 + 4 + 3 * 6 + 2, "{done:?}");
    assert!(done.broadcast_constants >= 2 * 40, "{done:?}");
    // 16 spatial transformers × (self, cross) + 21 motion modules × 2 temporal self-attentions
    assert_eq!(done.block_attentions, 16 * 2 + 21 * 2, "{done:?}");
    assert_eq!(done.per_image_convs, 0, "{done:?}");
    typed.into_optimized().unwrap();
}
