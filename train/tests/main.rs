//! The training crate's one integration-test binary.

mod generate;
mod hf;
