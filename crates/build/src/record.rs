//! The manifest a build writes: what it was built from, how, the graphs' inputs and outputs and
//! every file's SHA-256 (see [`animatediff_runtime::manifest`] for the type and its meaning).

use std::collections::BTreeMap;
use std::path::Path;

use animatediff_formats::{ComponentKind, MotionModule};
use animatediff_runtime::manifest::{
    self, ComponentFiles, Dim, GraphFile, Graphs, Inputs, LoraInput, Manifest, MotionModuleInput, ResnetGroupNorm, TensorSpec,
    TokenizerFile, Tool,
};
use animatediff_runtime::DType;
use animatediff_models::text_encoder::SEQUENCE_LENGTH as MAX_LENGTH;

use crate::error::{io, Error};
use crate::graphs::UnetFiles;
use crate::hashes::Hashes;
use crate::model::{LoraSummary, Model};
use crate::options::BuildOptions;
use crate::reuse::executable_stamp;
use crate::{MAX_FILE_BYTES, TOKENIZER_FILE};

/// The build's name and version, and this executable's stamp.
pub(crate) fn tool() -> Tool {
    Tool { name: "build-graph".into(), version: env!("CARGO_PKG_VERSION").into(), executable: executable_stamp() }
}

/// The graphs' files, inputs and outputs: symbolic dimensions unless the build fixed them.
pub(crate) fn graphs(opts: &BuildOptions, model: &Model, unet_files: &UnetFiles) -> Graphs {
    let (h, w) = opts.latent_hw();
    let a = &model.arch;
    let d = Dim::Fixed;
    let te_out = || vec![Dim::Named("batch".into()), d(MAX_LENGTH), d(a.text_encoder.hidden_size)];
    // 77 tokens per prompt chunk (README, "Prompt syntax")
    // one context per video (batch) or per frame (batch × frames: prompt travel)
    let context = vec![Dim::Named("context_batch".into()), Dim::Named("tokens".into()), d(a.unet.cross_attention_dim)];
    let windows = vec![Dim::Named("windows".into()), Dim::Named("window_frames".into())];
    let fuse = vec![Dim::fixed_or(opts.frames, "frames"), Dim::Named("windows".into()), Dim::Named("window_frames".into())];
    let video = |c: usize| {
        vec![Dim::Named("batch".into()), d(c), Dim::fixed_or(opts.frames, "frames"), Dim::fixed_or(h, "height"), Dim::fixed_or(w, "width")]
    };
    let image = |c: usize, f: usize, names: [&str; 2]| {
        vec![Dim::Named("N".into()), d(c), Dim::fixed_or(h.map(|x| f * x), names[0]), Dim::fixed_or(w.map(|x| f * x), names[1])]
    };
    let f32 = |name: &str, shape| TensorSpec::new(name, DType::F32, shape);
    let inline = |file: &str, inputs, outputs| GraphFile { file: file.into(), external_data: None, lora_dependent_data: None, inputs, outputs };
    Graphs {
        text_encoder: inline(
            "text_encoder.onnx",
            vec![TensorSpec::new("input_ids", DType::I64, vec![Dim::Named("batch".into()), d(MAX_LENGTH)])],
            vec![f32("last_hidden_state", te_out()), f32("hidden_states", [vec![d(a.text_encoder.num_hidden_layers)], te_out()].concat())],
        ),
        unet: GraphFile {
            external_data: Some(unet_files.data.clone()),
            lora_dependent_data: Some(unet_files.lora_dependent.clone()),
            ..inline(
                "unet.onnx",
                [
                    vec![f32("sample", video(a.unet.in_channels)), f32("timestep", vec![Dim::Named("batch".into())]), f32("encoder_hidden_states", context)],
                    if opts.motion_windows { vec![TensorSpec::new("motion_windows", DType::I64, windows), f32("motion_fuse", fuse)] } else { vec![] },
                ]
                .concat(),
                vec![f32("noise_pred", video(a.unet.out_channels))],
            )
        },
        vae_decoder: inline(
            "vae_decoder.onnx",
            vec![f32("latent_sample", image(a.vae.latent_channels, 1, ["h", "w"]))],
            vec![f32("sample", image(3, 8, ["H", "W"]))],
        ),
    }
}

