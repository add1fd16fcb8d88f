//! End-to-end tests of the `firebrand` command: the workspace's one CLI test binary.

mod cli;
mod mig;
mod prefs;
mod train;
mod vifrag;
