//! Writes the seed inputs of every fuzz target into `<dir>/<target>/`: the fixture tool's nano
//! model files in each format (the real key layouts) and its embeddings, the pickles inside its torch zips, a
//! committed artifact manifest, official-style prompt configs, valid and lying `.npy` headers and
//! prompts. `tools/fuzz.sh seed` runs it; the campaign grows and minimises the corpus from there.
//!
//! Usage: fuzz-seeds <dir>

use std::io::Read;
use std::path::{Path, PathBuf};

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds <dir>");
        std::process::exit(2);
    };
    if let Err(e) = write_seeds(&dir) {
        eprintln!("fuzz-seeds: {e}");
        std::process::exit(1);
    }
}

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(name), bytes)
}

fn write_seeds(dir: &Path) -> std::io::Result<()> {
    let fixtures = tempfile::tempdir()?;
    let set = animatediff_fixtures::write_fixture_set_with(fixtures.path(), 7, &animatediff_fuzz_entry::nano_arch())?;
    let read = |name: &str| std::fs::read(set.path(name));
    for (target, files) in [
        ("safetensors", &["lora.safetensors", "mm_v2.safetensors", "personalized.safetensors"][..]),
        ("torch_zip", &["mm_v1.ckpt", "mm_v3.ckpt"][..]),
        ("ldm_checkpoint", &["base.safetensors", "personalized.safetensors"][..]),
        ("lora", &["lora.safetensors"][..]),
        ("motion_module", &["mm_v1.ckpt", "mm_v2.safetensors", "mm_v3.ckpt", "mm_v2_diffusers.safetensors"][..]),
    ] {
        for f in files {
            put(dir, target, f, &read(f)?)?;
        }
    }
    for e in animatediff_fixtures::embeddings::EMBEDDINGS {
        let name = e.file.rsplit('/').next().unwrap_or(e.file);
        put(dir, "embedding", name, &read(e.file)?)?;
    }
    write_small_seeds(dir)?;
    for f in ["mm_v1.ckpt", "mm_v3.ckpt"] {
        put(dir, "pickle", &format!("{f}.data.pkl"), &data_pkl(&set.path(f))?)?;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../graphs/micro_v2/manifest.json");
    put(dir, "manifest", "micro_v2.json", &std::fs::read(manifest)?)?;
    for (i, text) in PROMPT_CONFIGS.iter().enumerate() {
        put(dir, "prompt_config", &format!("config{i}.yaml"), text.as_bytes())?;
    }
    for (name, bytes) in npy_seeds() {
        put(dir, "npy", name, &bytes)?;
    }
    for (i, text) in PROMPTS.iter().enumerate() {
        put(dir, "tokenizer", &format!("prompt{i}.txt"), text.as_bytes())?;
        put(dir, "prompt", &format!("prompt{i}.txt"), text.as_bytes())?;
    }
    for (i, text) in A1111_PROMPTS.iter().enumerate() {
        put(dir, "prompt", &format!("a1111-{i}.txt"), text.as_bytes())?;
    }
    Ok(())
}

/// Prompts in A1111's syntax: weights, nesting, escapes, unbalanced brackets, BREAK, trigger words,
/// commas near chunk ends.
const A1111_PROMPTS: &[&str] = &[
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "(masterpiece:1.2), best quality, (red fox BREAK blue bird), [[bokeh]], \\(literal\\)",
    "easyneg, (EasyNeg:1.4), a <toy> BREAK BREAK (a ( b : .5 ) c:-1) [x (y] z) \\ :1.5)",
    "w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, w, easyneg, w, w",
];

/// Small inputs beside the whole-model files, so that a campaign spends most of its executions on
/// inputs of a few kilobytes (thousands a second) and mutates the structure, not tensor bytes:
/// a few tensors of each dtype in both containers, a LoRA of a handful of modules, and the text
/// encoder of a single file alone.
fn write_small_seeds(dir: &Path) -> std::io::Result<()> {
    use animatediff_fixtures::tensors::write_safetensors;
    use animatediff_fixtures::torch_zip::{self, Wrapper};
    use animatediff_fixtures::{Data, Tensor};
    let scratch = tempfile::tempdir()?;
    let tensor = |name: &str, shape: &[usize]| {
        let n = shape.iter().product::<usize>();
        Tensor { name: name.into(), shape: shape.to_vec(), data: Data::F32((0..n).map(|i| (i as f32 * 0.7).sin()).collect()) }
    };
    let few = vec![
        tensor("a.weight", &[2, 3]),
        tensor("b.bias", &[4]).to_f16(),
        Tensor { name: "position_ids".into(), shape: vec![1, 3], data: Data::I64(vec![0, 1, 2]) },
        tensor("scalar", &[]),
    ];
    let small = |name: &str, write: &dyn Fn(&Path) -> std::io::Result<()>| -> std::io::Result<Vec<u8>> {
        let path = scratch.path().join(name);
        write(&path)?;
        std::fs::read(path)
    };
    put(dir, "safetensors", "few.safetensors", &small("few.safetensors", &|p| write_safetensors(p, &few))?)?;
    put(dir, "torch_zip", "few.ckpt", &small("few.ckpt", &|p| torch_zip::write(p, &few, Wrapper::None))?)?;
    put(dir, "torch_zip", "few_state_dict.ckpt", &small("few_sd.ckpt", &|p| torch_zip::write(p, &few, Wrapper::StateDict))?)?;
    put(dir, "pickle", "few_state_dict.data.pkl", &data_pkl(&dir.join("torch_zip/few_state_dict.ckpt"))?)?;

    let arch = animatediff_fuzz_entry::nano_arch();
    let model = animatediff_fixtures::sd15::image_model(7, "base", &arch);
    let lora = animatediff_fixtures::lora::kohya_lora(7, &model);
    let modules: Vec<&str> = lora.iter().filter_map(|t| t.name.split('.').next()).collect();
    let keep: Vec<&str> = [modules.first(), modules.last()].into_iter().flatten().copied().collect();
    let lora_small: Vec<Tensor> = lora.iter().filter(|t| keep.iter().any(|m| t.name.starts_with(&format!("{m}.")))).cloned().collect();
    put(dir, "lora", "two_modules.safetensors", &small("lora2.safetensors", &|p| write_safetensors(p, &lora_small))?)?;

    let base = animatediff_fixtures::sd_checkpoint_tensors(7, "base", &arch, &Default::default());
    let text: Vec<Tensor> = base.iter().filter(|t| t.name.starts_with("cond_stage_model.")).cloned().collect();
    put(dir, "ldm_checkpoint", "text_encoder_only.safetensors", &small("text.safetensors", &|p| write_safetensors(p, &text))?)?;
    Ok(())
}

/// The `data.pkl` of a torch zip.
fn data_pkl(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path)?).map_err(std::io::Error::other)?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| std::io::Error::other("no data.pkl"))?;
    let mut bytes = Vec::new();
    zip.by_name(&name).map_err(std::io::Error::other)?.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A `.npy` of f32 whose header claims `shape` and which holds `values` elements.
