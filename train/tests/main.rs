//! The training crate's one integration-test binary.

mod encoder;
mod generate;
mod hf;
