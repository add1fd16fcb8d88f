//! Subcommands whose issue has not landed: they parse anything and say so plainly.

use std::process::ExitCode;

/// Arguments of a subcommand that is not available yet.
#[derive(Debug, clap::Args)]
pub struct Pending {
    /// Arguments (ignored until the subcommand lands).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

impl Pending {
    /// Prints that `name` is not available and why, and exits with status 2.
    pub fn report(&self, name: &str, why: &str) -> anyhow::Result<ExitCode> {
        eprintln!("firebrand {name}: not available in this build yet: {why}.");
        Ok(ExitCode::from(2))
    }
}
