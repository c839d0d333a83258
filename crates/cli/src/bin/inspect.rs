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

use animatediff_formats::{
    arch, ComponentKind, LoadOptions, Lora, LoraSet, LoraSpec, ModelArch, MotionModule,
    SdCheckpoint, TensorFile,
};

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

fn run(args: &Args) -> animatediff_formats::Result<serde_json::Value> {
    let opts = LoadOptions { use_ema: args.ema };
    let mut report = serde_json::Map::new();
    let mut files = Vec::new();

    let base = args.model.base.as_ref().map(|p| SdCheckpoint::open(p, &opts)).transpose()?;
    let personal = args.model.personalized.as_ref().map(|p| SdCheckpoint::open(p, &opts)).transpose()?;
    for (role, ck) in [("base", &base), ("personalized", &personal)] {
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
    let model = match (personal, base) {
        (Some(p), Some(b)) => Some(p.over(b)),
        (p, b) => p.or(b),
    };

    if let Some(model) = &model {
        let mut a = ModelArch::default();
        if let Some(u) = &model.unet {
            a.unet = arch::infer_unet(u)?;
        }
        if let Some(t) = &model.text_encoder {
            a.text_encoder = arch::infer_text_encoder(t)?;
        }
        if let Some(v) = &model.vae {
            a.vae = arch::infer_vae(v)?;
        }
        arch::apply_diffusers_configs(&mut a, &model.configs);
        let (a, source) = match &args.model.arch {
            Some(p) => (arch::apply_overrides(&a, p)?, p.clone()),
            None => (a, model.source.clone()),
        };
        a.validate(&source)?;
        let mut from = BTreeMap::new();
        for k in [ComponentKind::Unet, ComponentKind::Vae, ComponentKind::TextEncoder] {
            from.insert(
                k.to_string(),
                model.component(k).map(|c| c.files()).unwrap_or_default(),
            );
        }
        report.insert("components_from".into(), json!(from));
        report.insert("architecture".into(), serde_json::to_value(&a).unwrap());
    }

    let motion = args.motion_module.as_ref().map(|p| MotionModule::open(p, args.model.motion_version)).transpose()?;
    if let Some(mm) = &motion {
        files.push(json!({ "role": "motion module", "file": file_summary(&mm.source)? }));
        report.insert(
            "motion_module".into(),
            json!({
                "version": mm.version.to_string(),
                "detected_version": mm.detected.map(|v| v.to_string()),
                "layout": format!("{:?}", mm.layout),
                "sites": mm.sites.len(),
                "mid_block": mm.has_mid_block,
                "positional_table_length": mm.pe_len,
                "max_frames": mm.max_frames(),
                "resnet_groupnorm": if mm.version.per_frame_resnet_groupnorm() { "per frame" } else { "across frames" },
                "unrecognized_keys": mm.unrecognized,
            }),
        );
    }

    if !args.model.loras.is_empty() {
        let mut components = Vec::new();
        if let Some(m) = &model {
            components.extend(m.unet.iter());
            components.extend(m.text_encoder.iter());
        }
        if let Some(mm) = &motion {
            components.push(&mm.weights);
        }
        let mut loras = Vec::new();
        let mut per_file = Vec::new();
        for spec in &args.model.loras {
            let lora = Lora::open(&spec.path)?;
            files.push(json!({ "role": "LoRA", "file": file_summary(&spec.path)? }));
            let r = lora.resolve(&components)?;
            per_file.push(json!({
                "path": spec.path,
                "multiplier": format!("{}", spec.multiplier).parse::<f64>().unwrap_or(f64::NAN),
                "format": format!("{:?}", lora.format),
                "modules": lora.len(),
                "matched": r.targets.len(),
                "unmatched_keys": r.unmatched,
            }));
            loras.push((lora, spec.multiplier));
        }
        let set = LoraSet::new(loras, args.model.lora_scaling, &components)?;
        report.insert(
            "loras".into(),
            json!({ "scaling": args.model.lora_scaling.to_string(), "weights_changed": set.num_targets(), "files": per_file }),
        );
    }
    report.insert("files".into(), json!(files));
    Ok(serde_json::Value::Object(report))
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
