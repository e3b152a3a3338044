//! The root package only owns `tests/` and `benches/`.
