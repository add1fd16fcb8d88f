//! The training crate's one integration-test binary.

mod hf;
