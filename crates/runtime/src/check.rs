//! `animate check`: runs every graph of an artifact on two runtimes, or on one runtime against a
//! golden bundle, and compares (max abs error, max relative error = max abs error / max |reference|,
//! against a tolerance). Also verifies every file against the manifest's SHA-256.
//!
//! The golden bundle (`golden.npz` in the artifact) is written by `build-graph`: seeded inputs at
//! small shapes and the outputs tract computed for them, so an artifact can be checked anywhere
//! without its source checkpoints. Array names are `<graph>.<input or output name>`.

use std::io::Write;
use std::path::Path;

use crate::artifact::Artifact;
use crate::context::{ContextMethod, ContextOptions};
use crate::{DType, Runtime, Tensor};
use crate::error::{Error, Result};
use crate::manifest::Precision;
use crate::noise;
use crate::tokenizer::{BOS, EOS, MAX_LENGTH};

/// One graph's inputs (in graph order) and, from a bundle, its expected output.
#[derive(Clone, Debug)]
pub struct Case {
    /// `text_encoder`, `unet` or `vae_decoder`.
    pub graph: String,
    /// Input names and values, in the graph's order.
    pub inputs: Vec<(String, Tensor)>,
    /// The output compared.
    pub output: String,
    /// Its shape and values, from a bundle or a reference run.
    pub expected: Option<(Vec<usize>, Vec<f32>)>,
}

/// Shapes of the small check inputs.
#[derive(Clone, Copy, Debug)]
pub struct SmallShapes {
    /// Latent channels.
    pub channels: usize,
    /// Text-encoder width.
    pub context: usize,
    /// Frames of the UNet's input.
    pub frames: usize,
    /// Latent height and width.
    pub latent_hw: (usize, usize),
    /// Whether the UNet takes one context per frame (artifacts built since issue 19): the case
    /// then gives one, so that the check covers it.
    pub per_frame: bool,
    /// Whether the UNet has the motion-window inputs (`build-graph --motion-windows`): the case
    /// then runs FreeNoise windows of 3 frames.
    pub windows: bool,
}

impl SmallShapes {
    /// 4 frames (or the artifact's fixed count) of 8×8 latents (or its fixed size).
    pub fn new(channels: usize, context: usize, max_frames: usize, fixed_frames: Option<usize>, fixed_hw: Option<(usize, usize)>) -> Self {
        Self { channels, context, frames: fixed_frames.unwrap_or(4.min(max_frames)), latent_hw: fixed_hw.unwrap_or((8, 8)), per_frame: true, windows: false }
    }

    /// [`SmallShapes::new`] for an artifact's architecture and fixed dimensions.
    pub fn of(a: &Artifact) -> Self {
        let s = Self::new(a.latent_channels(), a.context_dim(), a.max_frames(), a.fixed_frames(), a.fixed_latent_hw());
        Self { per_frame: a.per_frame_context(), windows: a.motion_windows(), ..s }
    }
}

/// Small, seeded inputs for the three graphs.
pub fn small_inputs(s: SmallShapes) -> Vec<Case> {
    let (c, d, f) = (s.channels, s.context, s.frames);
    let (h, w) = s.latent_hw;
    let mut ids = vec![EOS; MAX_LENGTH];
    ids[0] = BOS;
    for (i, id) in ids.iter_mut().enumerate().skip(1).take(8) {
        *id = 320 + 997 * i as i64; // ordinary vocabulary ids
    }
    ids[9] = EOS;
    let mut unet = vec![
        ("sample".into(), Tensor::F32 { shape: vec![1, c, f, h, w], data: noise::gaussian(1, c * f * h * w) }),
        ("timestep".into(), Tensor::F32 { shape: vec![1], data: vec![501.0] }),
    ];
    if s.per_frame {
        unet.push(("encoder_hidden_states".into(), Tensor::F32 { shape: vec![f, MAX_LENGTH, d], data: noise::gaussian(2, f * MAX_LENGTH * d) }));
    } else {
        unet.push(("encoder_hidden_states".into(), Tensor::F32 { shape: vec![1, MAX_LENGTH, d], data: noise::gaussian(2, MAX_LENGTH * d) }));
    }
    if s.windows {
        // FreeNoise windows of 3 frames starting every 2 (with its last-window rule)
        let ctx = ContextOptions { method: ContextMethod::FreeNoise, length: 3.min(f), overlap: 1.min(f - 1), ..Default::default() };
        let fusion = ctx.fusion(f);
        let (windows, fuse) = fusion.motion_inputs();
        let (n, l) = (fusion.windows.len(), fusion.window_len());
        unet.push(("motion_windows".into(), Tensor::I64 { shape: vec![n, l], data: windows }));
        unet.push(("motion_fuse".into(), Tensor::F32 { shape: vec![f, n, l], data: fuse }));
    }
    vec![
        Case {
            graph: "text_encoder".into(),
            inputs: vec![("input_ids".into(), Tensor::I64 { shape: vec![1, MAX_LENGTH], data: ids })],
            output: "last_hidden_state".into(),
            expected: None,
        },
        Case {
            graph: "unet".into(),
            inputs: unet,
            output: "noise_pred".into(),
            expected: None,
        },
        Case {
            graph: "vae_decoder".into(),
            inputs: vec![("latent_sample".into(), Tensor::F32 { shape: vec![1, c, h, w], data: noise::gaussian(3, c * h * w) })],
            output: "sample".into(),
            expected: None,
        },
    ]
}

