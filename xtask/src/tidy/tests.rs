//! Unit tests of the tidy check, on sources written here.

use std::path::Path;

use super::{check_manifest, check_source};

fn whats(path: &str, text: &str) -> Vec<String> {
    check_source(Path::new(path), text)
        .into_iter()
        .map(|p| format!("{}: {}", p.line, p.what))
        .collect()
}

#[test]
fn a_clean_file_passes() {
    assert!(whats("a/src/lib.rs", "//! Docs.\nfn f() {}\n").is_empty());
}

#[test]
fn a_file_without_module_docs_is_reported() {
    assert_eq!(
        whats("a/src/lib.rs", "fn f() {}\n"),
        ["1: file does not open with a `//!` doc comment"]
    );
}

#[test]
fn hidden_and_panicking_tests_are_reported_everywhere() {
    let text = concat!(
        "//! T.\n#[test]\n#[",
        "ignore]\nfn a() {}\n#[",
        "should_panic]\nfn b() {}\n"
    );
    assert_eq!(whats("a/tests/it.rs", text).len(), 2);
}

#[test]
fn debug_macros_are_reported_in_library_code_only() {
    let text = concat!("//! T.\nfn f() { ", "dbg", "!(1); ", "todo", "!() }\n");
    assert_eq!(whats("a/src/lib.rs", text).len(), 2);
    assert!(whats("a/examples/e.rs", text).is_empty());
    assert!(whats("a/src/tests.rs", text).is_empty());
}

#[test]
fn members_must_inherit_workspace_lints() {
    let good = "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n";
    let bad = "[package]\nname = \"a\"\n";
    assert!(check_manifest(Path::new("a/Cargo.toml"), good).is_empty());
    assert_eq!(check_manifest(Path::new("a/Cargo.toml"), bad).len(), 1);
}
