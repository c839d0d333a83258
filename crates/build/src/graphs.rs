//! Writing the three ONNX graphs of an artifact: the text encoder (weights inline), the UNet with
//! its motion modules (weights as external data, the LoRA-dependent ones in a file of their own)
//! and the VAE decoder (weights inline), with a progress bar over the weights written.

use std::path::Path;

use animatediff_formats::{LoraSet, MotionModule};
use animatediff_models::{MotionConfig, TextEncoder, Unet3d, UnetConfig, UnetShapes, VaeDecoder};
use animatediff_runtime::Precision;
use onnx_writer::{external_data_path, DataSet, ElemType, ExternalData, Graph, WeightStorage};

use crate::error::{io, Error};
use crate::hashes::Hashes;
use crate::model::Model;
use crate::options::BuildOptions;
use crate::reuse::{self, UnetReuse};

const PRODUCER: &str = concat!("build-graph ", env!("CARGO_PKG_VERSION"));

/// The UNet's external-data files, as written.
pub(crate) struct UnetFiles {
    /// All of them, in order.
    pub data: Vec<String>,
    /// Those holding weights a LoRA changed.
    pub lora_dependent: Vec<String>,
    /// Bytes taken unchanged from the previous artifact (0 if none).
    pub reused_bytes: u64,
}

/// What every graph of one build shares: options, the model and its LoRAs, the progress bar.
pub(crate) struct GraphWriter<'a> {
    pub opts: &'a BuildOptions,
    pub dir: &'a Path,
    pub model: &'a Model,
    pub motion: &'a MotionModule,
    pub loras: Option<&'a LoraSet>,
    /// Textual-inversion vectors appended to the text encoder's token table.
    pub extra_tokens: &'a [f32],
    progress: Progress,
}

impl<'a> GraphWriter<'a> {
    pub fn new(opts: &'a BuildOptions, dir: &'a Path, model: &'a Model, motion: &'a MotionModule, loras: Option<&'a LoraSet>, extra_tokens: &'a [f32]) -> Self {
        let vae_decoder_weights = model.vae().names().filter(|n| !n.starts_with("encoder.")).count();
        let total = model.unet().len() + motion.weights.len() + model.text_encoder().len() + vae_decoder_weights;
        let progress = Progress::new(opts.quiet, total as u64);
        Self { opts, dir, model, motion, loras, extra_tokens, progress }
    }

    /// Writes `text_encoder.onnx`, `unet.onnx` (+ data) and `vae_decoder.onnx`.
    pub fn write_all(&self, hashes: &Hashes, unet_reuse: Option<UnetReuse>) -> Result<UnetFiles, Error> {
        self.text_encoder()?;
        let unet = self.unet(hashes, unet_reuse)?;
        self.vae_decoder()?;
        self.progress.finish();
        Ok(unet)
    }

    fn graph(&self, name: &'static str, storage: WeightStorage, precision: Precision) -> Graph {
        let elem = match precision {
            Precision::Fp32 => ElemType::F32,
            Precision::Fp16 => ElemType::F16,
        };
        let mut g = Graph::new(name, self.opts.graph_opset(), storage);
        g.weight_type = elem;
        g.act = elem;
        g.attention_form = self.opts.attention;
        self.progress.attach(&mut g, name);
        g
    }

    fn text_encoder(&self) -> Result<(), Error> {
        let path = self.dir.join("text_encoder.onnx");
        let mut g = self.graph("text_encoder", WeightStorage::Inline, self.opts.precision);
        let te = TextEncoder::new(&mut g, self.model.arch.text_encoder.clone(), self.model.text_encoder(), self.loras, self.extra_tokens)?;
        te.build(&mut g, None);
        g.finish(&path, PRODUCER, &[]).map_err(io(&path))?;
        Ok(())
    }

    fn unet(&self, hashes: &Hashes, unet_reuse: Option<UnetReuse>) -> Result<UnetFiles, Error> {
        let (opts, motion) = (self.opts, self.motion);
        let path = self.dir.join("unet.onnx");
        let data_path = external_data_path(&path);
        let (storage, reused_bytes) = match unet_reuse.and_then(|r| reuse::link_unet_files(r, self.dir, hashes)) {
            Some((reused, bytes)) => (ExternalData::reusing(opts.max_file_bytes, reused), bytes),
            None => (ExternalData::new(&data_path, opts.max_file_bytes).map_err(io(&data_path))?, 0),
        };
        let storage = WeightStorage::External(storage.with_volatile(&self.dir.join("unet.onnx.lora.data")));
        let mut g = self.graph("unet", storage, opts.precision);
        let a = &self.model.arch;
        let cfg = UnetConfig {
            arch: a.unet.clone(),
            motion_version: motion.version,
            motion: MotionConfig { heads: a.motion_module.num_attention_heads, groups: a.motion_module.norm_num_groups, max_frames: motion.max_frames() },
            motion_mid_block: motion.has_mid_block,
        };
        let net = Unet3d::new(&mut g, cfg, self.model.unet(), self.loras, &motion.weights, self.loras)?;
        let (height, width) = opts.latent_hw();
        net.build(&mut g, &UnetShapes { batch: None, frames: opts.frames, height, width, motion_windows: opts.motion_windows });
        let files = UnetFiles { data: g.external_files(), lora_dependent: g.external_files_in(DataSet::Volatile), reused_bytes };
        g.finish(&path, PRODUCER, &[]).map_err(io(&path))?;
        Ok(files)
    }

    fn vae_decoder(&self) -> Result<(), Error> {
        let path = self.dir.join("vae_decoder.onnx");
        let mut g = self.graph("vae_decoder", WeightStorage::Inline, self.opts.vae_precision);
        let dec = VaeDecoder::new(&mut g, self.model.arch.vae.clone(), self.model.vae())?;
        let (h, w) = self.opts.latent_hw();
        dec.build(&mut g, h, w);
        g.finish(&path, PRODUCER, &[]).map_err(io(&path))?;
        Ok(())
    }
}

/// A progress bar over the weights written, or nothing when quiet.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(quiet: bool, total: u64) -> Self {
        if quiet {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total);
        let template = "{spinner} {msg:<14} [{bar:40}] {pos}/{len} tensors {binary_bytes_per_sec}";
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
        Progress(Some(bar))
    }

    fn attach(&self, g: &mut Graph, graph: &'static str) {
        if let Some(bar) = &self.0 {
            bar.set_message(match graph {
                "text_encoder" => "text encoder",
                "unet" => "UNet",
                _ => "VAE decoder",
            });
            let bar = bar.clone();
            g.on_weight(move |_, _| bar.inc(1));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