/// Runs one case on `runtime`.
pub fn run(runtime: &Runtime, dir: &Path, graph_file: &str, case: &Case) -> Result<(Vec<usize>, Vec<f32>)> {
    let specs: Vec<_> = case.inputs.iter().map(|(_, t)| t.spec()).collect();
    let mut session = runtime.load(&dir.join(graph_file), &specs)?;
    let inputs: Vec<Tensor> = case.inputs.iter().map(|(_, t)| t.clone()).collect();
    session.run(&inputs)
}

fn npy_bytes<A: ndarray_npy::WritableElement>(shape: &[usize], data: &[A]) -> Result<Vec<u8>> {
    use ndarray_npy::WriteNpyExt;
    let a = ndarray::ArrayViewD::from_shape(shape, data).map_err(|e| Error::Input(e.to_string()))?;
    let mut v = Vec::new();
    a.write_npy(&mut v).map_err(|e| Error::Input(e.to_string()))?;
    Ok(v)
}

/// Writes cases with their outputs as an `.npz` (stored entries, fixed timestamps: the same
/// numbers give the same bytes).
pub fn write_bundle(path: &Path, cases: &[Case]) -> Result<()> {
    let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
    let z = |e: zip::result::ZipError| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e) };
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).map_err(io)?);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for case in cases {
        for (name, t) in &case.inputs {
            let bytes = match t {
                Tensor::F32 { shape, data } => npy_bytes(shape, data)?,
                Tensor::I64 { shape, data } => npy_bytes(shape, data)?,
            };
            zip.start_file(format!("{}.{name}.npy", case.graph), opts).map_err(z)?;
            zip.write_all(&bytes).map_err(io)?;
        }
        let (shape, data) = case.expected.as_ref().ok_or_else(|| Error::Input(format!("{}: no output to store", case.graph)))?;
        zip.start_file(format!("{}.{}.npy", case.graph, case.output), opts).map_err(z)?;
        zip.write_all(&npy_bytes(shape, data)?).map_err(io)?;
    }
    zip.finish().map_err(z)?;
    Ok(())
}

/// The most bytes one array of any golden bundle may hold, declared or inflated (a bundle's
/// arrays are small seeded inputs and their outputs: a few MB even for a model built at a fixed
/// 2048×2048).
pub const MAX_GOLDEN_ARRAY: u64 = 256 << 20;

/// The most bytes one array of `artifact`'s bundle may hold: its largest array (the token ids'
/// or context's 77 × width, the latents', or the decoded frame's 3 × 8h × 8w values, at the
/// golden's or the check's small shapes) at 8 bytes a value plus a header, at least 1 MiB and at
/// most [`MAX_GOLDEN_ARRAY`].
pub fn golden_array_limit(artifact: &Artifact) -> u64 {
    let s = SmallShapes::of(artifact);
    let (mut f, (mut h, mut w)) = (s.frames, s.latent_hw);
    if let Some(g) = &artifact.manifest.golden {
        (f, h, w) = (f.max(g.frames), h.max(g.latent_height), w.max(g.latent_width));
    }
    let values = [MAX_LENGTH * s.context, s.channels * f * h * w, 3 * 64 * h * w].into_iter().fold(0u64, |m, v| m.max(v as u64));
    (values.saturating_mul(8) + 4096).clamp(1 << 20, MAX_GOLDEN_ARRAY)
}

