//! What `ARCHITECTURE.md` claims, checked against the code.
//!
//! The document holds a few lists in a fixed form: an HTML comment
//! `<!-- tidy:NAME -->` (invisible when rendered) followed by a `text` code
//! block of rows `crate: item item ...`, one row per workspace member. Tidy
//! reads them and checks:
//!
//! - `tidy:dependencies`: the siblings each member may depend on (normal and
//!   build dependencies; dev-dependencies are free), against `cargo
//!   metadata`;
//! - `tidy:test-binaries`: each member's integration test targets, exactly
//!   (an `it` target is `tests/it/main.rs`);
//! - `tidy:unsafe`: the files of each member's library code (`src/`, not
//!   `src/bin/`) that may hold `unsafe`; `file.rs#name` narrows a file to
//!   the function `name`. Every `unsafe` block, function, impl or trait
//!   elsewhere is a problem, and so is a listed place that holds none (the
//!   list must stay true both ways).
//!
//! It also checks the metadata a published member needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use super::Problem;
use super::lexer::{UnsafeKind, UnsafeSite, code_only, fn_span, unsafe_sites};

/// The document the lists live in, from the workspace root.
pub(crate) const DOC: &str = "ARCHITECTURE.md";

/// One row of a checked list: `name: items`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) line: usize,
    pub(crate) name: String,
    pub(crate) items: Vec<String>,
}

/// The rows of the list marked `<!-- tidy:{name} -->` in `doc`.
pub(crate) fn list(doc: &str, name: &str) -> Result<Vec<Row>, String> {
    let marker = format!("<!-- tidy:{name} -->");
    let lines: Vec<&str> = doc.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == marker)
        .ok_or_else(|| format!("no `{marker}` list"))?;
    let open = (at + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty())
        .filter(|&i| lines[i].trim_start().starts_with("```"))
        .ok_or_else(|| format!("`{marker}` is not followed by a code block"))?;
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(open + 1) {
        let line = line.trim();
        if line.starts_with("```") {
            return Ok(rows);
        }
        if line.is_empty() {
            continue;
        }
        let (name, items) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: a row is `crate: items`", i + 1))?;
        rows.push(Row {
            line: i + 1,
            name: name.trim().to_owned(),
            items: items.split_whitespace().map(str::to_owned).collect(),
        });
    }
    Err(format!("`{marker}`: the code block is not closed"))
}

/// A workspace member, as far as these checks need it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Member {
    pub(crate) name: String,
    /// Its directory, from the workspace root.
    pub(crate) dir: PathBuf,
    /// `(dependency, kind)`; kind is `normal`, `dev` or `build`.
    pub(crate) deps: Vec<(String, String)>,
    /// `(test target, its root file from the member's directory)`.
    pub(crate) tests: Vec<(String, PathBuf)>,
    pub(crate) published: bool,
    /// The package fields a published crate needs, by name (empty if unset).
    pub(crate) fields: BTreeMap<&'static str, String>,
}

/// The fields of a published package that must be set.
const PUBLISH_FIELDS: [&str; 8] = [
    "description",
    "license",
    "repository",
    "homepage",
    "documentation",
    "readme",
    "keywords",
    "categories",
];

