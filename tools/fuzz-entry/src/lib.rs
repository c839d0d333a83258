//! The fuzz entry points: one function per parser that reads input a stranger can hand us, taking
//! the raw bytes of that input and driving the same public code the programs run on it.
//!
//! Each entry point must return for every input, whatever the bytes: an error is a fine outcome,
//! a panic, an abort, a hang or a huge allocation is a bug. The libFuzzer targets in `fuzz/`
//! (`cargo fuzz run <target>`, see `tools/fuzz.sh`) call these functions, and `tests/replay.rs`
//! feeds them every committed corpus file in the default test suite, so an input that once broke
//! a parser stays a test forever (RELIABILITY.md).
//!
//! Parsers that read files are given the bytes as a file in a scratch directory (one per process)
//! and opened through their public `open`, so the mapping, the container sniffing and the error
//! paths are the ones users meet.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use animatediff_formats::{
    pickle, ComponentWeights, LoadOptions, Lora, LoraScaling, LoraSet, MotionModule, SdCheckpoint, TensorFile,
};

/// A fuzz target: its name (the corpus folder `fuzz/corpus/<name>/`) and its entry point.
pub struct Target {
    /// The target's name, as `cargo fuzz run` and the corpus folder know it.
    pub name: &'static str,
    /// What it reads.
    pub what: &'static str,
    /// The entry point.
    pub run: fn(&[u8]),
}

/// Every target, in the order RELIABILITY.md lists them.
pub const TARGETS: &[Target] = &[
    Target { name: "safetensors", what: "safetensors header and tensor table, then every tensor read", run: safetensors },
    Target { name: "torch_zip", what: "PyTorch zip checkpoints: archive, data.pkl, storages, views", run: torch_zip },
    Target { name: "pickle", what: "the restricted pickle VM alone", run: pickle_vm },
    Target { name: "ldm_checkpoint", what: "SD1.5 single files: LDM key mapping and architecture inference", run: ldm_checkpoint },
    Target { name: "lora", what: "LoRA key matching against a nano model and merging", run: lora },
    Target { name: "motion_module", what: "motion-module detection, versions and site checks", run: motion_module },
    Target { name: "embedding", what: "textual-inversion embeddings: format detection, shape bounds, values", run: embedding },
    Target { name: "prompt_config", what: "YAML prompt configs (--config)", run: prompt_config },
    Target { name: "npy", what: ".npy latents (--latents-in)", run: npy },
    Target { name: "manifest", what: "the artifact manifest (manifest.json) and its validation", run: manifest },
    Target { name: "tokenizer", what: "CLIP tokenisation of any prompt text", run: tokenizer },
    Target { name: "prompt", what: "A1111 prompt syntax: weights, BREAK, chunks, trigger words", run: prompt },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// This process's scratch directory (removed with the process's temp files by the OS; the
/// libFuzzer worker lives as long as the campaign).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("animatediff-fuzz").tempdir().expect("a scratch directory")).path()
}

/// `data` as the file `name` in the scratch directory.
fn as_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("writing the scratch file");
    path
}

/// Reads every tensor of a file the way the builder does (f32, or i64 for integer tensors).
fn read_all(file: &TensorFile) {
    let keys: Vec<String> = file.keys().map(str::to_owned).collect();
    for key in keys {
        let _ = file.info(&key).map(|i| i.numel());
        if file.read_f32(&key).is_err() {
            let _ = file.read_i64(&key);
        }
    }
}

/// A safetensors file: header, tensor table, every tensor's bytes.
pub fn safetensors(data: &[u8]) {
    if let Ok(file) = TensorFile::open(as_file("input.safetensors", data)) {
        read_all(&file);
    }
}

/// A PyTorch zip checkpoint: the archive, its pickle, the storages and the views into them.
pub fn torch_zip(data: &[u8]) {
    if let Ok(file) = TensorFile::open(as_file("input.ckpt", data)) {
        let _ = file.skipped_entries().len();
        read_all(&file);
    }
}

/// The pickle VM on its own (the bytes of a `data.pkl`).
pub fn pickle_vm(data: &[u8]) {
    let _ = pickle::load(data);
}

/// An SD1.5 single-file checkpoint (any container): key mapping into components, then the
/// architecture inferred from their shapes, as `build-graph` and `inspect` do.
pub fn ldm_checkpoint(data: &[u8]) {
    let path = as_file("model.safetensors", data);
    let Ok(checkpoint) = SdCheckpoint::open(&path, &LoadOptions::default()) else { return };
    let _ = animatediff_build::model::architecture(&checkpoint, None);
    let _ = animatediff_build::model::architecture(&checkpoint, Some(&nano_model().1));
    let _ = animatediff_build::model::check_components(&checkpoint);
}

/// The fixture architecture of the seeds and of the model LoRAs are matched against: SD1.5's
/// topology (every block, key and layer count) at widths of 4, so that a whole model file is a few
/// tens of kilobytes and a campaign runs thousands of inputs a second. Its head and group counts
/// are in the fixture set's `arch.json`.
pub fn nano_arch() -> animatediff_fixtures::TinyArch {
    animatediff_fixtures::TinyArch {
        unet_channels: [4, 4, 4, 4],
        unet_heads: 2,
        context_dim: 4,
        text_vocab: 16,
        text_width: 4,
        text_heads: 2,
        text_mlp: 8,
        vae_channels: [4, 4, 4, 4],
        groups: 2,
        motion_heads: 2,
        ..Default::default()
    }
}