/// Reads a bundle written by [`write_bundle`] for the graphs of `artifact`. Every array's size,
/// as its zip entry declares it and as it inflates, is bounded by [`golden_array_limit`], and its
/// `.npy` header by the bytes there ([`crate::npy::read`]), before anything is allocated.
pub fn read_bundle(path: &Path, artifact: &Artifact) -> Result<Vec<Case>> {
    let bad = |reason: String| Error::Artifact { path: path.to_path_buf(), reason };
    let limit = golden_array_limit(artifact);
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open the golden bundle: {e}")))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("not an .npz: {e}")))?;
    let mut read = |name: &str, is_i64: bool| -> Result<Tensor> {
        let entry = format!("{name}.npy");
        if zip.index_for_name(&entry).is_none() {
            return Err(bad(format!("no array `{name}`")));
        }
        let bytes = animatediff_formats::tensor_file::read_zip_entry(&mut zip, &entry, limit).map_err(&bad)?;
        let wrong = |e: String| bad(format!("`{name}`: {e}"));
        Ok(if is_i64 {
            let (shape, data) = crate::npy::read::<i64>(&bytes).map_err(wrong)?;
            Tensor::I64 { shape, data }
        } else {
            let (shape, data) = crate::npy::read::<f32>(&bytes).map_err(wrong)?;
            Tensor::F32 { shape, data }
        })
    };
    let mut cases = Vec::new();
    for (graph, g) in artifact.manifest.graphs.iter() {
        let mut inputs = Vec::new();
        for i in &g.inputs {
            let t = read(&format!("{graph}.{}", i.name), i.dtype == DType::I64)?;
            inputs.push((i.name.clone(), t));
        }
        let output = g.outputs.first().map(|o| o.name.clone()).unwrap_or_default();
        let expected = match read(&format!("{graph}.{output}"), false)? {
            Tensor::F32 { shape, data } => Some((shape, data)),
            _ => None,
        };
        cases.push(Case { graph: graph.into(), inputs, output, expected });
    }
    Ok(cases)
}

/// One row of the check's table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// The graph, or `files` for the hash check.
    pub graph: String,
    /// What was compared with what (`cpu vs tract`, `tract vs golden`).
    pub compared: String,
    /// Max |got − reference|.
    pub max_abs_error: f64,
    /// Max abs error over max |reference|.
    pub max_relative_error: f64,
    /// The largest relative error that passes.
    pub tolerance: f64,
    /// Whether the relative error is within the tolerance (and the output finite).
    pub pass: bool,
    /// Not compared: the runtime cannot run this graph (`detail` says why).
    pub skipped: bool,
    /// Why it failed or was skipped; empty otherwise.
    pub detail: String,
}

impl Row {
    /// A graph the runtime under check cannot run (see [`crate::attention_fit::cannot_run`]).
    pub fn skipped(graph: &str, compared: &str, reason: String) -> Row {
        Row {
            graph: graph.into(),
            compared: compared.into(),
            max_abs_error: 0.0,
            max_relative_error: 0.0,
            tolerance: 0.0,
            pass: true,
            skipped: true,
            detail: reason,
        }
    }
}

/// Compares `got` with `reference`: max abs error, and that over max |reference|.
pub fn compare(graph: &str, compared: &str, got: &(Vec<usize>, Vec<f32>), reference: &(Vec<usize>, Vec<f32>), tolerance: f64) -> Row {
    if got.0 != reference.0 {
        return Row {
            graph: graph.into(),
            compared: compared.into(),
            max_abs_error: f64::INFINITY,
            max_relative_error: f64::INFINITY,
            tolerance,
            pass: false,
            skipped: false,
            detail: format!("shape {:?} vs {:?}", got.0, reference.0),
        };
    }
    let max_ref = reference.1.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    let finite = got.1.iter().all(|v| v.is_finite());
    let max_abs = got.1.iter().zip(&reference.1).fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    let max_abs = if finite { max_abs } else { f64::INFINITY };
    let rel = if max_ref > 0.0 { max_abs / max_ref } else { max_abs };
    Row {
        graph: graph.into(),
        compared: compared.into(),
        max_abs_error: max_abs,
        max_relative_error: rel,
        tolerance,
        pass: rel <= tolerance,
        skipped: false,
        detail: if finite { String::new() } else { "non-finite output".into() },
    }
}

/// Verifies every file listed in the manifest against its SHA-256.
pub fn verify_files(a: &Artifact) -> Row {
    let (mut changed, mut missing) = (Vec::new(), Vec::new());
    let files = &a.manifest.files;
    for (name, sha) in files {
        match crate::artifact::sha256_file(&a.dir.join(name)) {
            Ok(got) if &got == sha => {}
            Ok(_) => changed.push(name.as_str()),
            Err(e) => missing.push(format!("{name} ({e})")),
        }
    }
    let mut detail = Vec::new();
    if !changed.is_empty() {
        detail.push(format!("changed since the build (SHA-256 differs from the manifest's): {}", changed.join(", ")));
    }
    if !missing.is_empty() {
        detail.push(format!("unreadable: {}", missing.join(", ")));
    }
    Row {
        graph: "files".into(),
        compared: format!("{} files vs manifest SHA-256", files.len()),
        max_abs_error: 0.0,
        max_relative_error: 0.0,
        tolerance: 0.0,
        pass: detail.is_empty(),
        skipped: false,
        detail: detail.join("; "),
    }
}

/// The default tolerance (relative to max |reference|) for an artifact's precision.
pub fn default_tolerance(a: &Artifact) -> f64 {
    if a.manifest.precision == Precision::Fp16 {
        3e-2
    } else {
        1e-4
    }
}
