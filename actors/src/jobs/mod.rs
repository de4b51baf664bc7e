//! herald's coded jobs: one file per job, registered in [`registry`].
//!
//! Adding a job (the README has the full recipe):
//! 1. a new file here with a type implementing [`crate::handler::Job`]:
//!    `definition()` gives its id and default schedule, `run()` what a run
//!    does;
//! 2. one line in [`registry`]: `registry.add(my_job::MyJob)?;`.
//!
//! Its settings come from `[coded.<job id>]` in the config file.

pub mod food_reminder;

use crate::handler::Registry;

/// Every coded job herald runs.
pub fn registry() -> Result<Registry, String> {
    let mut registry = Registry::new();
    registry.add(food_reminder::FoodReminder)?;
    Ok(registry)
}
