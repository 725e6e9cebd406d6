//! The architecture rules on the real `src/` tree: no cycle between
//! top-level modules and no forbidden edge (see `architecture.rs` for the
//! checker and the rules), and every top-level module is placed in a layer.

use std::path::Path;

use crate::architecture::{FORBIDDEN, LAYERS, check, layer_rules, read_tree, report};

#[test]
fn src_has_no_module_cycle_and_no_forbidden_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src).expect("read src/");
    assert!(
        files.iter().any(|f| f.path == "lib.rs"),
        "no src/lib.rs below {}",
        src.display()
    );
    let mut rules = FORBIDDEN.to_vec();
    rules.extend(layer_rules());
    let violations = check(&files, &rules);
    assert!(
        violations.is_empty(),
        "{} architecture violation(s) in src/:\n{}",
        violations.len(),
        report(&violations)
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src).expect("read src/");
    let placed: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    let mut missing: Vec<String> = files
        .iter()
        .map(|f| {
            f.path
                .split('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .filter(|m| m != "lib" && m != "main" && !placed.contains(&m.as_str()))
        .collect();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "modules with no layer in architecture.rs: {missing:?}"
    );
}
