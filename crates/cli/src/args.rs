//! Command-line flags shared by `build-graph` and `inspect`: the model files and how they combine.
//! (`--motion-module` is declared by each tool: required by one, optional in the other.)

use std::path::PathBuf;

use animatediff_formats::{LoraScaling, LoraSpec, MotionVersion};

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Base SD1.5 model: single-file checkpoint (.safetensors/.ckpt) or diffusers folder.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Personalised (DreamBooth/CivitAI) checkpoint; replaces every component it contains.
    #[arg(long)]
    pub personalized: Option<PathBuf>,
    /// LoRA with an optional multiplier (default 1, a finite number from -100 to 100), e.g.
    /// `style.safetensors:0.8`. Repeatable.
    #[arg(long = "lora", value_name = "FILE[:SCALE]", value_parser = crate::limits::parse::lora)]
    pub loras: Vec<LoraSpec>,
    /// How kohya `alpha` is applied: `official` (AnimateDiff, alpha ignored) or `kohya` (alpha/rank,
    /// as A1111/ComfyUI).
    #[arg(long, default_value = "official")]
    pub lora_scaling: LoraScaling,
    /// Override the motion-module version detected from keys and shapes.
    #[arg(long)]
    pub motion_version: Option<MotionVersion>,
    /// JSON overriding any inferred architecture field (for models that differ from SD1.5).
    #[arg(long)]
    pub arch: Option<PathBuf>,
}
