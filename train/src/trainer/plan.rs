//! What a run is: the resolved recipe, the model configuration, the run folder, and whether it
//! continues from the folder's latest checkpoint.

use std::path::PathBuf;

use crate::model::ModelConfig;
use crate::recipe::Recipe;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The resolved recipe.
    pub recipe: Recipe,
    /// The model configuration.
    pub config: ModelConfig,
    /// `output.dir / run`.
    pub run_dir: PathBuf,
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
}
