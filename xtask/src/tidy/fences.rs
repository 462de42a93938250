//! The code blocks of the Markdown files: each names its language, none is
//! `ignore`d, and a file with Rust blocks is compiled as doc tests (included
//! with `include_str!` into a `#[cfg(doctest)]` item of a crate), so that it
//! cannot drift from the API.

use std::path::{Component, Path, PathBuf};

/// An opening code fence: its line (from 1) and its info string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fence {
    pub(crate) line: usize,
    pub(crate) info: String,
}

/// The opening fences of a Markdown text (` ``` ` or `~~~`, indented or not).
pub(crate) fn fences(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<(char, usize)> = None;
    for (idx, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(marker) = trimmed.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let len = trimmed.chars().take_while(|c| *c == marker).count();
        if len < 3 {
            continue;
        }
        let info = trimmed[len * marker.len_utf8()..].trim();
        match open {
            Some((m, l)) if m == marker && len >= l && info.is_empty() => open = None,
            Some(_) => {}
            None => {
                open = Some((marker, len));
                out.push(Fence {
                    line: idx + 1,
                    info: info.to_owned(),
                });
            }
        }
    }
    out
}

/// The tokens of an info string (`rust,no_run` → `rust`, `no_run`).
fn tokens(info: &str) -> impl Iterator<Item = &str> {
    info.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
}

/// Whether rustdoc treats a block with this info string as Rust (and so
/// compiles it): no language, `rust`, or only rustdoc's own attributes.
pub(crate) fn is_rust(info: &str) -> bool {
    let rustdoc_attr = |t: &str| {
        matches!(
            t,
            "rust"
                | "no_run"
                | "compile_fail"
                | "should_panic"
                | "ignore"
                | "test_harness"
                | "standalone_crate"
        ) || t.starts_with("edition")
            || t.starts_with("ignore-")
            || (t.len() == 5 && t.starts_with('E') && t[1..].bytes().all(|b| b.is_ascii_digit()))
    };
    tokens(info).all(rustdoc_attr) || tokens(info).any(|t| t == "rust")
}

/// What is wrong with one fence's info string, if anything.
pub(crate) fn fence_problem(info: &str) -> Option<&'static str> {
    if info.is_empty() {
        return Some(
            "code block without a language: rustdoc runs it as Rust; name it \
             (`rust`, `rust,no_run`, `text`, `sh`, ...)",
        );
    }
    if tokens(info).any(|t| t == "ignore" || t.starts_with("ignore-")) {
        return Some(
            "`ignore`d code block: make it compile (`no_run` if it must not run, \
             `compile_fail` if it must not compile) or mark it `text`",
        );
    }
    None
}

/// The files a Rust source includes with `include_str!("...")`, resolved
/// against the source's directory (`rel` is the source's path from the
/// workspace root; the results are too).
pub(crate) fn included_files(rel: &Path, text: &str) -> Vec<PathBuf> {
    const OPEN: &str = "include_str!(\"";
    let dir = rel.parent().unwrap_or(Path::new(""));
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        if let Some(end) = rest.find('"') {
            out.push(normalize(&dir.join(&rest[..end])));
        }
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests;