/// The workspace members in `cargo metadata --no-deps` output.
pub(crate) fn members(metadata: &str) -> anyhow::Result<Vec<Member>> {
    let value: Value = serde_json::from_str(metadata).context("parsing `cargo metadata`")?;
    let root = PathBuf::from(value["workspace_root"].as_str().unwrap_or_default());
    let ids: Vec<&str> = value["workspace_members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = Vec::new();
    for package in value["packages"].as_array().into_iter().flatten() {
        if !ids.contains(&package["id"].as_str().unwrap_or_default()) {
            continue;
        }
        let manifest = PathBuf::from(str_of(&package["manifest_path"]));
        let abs_dir = manifest.parent().unwrap_or(Path::new("")).to_path_buf();
        let dir = abs_dir
            .strip_prefix(&root)
            .unwrap_or(&abs_dir)
            .to_path_buf();
        let deps = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                (str_of(&d["name"]), kind)
            })
            .collect();
        let tests = package["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "test"))
            })
            .map(|t| {
                let src = PathBuf::from(str_of(&t["src_path"]));
                let src = src.strip_prefix(&abs_dir).unwrap_or(&src).to_path_buf();
                (str_of(&t["name"]), src)
            })
            .collect();
        // `publish = false` is `[]` in cargo's output; unset is `null`.
        let published = package["publish"]
            .as_array()
            .is_none_or(|registries| !registries.is_empty());
        let fields = PUBLISH_FIELDS
            .iter()
            .map(|&f| {
                let v = &package[f];
                let text = match v.as_array() {
                    Some(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    None => str_of(v),
                };
                (f, text)
            })
            .collect();
        out.push(Member {
            name: str_of(&package["name"]),
            dir,
            deps,
            tests,
            published,
            fields,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn doc_problem(line: usize, what: String) -> Problem {
    Problem {
        path: PathBuf::from(DOC),
        line,
        what,
    }
}

/// The rows of one list by member, and a problem for every member without
/// a row and every row that names no member.
fn rows_by_member<'a>(
    list_name: &str,
    rows: &'a [Row],
    members: &[Member],
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Vec<&'a Row>> {
    let mut by = BTreeMap::<String, Vec<&Row>>::new();
    for row in rows {
        if members.iter().any(|m| m.name == row.name) {
            by.entry(row.name.clone()).or_default().push(row);
        } else {
            problems.push(doc_problem(
                row.line,
                format!(
                    "`tidy:{list_name}` names `{}`, which is no workspace member",
                    row.name
                ),
            ));
        }
    }
    for m in members {
        if !by.contains_key(&m.name) {
            problems.push(doc_problem(
                1,
                format!("`tidy:{list_name}` has no row for the member `{}`", m.name),
            ));
        }
    }
    by
}

/// Normal and build dependencies on siblings are only those the
/// `tidy:dependencies` list allows.
pub(crate) fn check_dependencies(rows: &[Row], members: &[Member]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let by = rows_by_member("dependencies", rows, members, &mut problems);
    for m in members {
        let Some(rows) = by.get(&m.name) else {
            continue;
        };
        let allowed: Vec<&String> = rows.iter().flat_map(|r| &r.items).collect();
        for (dep, kind) in &m.deps {
            let sibling = members.iter().any(|o| &o.name == dep);
            if sibling && kind != "dev" && !allowed.contains(&dep) {
                problems.push(Problem {
                    path: m.dir.join("Cargo.toml"),
                    line: 1,
                    what: format!(
                        "`{}` depends on `{dep}` ({kind}), which {DOC} does not allow \
                         (its `tidy:dependencies` list; dev-dependencies are free)",
                        m.name
                    ),
                });
            }
        }
    }
    problems
}

/// Each member's integration test targets are exactly those of the
/// `tidy:test-binaries` list, and an `it` target is `tests/it/main.rs`.
pub(crate) fn check_test_binaries(rows: &[Row], members: &[Member]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let by = rows_by_member("test-binaries", rows, members, &mut problems);
    for m in members {
        let Some(rows) = by.get(&m.name) else {
            continue;
        };
        let mut listed: Vec<&str> = rows
            .iter()
            .flat_map(|r| &r.items)
            .map(String::as_str)
            .collect();
        listed.sort_unstable();
        let mut actual: Vec<&str> = m.tests.iter().map(|(n, _)| n.as_str()).collect();
        actual.sort_unstable();
        if listed != actual {
            problems.push(doc_problem(
                rows[0].line,
                format!(
                    "`{}` has the test binaries [{}], the list says [{}]",
                    m.name,
                    actual.join(" "),
                    listed.join(" ")
                ),
            ));
        }
        for (name, src) in &m.tests {
            if name == "it" && src != Path::new("tests/it/main.rs") {
                problems.push(Problem {
                    path: m.dir.join(src),
                    line: 1,
                    what: "the `it` test binary's root is `tests/it/main.rs`".to_owned(),
                });
            }
        }
    }
    problems
}

/// A published member sets every field a user of the crate sees, and its
/// documentation is on docs.rs.
pub(crate) fn check_package_metadata(members: &[Member]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for m in members.iter().filter(|m| m.published) {
        let problem = |what: String| Problem {
            path: m.dir.join("Cargo.toml"),
            line: 1,
            what,
        };
        for field in PUBLISH_FIELDS {
            if m.fields.get(field).is_none_or(String::is_empty) {
                problems.push(problem(format!(
                    "published crate without `{field}` (or `{field}.workspace = true`)"
                )));
            }
        }
        let docs = format!("https://docs.rs/{}", m.name);
        let documentation = m.fields.get("documentation").map(String::as_str);
        if documentation.is_some_and(|d| !d.is_empty() && d != docs) {
            problems.push(problem(format!("`documentation` is not `{docs}`")));
        }
    }
    problems
}

/// `unsafe` sites of library code, counted per member for the report.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UnsafeCount {
    pub(crate) blocks: usize,
    pub(crate) fns: usize,
    pub(crate) impls: usize,
    pub(crate) other: usize,
}

impl UnsafeCount {
    fn add(&mut self, site: &UnsafeSite) {
        match site.kind {
            UnsafeKind::Block => self.blocks += 1,
            UnsafeKind::Fn => self.fns += 1,
            UnsafeKind::Impl => self.impls += 1,
            UnsafeKind::Trait | UnsafeKind::Extern | UnsafeKind::Other => self.other += 1,
        }
    }
}

impl std::fmt::Display for UnsafeCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.blocks, "block"),
            (self.fns, "fn"),
            (self.impls, "impl"),
            (self.other, "other"),
        ];
        let shown: Vec<String> = parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
            .collect();
        if shown.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&shown.join(", "))
        }
    }
}

