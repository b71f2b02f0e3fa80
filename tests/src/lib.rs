//! End-to-end tests of fashion-mlp live in `tests/`; this crate holds no code of its own.
