//! The model-test toolkit shared by `model_proptest` and `model_zodb`:
//! storage fixtures and record builders (`support`) and the random
//! operation language (`ops`).

pub mod ops;
pub mod support;