/// The input files with their hashes: components, motion module, LoRAs, `arch.json`.
pub(crate) fn inputs(
    opts: &BuildOptions,
    model: &Model,
    motion: &MotionModule,
    loras: &[LoraSummary],
    embeddings: &crate::embeddings::Embeddings,
    unrecognized: Vec<String>,
    hashes: &Hashes,
) -> Result<Inputs, Error> {
    let files = |k: ComponentKind| hashes.inputs(&model.files_of(k));
    let lora_input = |l: &LoraSummary| -> Result<LoraInput, Error> {
        Ok(LoraInput {
            file: hashes.input(&l.spec.path)?,
            multiplier: l.multiplier(),
            format: l.format.clone(),
            modules: l.modules,
            matched: l.matched,
            unmatched_keys: l.unmatched.clone(),
        })
    };
    Ok(Inputs {
        base: opts.base.clone(),
        personalized: opts.personalized.clone(),
        components: ComponentFiles { unet: files(ComponentKind::Unet)?, vae: files(ComponentKind::Vae)?, text_encoder: files(ComponentKind::TextEncoder)? },
        motion_module: MotionModuleInput {
            file: hashes.input(&motion.source)?,
            version: motion.version,
            detected_version: motion.detected,
            layout: format!("{:?}", motion.layout),
            mid_block: motion.has_mid_block,
            max_frames: motion.max_frames(),
        },
        loras: loras.iter().map(lora_input).collect::<Result<_, _>>()?,
        lora_scaling: opts.lora_scaling,
        arch_json: opts.arch.as_deref().map(|p| hashes.input(p)).transpose()?,
        unrecognized_keys: unrecognized,
        embeddings: embeddings
            .baked
            .iter()
            .map(|b| {
                Ok(manifest::EmbeddingInput {
                    file: hashes.input(&b.spec.path)?,
                    token: b.trigger.clone(),
                    format: b.format.clone(),
                    vectors: b.vectors,
                    first_id: b.first_id,
                })
            })
            .collect::<Result<_, Error>>()?,
    })
}

/// The manifest's `files` (SHA-256 by name) and `file_sizes` (bytes by name).
pub(crate) type FileRecords = (BTreeMap<String, String>, BTreeMap<String, u64>);

/// SHA-256 and size of each written file, by name; every file must stay under protobuf's 2 GiB
/// limit.
pub(crate) fn file_hashes(dir: &Path, written: &[String], hashes: &Hashes) -> Result<FileRecords, Error> {
    let paths: Vec<_> = written.iter().map(|f| dir.join(f)).collect();
    let mut sizes = BTreeMap::new();
    for (name, p) in written.iter().zip(&paths) {
        let size = std::fs::metadata(p).map_err(io(p))?.len();
        if size > MAX_FILE_BYTES {
            return Err(Error::FileTooLarge { path: p.clone(), size });
        }
        sizes.insert(name.clone(), size);
    }
    Ok((written.iter().cloned().zip(hashes.all(&paths)?).collect(), sizes))
}

/// The parts of a manifest that the build has computed by the time it writes it.
pub(crate) struct Parts {
    pub inputs: Inputs,
    pub graphs: Graphs,
    pub golden: Option<manifest::Golden>,
    pub files: BTreeMap<String, String>,
    pub file_sizes: BTreeMap<String, u64>,
}

/// The whole manifest.
pub(crate) fn manifest(opts: &BuildOptions, model: &Model, motion: &MotionModule, parts: Parts) -> Manifest {
    Manifest {
        format: manifest::FORMAT.into(),
        artifact_version: manifest::VERSION,
        tool: tool(),
        inputs: parts.inputs,
        architecture: model.arch.clone(),
        architecture_source: model.arch_source.clone(),
        motion_version: motion.version,
        resnet_groupnorm: ResnetGroupNorm::of(motion.version),
        max_frames: motion.max_frames(),
        per_frame_context: true,
        scheduler: animatediff_runtime::SchedulerConfig::animatediff_ddim(),
        precision: opts.precision,
        vae_precision: opts.vae_precision,
        opset: opts.graph_opset(),
        attention: opts.attention,
        graphs: parts.graphs,
        golden: parts.golden,
        tokenizer: TokenizerFile::clip(TOKENIZER_FILE),
        files: parts.files,
        file_sizes: parts.file_sizes,
    }
}

/// Writes `manifest.json` into `dir`.
pub(crate) fn write(dir: &Path, m: &Manifest) -> Result<(), Error> {
    let path = dir.join(manifest::FILE_NAME);
    std::fs::write(&path, m.to_json()).map_err(io(&path))
}
