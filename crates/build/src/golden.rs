//! The golden bundle (`golden.npz`): small seeded inputs run through every graph with tract, so
//! that `animate check` can check the artifact anywhere without its source checkpoints.

use std::path::Path;

use animatediff_runtime::check::{self, SmallShapes};
use animatediff_runtime::manifest::Golden;
use animatediff_runtime::{Runtime, RuntimeOptions};

use crate::error::Error;
use crate::model::Model;
use crate::options::BuildOptions;

pub(crate) const FILE: &str = "golden.npz";

/// Runs the graphs written to `dir` on the check's small inputs and stores inputs and outputs.
pub(crate) fn write(opts: &BuildOptions, dir: &Path, model: &Model, max_frames: usize) -> Result<Golden, Error> {
    let (h, w) = opts.latent_hw();
    let a = &model.arch;
    let shapes = SmallShapes { windows: opts.motion_windows, ..SmallShapes::new(a.unet.in_channels, a.text_encoder.hidden_size, max_frames, opts.frames, h.zip(w)) };
    let runtime = Runtime::new(RuntimeOptions::default()).map_err(Error::Golden)?;
    let mut cases = check::small_inputs(shapes);
    for case in &mut cases {
        let file = format!("{}.onnx", case.graph);
        case.expected = Some(check::run(&runtime, dir, &file, case).map_err(Error::Golden)?);
    }
    check::write_bundle(&dir.join(FILE), &cases).map_err(Error::Golden)?;
    Ok(Golden {
        file: FILE.into(),
        runtime: "tract".into(),
        frames: shapes.frames,
        latent_height: shapes.latent_hw.0,
        latent_width: shapes.latent_hw.1,
        arrays: "<graph>.<input or output name>".into(),
    })
}
