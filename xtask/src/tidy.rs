//! The tidy check: conventions of the codebase that no compiler enforces.
//!
//! - every `.rs` file opens with an inner doc comment (`//!`);
//! - no test is hidden (`#[ignore]`) or passes by panicking (`#[should_panic]`);
//! - no `dbg!` or `todo!` in library code (anything outside `tests/`,
//!   `benches/`, `examples/`, `src/bin/` and `xtask/`);
//! - every member's `Cargo.toml` inherits the workspace lints.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One broken convention, with where it was found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: PathBuf,
    pub(crate) line: usize,
    pub(crate) what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.what)
    }
}

// Spelled in pieces so that this file does not trip its own check.
const IGNORE_ATTR: &str = concat!("#[", "ignore");
const SHOULD_PANIC_ATTR: &str = concat!("#[", "should_panic");
const DBG_MACRO: &str = concat!("dbg", "!(");
const TODO_MACRO: &str = concat!("todo", "!(");

/// Checks every tracked source file and member manifest under `root`.
pub(crate) fn check_tree(root: &Path) -> anyhow::Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    collect(root, root, &mut files)?;
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if rel.file_name().is_some_and(|n| n == "Cargo.toml") {
            if rel.parent().is_some_and(|p| p != Path::new("")) {
                problems.extend(check_manifest(&rel, &text));
            }
        } else {
            problems.extend(check_source(&rel, &text));
        }
    }
    Ok(problems)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            let skip = name.starts_with('.')
                || name == "target"
                || name == "node_modules"
                || (dir == root && name == "fuzz");
            if !skip {
                collect(root, &path, out)?;
            }
        } else if name.ends_with(".rs") || name == "Cargo.toml" {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks one Rust source file; `rel` is its path from the workspace root.
pub(crate) fn check_source(rel: &Path, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let problem = |line: usize, what: &str| Problem {
        path: rel.to_path_buf(),
        line,
        what: what.to_owned(),
    };
    let first = text.lines().find(|l| !l.trim().is_empty());
    if !first.is_some_and(|l| l.trim_start().starts_with("//!")) {
        problems.push(problem(1, "file does not open with a `//!` doc comment"));
    }
    let library = is_library_code(rel);
    for (idx, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        if code.contains(IGNORE_ATTR) {
            problems.push(problem(idx + 1, "ignored test: make it run or delete it"));
        }
        if code.contains(SHOULD_PANIC_ATTR) {
            problems.push(problem(
                idx + 1,
                "should_panic test: assert on a returned error instead",
            ));
        }
        if library && code.contains(DBG_MACRO) {
            problems.push(problem(idx + 1, "dbg! in library code"));
        }
        if library && code.contains(TODO_MACRO) {
            problems.push(problem(idx + 1, "todo! in library code"));
        }
    }
    problems
}

/// Checks one member's manifest inherits the workspace lints.
pub(crate) fn check_manifest(rel: &Path, text: &str) -> Vec<Problem> {
    let inherits = text.split("\n[").any(|section| {
        section.trim_start_matches('[').starts_with("lints]")
            && section.contains("workspace = true")
    });
    if inherits {
        Vec::new()
    } else {
        vec![Problem {
            path: rel.to_path_buf(),
            line: 1,
            what: "member does not inherit the workspace lints (`[lints] workspace = true`)"
                .to_owned(),
        }]
    }
}

fn is_library_code(rel: &Path) -> bool {
    let parts: Vec<_> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect();
    let outside = ["tests", "benches", "examples", "bin", "xtask", "fuzz"];
    !parts.iter().any(|p| outside.contains(&p.as_ref()))
        && parts.last().is_none_or(|p| p != "tests.rs")
}

#[cfg(test)]
mod tests;
