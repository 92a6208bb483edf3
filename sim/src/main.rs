//! The main job (work in progress: issue 9).
fn main() {}
