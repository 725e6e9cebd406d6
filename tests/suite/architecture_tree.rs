//! The architecture rules on the real `src/` tree: no cycle between
//! top-level modules and no forbidden edge (see `architecture.rs` for the
//! checker and the rules). Listed in `main.rs` once the tree passes.

use std::path::Path;

use crate::architecture::{FORBIDDEN, check, read_tree, report};

#[test]
fn src_has_no_module_cycle_and_no_forbidden_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src).expect("read src/");
    assert!(
        files.iter().any(|f| f.path == "lib.rs"),
        "no src/lib.rs below {}",
        src.display()
    );
    let violations = check(&files, FORBIDDEN);
    assert!(
        violations.is_empty(),
        "{} architecture violation(s) in src/:\n{}",
        violations.len(),
        report(&violations)
    );
}
