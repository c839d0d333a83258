//! `inspect`: says what model files hold, as `build-graph` will read them — container, dtypes,
//! components, the architecture inferred from shapes, the motion-module version, and which LoRA
//! modules match the model (and which match nothing).
//!
//!     inspect [--base FILE|DIR] [--personalized FILE] [--lora FILE[:SCALE]]... [--lora-scaling official|kohya]
//!             [--motion-module FILE] [--motion-version v1|v2|v3] [--arch arch.json] [--ema] [--json]
//!     inspect --demo        # writes the tiny seeded fixture set to target/demo-fixtures and inspects it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

use animatediff_build::model::{self, Checkpoints, LoraSummary};
use animatediff_formats::{ComponentWeights, LoadOptions, Lora, LoraScaling, LoraSet, LoraSpec, MotionModule, TensorFile};
use animatediff_runtime::manifest::ResnetGroupNorm;

#[derive(Parser)]
#[command(version, about = "Show what AnimateDiff model files hold, as build-graph reads them")]
struct Args {
    #[command(flatten)]
    model: animatediff_cli::args::ModelArgs,
    /// AnimateDiff motion module (.ckpt or .safetensors, official or diffusers layout).
    #[arg(long)]
    motion_module: Option<PathBuf>,
    /// Use the `model_ema.*` UNet weights of a training checkpoint.
    #[arg(long)]
    ema: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Write the tiny seeded fixture set to target/demo-fixtures and inspect it.
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.demo {
        let dir = PathBuf::from("target/demo-fixtures");
        if let Err(e) = animatediff_fixtures::write_fixture_set(&dir, animatediff_fixtures::DEFAULT_SEED) {
            eprintln!("inspect: writing the demo fixtures to {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        args.model.base = Some(dir.join("base.safetensors"));
        args.model.personalized = Some(dir.join("personalized.safetensors"));
        args.model.loras = vec![LoraSpec { path: dir.join("lora.safetensors"), multiplier: 0.8 }];
        args.motion_module = Some(dir.join("mm_v2.ckpt"));
    }
    if args.model.base.is_none() && args.model.personalized.is_none() && args.motion_module.is_none() {
        eprintln!("inspect: nothing to inspect: give --base, --personalized and/or --motion-module (or --demo)");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap());
            } else {
                print_text(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inspect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn file_summary(path: &Path) -> animatediff_formats::Result<serde_json::Value> {
    if path.is_dir() {
        return Ok(json!({ "path": path, "container": "diffusers folder" }));
    }
    let f = TensorFile::open(path)?;
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    for k in f.keys() {
        *dtypes.entry(f.info(k).unwrap().dtype.to_string()).or_default() += 1;
    }
    Ok(json!({
        "path": path,
        "container": format!("{:?}", f.container()),
        "tensors": f.len(),
        "dtypes": dtypes,
        "skipped_non_tensor_entries": f.skipped_entries(),
    }))
}

fn run(args: &Args) -> Result<serde_json::Value, animatediff_build::Error> {
    let mut report = serde_json::Map::new();
    let mut files = Vec::new();
    let (base, personalized) = (args.model.base.as_deref(), args.model.personalized.as_deref());
    let checkpoints = Checkpoints::open(base, personalized, &LoadOptions { use_ema: args.ema })?;
    for (role, ck) in [("base", &checkpoints.base), ("personalized", &checkpoints.personalized)] {
        if let Some(ck) = ck {
            files.push(json!({
                "role": role,
                "file": file_summary(&ck.source)?,
                "components": ck.kinds().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "ignored_keys": ck.ignored.len(),
                "unrecognized_keys": ck.unrecognized,
            }));
        }
    }
    let model = checkpoints.merged();
    let mut arch = None;
    if let Some(model) = &model {
        let (a, _) = model::architecture(model, args.model.arch.as_deref())?;
        let from: BTreeMap<String, Vec<PathBuf>> =
            model::COMPONENTS.into_iter().map(|k| (k.to_string(), model.component(k).map(|c| c.files()).unwrap_or_default())).collect();
        report.insert("components_from".into(), json!(from));
        report.insert("architecture".into(), serde_json::to_value(&a).unwrap());
        arch = Some(a);
    }
    let motion = args.motion_module.as_ref().map(|p| MotionModule::open(p, args.model.motion_version)).transpose()?;
    if let Some(mm) = &motion {
        // What a build would refuse: a site lacking a weight, or sites that do not fit the UNet.
        match &arch {
            Some(a) => model::check_motion_module(mm, a, None)?,
            None => model::check_motion_weights(mm)?,
        }
        files.push(json!({ "role": "motion module", "file": file_summary(&mm.source)? }));
        report.insert("motion_module".into(), motion_summary(mm));
    }
    if !args.model.loras.is_empty() {
        let mut components: Vec<&ComponentWeights> = Vec::new();
        if let Some(m) = &model {
            components.extend(m.unet.iter().chain(m.text_encoder.iter()));
        }
        components.extend(motion.as_ref().map(|mm| &mm.weights));
        let mut found = Vec::new();
        for spec in &args.model.loras {
            found.push(model::resolve_lora(spec, &components)?);
            files.push(json!({ "role": "LoRA", "file": file_summary(&spec.path)? }));
        }
        report.insert("loras".into(), lora_summary(found, args.model.lora_scaling, &components)?);
    }
    report.insert("files".into(), json!(files));
    Ok(serde_json::Value::Object(report))
}

fn motion_summary(mm: &MotionModule) -> serde_json::Value {
    json!({
        "version": mm.version.to_string(),
        "detected_version": mm.detected.map(|v| v.to_string()),
        "layout": format!("{:?}", mm.layout),
        "sites": mm.sites.len(),
        "mid_block": mm.has_mid_block,
        "positional_table_length": mm.pe_len,
        "max_frames": mm.max_frames(),
        "resnet_groupnorm": ResnetGroupNorm::of(mm.version).to_string(),
        "unrecognized_keys": mm.unrecognized,
    })
}

/// What each LoRA matches, as a build would apply them.
fn lora_summary(found: Vec<(LoraSummary, Lora)>, scaling: LoraScaling, components: &[&ComponentWeights]) -> animatediff_formats::Result<serde_json::Value> {
    let per_file: Vec<_> = found
        .iter()
        .map(|(l, _)| {
            json!({
                "path": l.spec.path,
                "multiplier": l.multiplier(),
                "format": l.format,
                "modules": l.modules,
                "matched": l.matched,
                "unmatched_keys": l.unmatched,
            })
        })
        .collect();
    let loras = found.into_iter().map(|(l, lora)| (lora, l.spec.multiplier)).collect();
    let set = LoraSet::new(loras, scaling, components)?;
    Ok(json!({ "scaling": scaling.to_string(), "weights_changed": set.num_targets(), "files": per_file }))
}

fn print_text(r: &serde_json::Value) {
    for f in r["files"].as_array().into_iter().flatten() {
        let file = &f["file"];
        println!("{} {}", f["role"].as_str().unwrap_or(""), file["path"].as_str().unwrap_or(""));
        println!("  container {}, {} tensors, dtypes {}", file["container"].as_str().unwrap_or(""), file["tensors"], file["dtypes"]);
        if let Some(c) = f.get("components") {
            println!("  components {c}; ignored keys (schedule buffers, EMA, position ids): {}", f["ignored_keys"]);
            let unrec = f["unrecognized_keys"].as_array().map(|a| a.len()).unwrap_or(0);
            if unrec > 0 {
                println!("  WARNING: {unrec} keys match no known layout: {}", f["unrecognized_keys"]);
            }
        }
    }
    if let Some(from) = r.get("components_from") {
        println!("model components taken from: {from}");
    }
    if let Some(a) = r.get("architecture") {
        println!("architecture (inferred from shapes):\n{}", serde_json::to_string_pretty(a).unwrap());
    }
    if let Some(m) = r.get("motion_module") {
        println!(
            "motion module {} (detected {}), {} layout, {} sites, mid block {}, positional table {}, max {} frames, ResNet GroupNorm {}",
            m["version"].as_str().unwrap_or(""),
            m["detected_version"],
            m["layout"].as_str().unwrap_or(""),
            m["sites"],
            m["mid_block"],
            m["positional_table_length"],
            m["max_frames"],
            m["resnet_groupnorm"].as_str().unwrap_or("")
        );
    }
    if let Some(l) = r.get("loras") {
        println!("LoRA scaling {}: {} weights changed", l["scaling"].as_str().unwrap_or(""), l["weights_changed"]);
        for f in l["files"].as_array().into_iter().flatten() {
            println!(
                "  {} ×{}: {} format, {} modules, {} matched, unmatched keys {}",
                f["path"].as_str().unwrap_or(""),
                f["multiplier"],
                f["format"].as_str().unwrap_or(""),
                f["modules"],
                f["matched"],
                f["unmatched_keys"]
            );
        }
    }
}