/// Whether `rel` (from the workspace root) is library code of `member`.
pub(crate) fn is_member_library(member: &Member, rel: &Path) -> bool {
    let src = member.dir.join("src");
    rel.starts_with(&src) && !rel.starts_with(src.join("bin"))
}

/// Every `unsafe` of the members' library code (`sources`: path from the
/// root → text) is in a place the `tidy:unsafe` list allows, and every
/// listed place holds some. Returns the problems and the count per member.
pub(crate) fn check_unsafe(
    rows: &[Row],
    members: &[Member],
    sources: &BTreeMap<PathBuf, String>,
) -> (Vec<Problem>, BTreeMap<String, UnsafeCount>) {
    let mut problems = Vec::new();
    let mut counts = BTreeMap::new();
    let by = rows_by_member("unsafe", rows, members, &mut problems);
    // Allowed places: (file from the root, optional function) → its row line.
    let mut allowed: Vec<(PathBuf, Option<String>, usize, bool)> = Vec::new();
    for m in members {
        for row in by.get(&m.name).into_iter().flatten() {
            for item in &row.items {
                let (file, func) = match item.split_once('#') {
                    Some((file, func)) => (file, Some(func.to_owned())),
                    None => (item.as_str(), None),
                };
                allowed.push((m.dir.join(file), func, row.line, false));
            }
        }
    }
    for m in members {
        let count: &mut UnsafeCount = counts.entry(m.name.clone()).or_default();
        for (rel, text) in sources.iter().filter(|(p, _)| is_member_library(m, p)) {
            let sites = unsafe_sites(text);
            if sites.is_empty() {
                continue;
            }
            let code = code_only(text);
            for site in &sites {
                count.add(site);
                let place = allowed.iter_mut().find(|(file, func, _, _)| {
                    file == rel
                        && func.as_ref().is_none_or(|f| {
                            fn_span(&code, f).is_some_and(|span| span.contains(&site.offset))
                        })
                });
                match place {
                    Some(place) => place.3 = true,
                    None => problems.push(Problem {
                        path: rel.clone(),
                        line: site.line,
                        what: format!(
                            "`unsafe` ({:?}) outside the places {DOC} allows for `{}` \
                             (its `tidy:unsafe` list): keep it at the OS seam",
                            site.kind, m.name
                        ),
                    }),
                }
            }
        }
    }
    for (file, func, line, used) in &allowed {
        if !used {
            let place = match func {
                Some(f) => format!("{}#{f}", file.display()),
                None => file.display().to_string(),
            };
            problems.push(doc_problem(
                *line,
                format!("`tidy:unsafe` lists `{place}`, which holds no `unsafe`: remove it"),
            ));
        }
    }
    (problems, counts)
}

#[cfg(test)]
mod tests;
