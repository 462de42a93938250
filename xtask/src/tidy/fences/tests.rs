//! Unit tests of the fence rules, on Markdown written here.

use std::path::{Path, PathBuf};

use super::{fence_problem, fences, included_files, is_rust};

#[test]
fn opening_fences_are_found_and_closers_skipped() {
    let text = "# T\n```rust\nlet a = 1;\n```\n\n  ~~~text\n  ```\n  ~~~\n````sh\nls\n````\n";
    let found: Vec<(usize, String)> = fences(text).into_iter().map(|f| (f.line, f.info)).collect();
    assert_eq!(
        found,
        [
            (2, "rust".to_owned()),
            (6, "text".to_owned()),
            (9, "sh".to_owned())
        ]
    );
}

#[test]
fn rustdoc_languages_are_recognised() {
    for info in [
        "",
        "rust",
        "rust,no_run",
        "no_run",
        "compile_fail,E0277",
        "edition2024",
    ] {
        assert!(is_rust(info), "{info}");
    }
    for info in ["text", "sh", "js", "ts", "toml", "console"] {
        assert!(!is_rust(info), "{info}");
    }
}

#[test]
fn bare_and_ignored_fences_are_problems() {
    assert!(fence_problem("").is_some());
    assert!(fence_problem("rust,ignore").is_some());
    assert!(fence_problem("ignore").is_some());
    assert!(fence_problem("rust,no_run").is_none());
    assert!(fence_problem("text").is_none());
}

#[test]
fn includes_resolve_against_the_source() {
    let text =
        "#[doc = include_str!(\"../README.md\")]\n#[doc = include_str!(\"../../docs/a.md\")]\n";
    assert_eq!(
        included_files(Path::new("crate/src/lib.rs"), text),
        [PathBuf::from("crate/README.md"), PathBuf::from("docs/a.md")]
    );
}