fn npy(shape: &str, values: usize) -> Vec<u8> {
    let data: Vec<f32> = (0..values).map(|i| (i as f32 * 0.37).sin()).collect();
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    animatediff_fixtures::npy::v1(&dict, &animatediff_fixtures::npy::f32_bytes(&data))
}

fn npy_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("valid.npy", npy("(1, 4, 2, 8, 8)", 512)),
        ("lying_shape.npy", npy("(1, 4, 2, 1048576, 1048576)", 16)),
        ("short.npy", npy("(1, 4, 2, 8, 8)", 100)),
        ("wrong_shape.npy", npy("(1, 4, 8, 8)", 256)),
    ]
}

const PROMPT_CONFIGS: &[&str] = &[
    "- prompt:\n    - \"a red circle moving left\"\n    - \"masterpiece, best quality, a cat\"\n  n_prompt:\n    - \"worst quality\"\n  seed: [42, -1]\n  steps: 25\n  guidance_scale: 7.5\n  W: 512\n  H: 512\n  L: 16\n",
    "ToonYou:\n  dreambooth_path: models/DreamBooth_LoRA/toonyou_beta3.safetensors\n  motion_module:\n    - models/Motion_Module/mm_sd_v14.ckpt\n  lora_model_path: ''\n  seed: 10788741199826055526\n  steps: 25\n  guidance_scale: 7.5\n  prompt:\n    - 'best quality, masterpiece, 1girl, looking at viewer'\n  n_prompt:\n    - ''\n",
    "[{prompt: [a, b], n_prompt: [c], seed: 1, steps: 4, guidance_scale: 1.5, W: 64, H: 64, L: 2}]\n",
];

const PROMPTS: &[&str] = &[
    "a red circle moving left",
    "masterpiece, best quality, 1girl, (smiling:1.2), [blue sky], <lora:detail:0.5>, BREAK city at night",
    "",
    "日本語のプロンプト 🎈 ñ \u{0}\t\n  ",
];
