//! The tidy check: conventions of the codebase that no compiler enforces.
//!
//! - every `.rs` file opens with an inner doc comment (`//!`);
//! - no test is hidden (`#[ignore]`) or passes by panicking (`#[should_panic]`);
//! - no `dbg!` or `todo!` in library code (anything outside `tests/`,
//!   `benches/`, `examples/`, `src/bin/` and `xtask/`);
//! - every member's `Cargo.toml` inherits the workspace lints, and a
//!   published member sets the metadata a user sees (`claims.rs`);
//! - what `ARCHITECTURE.md` claims in its checked lists: the dependency
//!   direction between the crates, the test binaries of each crate, and the
//!   only places of library code that hold `unsafe` (`claims.rs`);
//! - every code block of the Markdown files names its language and none is
//!   `ignore`d; a file with Rust blocks is compiled as doc tests
//!   (`fences.rs`).

mod claims;
mod fences;
mod lexer;

use std::collections::BTreeMap;
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

/// What a tidy run found: the problems, and notes for the reader (the
/// `unsafe` count of each crate).
pub(crate) struct Report {
    pub(crate) problems: Vec<Problem>,
    pub(crate) notes: Vec<String>,
}

/// Checks every tracked source file, Markdown file and member manifest
/// under `root`, and the claims of `ARCHITECTURE.md` (with `cargo metadata`).
pub(crate) fn check_tree(root: &Path) -> anyhow::Result<Report> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    collect(root, root, &mut files)?;
    let mut sources = BTreeMap::new();
    let mut markdown = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if rel.file_name().is_some_and(|n| n == "Cargo.toml") {
            if rel.parent().is_some_and(|p| p != Path::new("")) {
                problems.extend(check_manifest(&rel, &text));
            }
        } else if rel.extension().is_some_and(|e| e == "md") {
            markdown.insert(rel, text);
        } else {
            problems.extend(check_source(&rel, &text));
            sources.insert(rel, text);
        }
    }
    problems.extend(check_markdown(&markdown, &sources));

    let metadata =
        crate::bench::cargo_output(root, &["metadata", "--format-version", "1", "--no-deps"])?;
    let members = claims::members(&metadata)?;
    problems.extend(claims::check_package_metadata(&members));
    let mut notes = Vec::new();
    match markdown.get(Path::new(claims::DOC)) {
        None => problems.push(Problem {
            path: PathBuf::from(claims::DOC),
            line: 1,
            what: "missing".to_owned(),
        }),
        Some(doc) => {
            let mut list = |name: &str| match claims::list(doc, name) {
                Ok(rows) => Some(rows),
                Err(what) => {
                    problems.push(Problem {
                        path: PathBuf::from(claims::DOC),
                        line: 1,
                        what,
                    });
                    None
                }
            };
            let (deps, tests, unsafe_rows) =
                (list("dependencies"), list("test-binaries"), list("unsafe"));
            if let Some(rows) = deps {
                problems.extend(claims::check_dependencies(&rows, &members));
            }
            if let Some(rows) = tests {
                problems.extend(claims::check_test_binaries(&rows, &members));
            }
            if let Some(rows) = unsafe_rows {
                let (found, counts) = claims::check_unsafe(&rows, &members, &sources);
                problems.extend(found);
                let counts: Vec<String> = counts
                    .iter()
                    .filter(|(_, count)| **count != claims::UnsafeCount::default())
                    .map(|(member, count)| format!("{member} {count}"))
                    .collect();
                notes.push(format!("unsafe in library code: {}", counts.join("; ")));
            }
        }
    }
    Ok(Report { problems, notes })
}

/// Checks the code blocks of the Markdown files: each names its language,
/// none is `ignore`d, and a file with Rust blocks is included (and so
/// compiled) as doc tests by some crate.
fn check_markdown(
    markdown: &BTreeMap<PathBuf, String>,
    sources: &BTreeMap<PathBuf, String>,
) -> Vec<Problem> {
    let included: Vec<PathBuf> = sources
        .iter()
        .flat_map(|(rel, text)| fences::included_files(rel, text))
        .collect();
    let mut problems = Vec::new();
    for (rel, text) in markdown {
        let found = fences::fences(text);
        for fence in &found {
            if let Some(what) = fences::fence_problem(&fence.info) {
                problems.push(Problem {
                    path: rel.clone(),
                    line: fence.line,
                    what: what.to_owned(),
                });
            }
        }
        let first_rust = found.iter().find(|f| fences::is_rust(&f.info));
        if let Some(fence) = first_rust.filter(|_| !included.contains(rel)) {
            problems.push(Problem {
                path: rel.clone(),
                line: fence.line,
                what: "Rust code blocks that nothing compiles: include the file in a \
                       `#[cfg(doctest)]` item of its crate \
                       (`#[doc = include_str!(...)]`)"
                    .to_owned(),
            });
        }
    }
    problems
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
        } else if name.ends_with(".rs") || name.ends_with(".md") || name == "Cargo.toml" {
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
        let doc = code
            .strip_prefix("//!")
            .or_else(|| code.strip_prefix("///"))
            .map(str::trim_start);
        if let Some(info) = doc.and_then(|d| d.strip_prefix("```")) {
            let ignored = fences::fence_problem(info.trim()).filter(|w| w.contains("ignore"));
            if let Some(what) = ignored {
                problems.push(problem(idx + 1, what));
            }
        }
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
