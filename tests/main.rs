//! End-to-end tests of the `firebrand` command: the workspace's one CLI test binary.

mod cli;
mod dpo;
mod grpo;
mod lintseq;
mod mig;
mod prefs;
mod train;
mod vifrag;