/// The nano fixture set (written once per process), its base model and its `arch.json`.
fn nano_model() -> &'static (SdCheckpoint, PathBuf) {
    static MODEL: OnceLock<(SdCheckpoint, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let set = animatediff_fixtures::write_fixture_set_with(&scratch().join("nano"), 7, &nano_arch())
            .expect("writing the nano fixture set");
        let base = SdCheckpoint::open(set.path("base.safetensors"), &LoadOptions::default()).expect("the nano base opens");
        (base, set.path("arch.json"))
    })
}

/// A LoRA file: its keys matched against the nano model, then every weight it touches merged
/// under both scalings.
pub fn lora(data: &[u8]) {
    let model = &nano_model().0;
    let components: Vec<&ComponentWeights> = [&model.unet, &model.vae, &model.text_encoder].into_iter().flatten().collect();
    let path = as_file("lora.safetensors", data);
    for scaling in [LoraScaling::Kohya, LoraScaling::Official] {
        let Ok(lora) = Lora::open(&path) else { return };
        let Ok(set) = LoraSet::new(vec![(lora, 0.8)], scaling, &components) else { return };
        for c in &components {
            let names: Vec<String> = c.names().map(str::to_owned).collect();
            for name in names.iter().filter(|n| set.touches(c.kind, n)) {
                let _ = set.merged(c, name);
            }
        }
    }
}

/// A motion module (any container): detection, version choice and the builder's site checks
/// against the nano model's architecture.
pub fn motion_module(data: &[u8]) {
    let path = as_file("motion.ckpt", data);
    let Ok(module) = MotionModule::open(&path, None) else { return };
    let _ = module.max_frames();
    let (model, arch_json) = nano_model();
    if let Ok((arch, _)) = animatediff_build::model::architecture(model, Some(arch_json)) {
        let _ = animatediff_build::model::check_motion_module(&module, &arch, None);
        let _ = animatediff_build::model::check_motion_module(&module, &arch, Some(16));
    }
}

/// A textual-inversion embedding (any container), read as `build-graph --embedding` reads it, then
/// checked against an SD1.x text encoder's width.
pub fn embedding(data: &[u8]) {
    let path = as_file("embedding.pt", data);
    if let Ok(e) = animatediff_formats::read_embedding(&path) {
        let _ = e.vector(e.vectors - 1);
        let _ = e.check_width(&path, 768);
    }
}

/// A YAML prompt config, as `animate --config` reads it.
pub fn prompt_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = animatediff_cli::prompt_config::parse(text, Path::new("prompts.yaml"));
    }
}

/// A `.npy` of initial latents, as `animate --latents-in` reads it (for a 2-frame 8×8 video):
/// header, shape check, data, finiteness.
pub fn npy(data: &[u8]) {
    let _ = animatediff_cli::latents::parse(data, &[1, 4, 2, 8, 8], Path::new("latents.npy"));
}

/// An artifact's `manifest.json`: parsing and every check `Artifact::open` makes without files.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = animatediff_runtime::Manifest::from_json(text) {
        let _ = m.validate();
        let _ = m.to_json();
    }
}

/// The CLIP tokenizer every artifact ships, loaded once.
fn clip() -> &'static animatediff_runtime::ClipTokenizer {
    static CLIP: OnceLock<animatediff_runtime::ClipTokenizer> = OnceLock::new();
    CLIP.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/build/assets/clip_tokenizer.json");
        animatediff_runtime::ClipTokenizer::from_file(&path).expect("the committed CLIP tokenizer loads")
    })
}

/// The CLIP tokenizer with two trigger words (a 3-vector `easyneg`, a 1-vector `<toy>`), loaded once.
fn clip_with_triggers() -> &'static animatediff_runtime::ClipTokenizer {
    static CLIP: OnceLock<animatediff_runtime::ClipTokenizer> = OnceLock::new();
    CLIP.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/build/assets/clip_tokenizer.json");
        let mut t = animatediff_runtime::ClipTokenizer::from_file(&path).expect("the committed CLIP tokenizer loads");
        t.add_trigger("easyneg", 49408..49411).expect("a word");
        t.add_trigger("<toy>", 49411..49412).expect("a word");
        t
    })
}

/// Prompt text (lossily decoded) through A1111's parser and chunker and the plain reading, with
/// trigger words: either an error, or 1 to 32 chunks of 77 ids and finite weights, BOS first and
/// EOS last.
pub fn prompt(data: &[u8]) {
    use animatediff_runtime::prompt::{CHUNK_LENGTH, MAX_CHUNKS};
    let text = String::from_utf8_lossy(data);
    for syntax in animatediff_runtime::PromptSyntax::ALL {
        if let Ok(p) = clip_with_triggers().tokenize(&text, syntax) {
            assert!((1..=MAX_CHUNKS).contains(&p.chunks.len()), "{} chunks", p.chunks.len());
            for c in &p.chunks {
                assert!(c.ids.len() == CHUNK_LENGTH && c.weights.len() == CHUNK_LENGTH);
                assert!(c.ids[0] == 49406 && c.ids[CHUNK_LENGTH - 1] == 49407);
                assert!(c.ids.iter().all(|&i| (0..49412).contains(&i)) && c.weights.iter().all(|w| w.is_finite()));
            }
        }
    }
}

/// Prompt text (lossily decoded, as a YAML or command-line prompt would be) through the CLIP
/// tokenizer.
pub fn tokenizer(data: &[u8]) {
    let prompt = String::from_utf8_lossy(data);
    if let Ok(ids) = clip().encode(&prompt) {
        assert_eq!(ids.len(), 77, "CLIP ids are always 77 long");
    }
}
