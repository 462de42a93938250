//! Unit tests of the tidy check, on sources written here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{check_manifest, check_markdown, check_source};

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

#[test]
fn ignored_doc_comment_blocks_are_reported() {
    let text = concat!(
        "//! T.\n//! ```rust,",
        "ignore\n//! x\n//! ```\n/// ```no_run\n/// ```\n"
    );
    assert_eq!(whats("a/src/lib.rs", text).len(), 1);
}

#[test]
fn markdown_rust_blocks_must_be_compiled() {
    let md = |text: &str| BTreeMap::from([(PathBuf::from("docs/a.md"), text.to_owned())]);
    let include = BTreeMap::from([(
        PathBuf::from("a/src/lib.rs"),
        "#[cfg(doctest)]\n#[doc = include_str!(\"../../docs/a.md\")]\nstruct D;\n".to_owned(),
    )]);
    let rust = "# A\n\n```rust,no_run\nfn main() {}\n```\n";
    assert!(check_markdown(&md(rust), &include).is_empty());
    let lost = check_markdown(&md(rust), &BTreeMap::new());
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].line, 3);
    let shell_only = "```sh\nls\n```\n";
    assert!(check_markdown(&md(shell_only), &BTreeMap::new()).is_empty());
    let bare_and_ignored = concat!("```\nx\n```\n```rust,", "ignore\nx\n```\n");
    assert_eq!(check_markdown(&md(bare_and_ignored), &include).len(), 2);
}
