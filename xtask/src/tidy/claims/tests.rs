//! Unit tests of the claims checks, on lists, members and sources written
//! here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{
    Member, Row, check_dependencies, check_package_metadata, check_test_binaries, check_unsafe,
    list, members,
};

fn member(name: &str) -> Member {
    Member {
        name: name.to_owned(),
        dir: PathBuf::from(name),
        ..Member::default()
    }
}

fn rows(text: &str) -> Vec<Row> {
    let doc = format!("# Doc\n\n<!-- tidy:x -->\n```text\n{text}```\n");
    list(&doc, "x").expect("a list")
}

fn whats(problems: Vec<super::Problem>) -> Vec<String> {
    problems
        .into_iter()
        .map(|p| format!("{}:{}: {}", p.path.display(), p.line, p.what))
        .collect()
}

#[test]
fn a_list_is_read_from_its_marker() {
    let found = rows("a:   b c\n\nd:\n");
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].line, found[0].name.as_str()), (5, "a"));
    assert_eq!(found[0].items, ["b", "c"]);
    assert!(found[1].items.is_empty());
    assert!(list("no list here", "x").is_err());
    assert!(list("<!-- tidy:x -->\ntext\n", "x").is_err());
    assert!(list("<!-- tidy:x -->\n```text\na: b\n", "x").is_err());
}

#[test]
fn only_allowed_siblings_are_normal_dependencies() {
    let mut core = member("core");
    core.deps = vec![
        ("leaf".to_owned(), "normal".to_owned()),
        ("threads".to_owned(), "dev".to_owned()),
        ("anyhow".to_owned(), "normal".to_owned()),
    ];
    let mut leaf = member("leaf");
    leaf.deps = vec![("threads".to_owned(), "build".to_owned())];
    let all = [core, leaf, member("threads")];
    let problems = whats(check_dependencies(
        &rows("core: leaf\nleaf:\nthreads:\n"),
        &all,
    ));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("leaf/Cargo.toml:1: `leaf` depends on `threads` (build)"));
    let problems = whats(check_dependencies(&rows("core: leaf\nghost:\n"), &all));
    assert_eq!(problems.len(), 3, "{problems:?}"); // ghost, no leaf row, no threads row
}

#[test]
fn test_binaries_must_match_the_list() {
    let mut a = member("a");
    a.tests = vec![
        ("it".to_owned(), PathBuf::from("tests/it/main.rs")),
        ("leak".to_owned(), PathBuf::from("tests/leak.rs")),
    ];
    let mut b = member("b");
    b.tests = vec![("it".to_owned(), PathBuf::from("tests/it.rs"))];
    let all = [a, b];
    assert_eq!(
        whats(check_test_binaries(&rows("a: leak it\nb: it\n"), &all)),
        ["b/tests/it.rs:1: the `it` test binary's root is `tests/it/main.rs`"]
    );
    let problems = whats(check_test_binaries(&rows("a: it\nb: it\n"), &all));
    assert!(
        problems[0].contains("`a` has the test binaries [it leak], the list says [it]"),
        "{problems:?}"
    );
}

#[test]
fn published_crates_need_their_metadata() {
    let mut good = member("good");
    good.published = true;
    for field in super::PUBLISH_FIELDS {
        good.fields.insert(field, "x".to_owned());
    }
    good.fields
        .insert("documentation", "https://docs.rs/good".to_owned());
    let mut wrong_docs = good.clone();
    wrong_docs.name = "other".to_owned();
    let mut bare = member("bare");
    bare.published = true;
    let unpublished = member("tool");
    let problems = whats(check_package_metadata(&[
        good,
        wrong_docs,
        bare,
        unpublished,
    ]));
    assert_eq!(
        problems.len(),
        1 + super::PUBLISH_FIELDS.len(),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`documentation` is not `https://docs.rs/other`"))
    );
}

#[test]
fn unsafe_is_allowed_only_where_listed() {
    let all = [member("a"), member("b")];
    let sources = BTreeMap::from([
        (
            PathBuf::from("a/src/sys.rs"),
            "//! S.\nfn f() { unsafe { g() } }\n".to_owned(),
        ),
        (
            PathBuf::from("a/src/ch.rs"),
            "//! C.\nfn other() { unsafe { g() } }\npub unsafe fn adopt() {\n    unsafe { h() }\n}\n"
                .to_owned(),
        ),
        (
            PathBuf::from("a/src/bin/tool.rs"),
            "//! T.\nfn main() { unsafe { g() } }\n".to_owned(),
        ),
        (
            PathBuf::from("b/src/lib.rs"),
            "//! L.\n// unsafe in a comment\nunsafe impl Send for X {}\n".to_owned(),
        ),
        (
            PathBuf::from("b/tests/it/main.rs"),
            "//! I.\nfn t() { unsafe { g() } }\n".to_owned(),
        ),
    ]);
    let list = rows("a: src/sys.rs src/ch.rs#adopt src/gone.rs\nb:\n");
    let (problems, counts) = check_unsafe(&list, &all, &sources);
    assert_eq!(
        whats(problems),
        [
            "a/src/ch.rs:2: `unsafe` (Block) outside the places ARCHITECTURE.md allows for `a` \
             (its `tidy:unsafe` list): keep it at the OS seam",
            "b/src/lib.rs:3: `unsafe` (Impl) outside the places ARCHITECTURE.md allows for `b` \
             (its `tidy:unsafe` list): keep it at the OS seam",
            "ARCHITECTURE.md:5: `tidy:unsafe` lists `a/src/gone.rs`, which holds no `unsafe`: \
             remove it",
        ]
    );
    assert_eq!(counts["a"].to_string(), "3 blocks, 1 fn");
    assert_eq!(counts["b"].to_string(), "1 impl");
}

#[test]
fn members_are_read_from_cargo_metadata() {
    let json = r#"{
        "workspace_root": "/w",
        "workspace_members": ["a-id", "t-id"],
        "packages": [
            {"id": "a-id", "name": "a", "manifest_path": "/w/a/Cargo.toml", "publish": null,
             "description": "d", "license": "MIT", "repository": "r", "homepage": "h",
             "documentation": "https://docs.rs/a", "readme": "README.md",
             "keywords": ["k"], "categories": [],
             "dependencies": [{"name": "t", "kind": null}, {"name": "x", "kind": "dev"}],
             "targets": [{"name": "a", "kind": ["lib"], "src_path": "/w/a/src/lib.rs"},
                         {"name": "it", "kind": ["test"], "src_path": "/w/a/tests/it/main.rs"}]},
            {"id": "t-id", "name": "t", "manifest_path": "/w/t/Cargo.toml", "publish": [],
             "dependencies": [], "targets": []},
            {"id": "dep-id", "name": "dep", "manifest_path": "/r/dep/Cargo.toml",
             "dependencies": [], "targets": []}
        ]
    }"#;
    let found = members(json).expect("parsed");
    assert_eq!(found.len(), 2);
    let a = &found[0];
    assert_eq!(a.dir, PathBuf::from("a"));
    assert_eq!(
        a.deps,
        [
            ("t".to_owned(), "normal".to_owned()),
            ("x".to_owned(), "dev".to_owned())
        ]
    );
    assert_eq!(
        a.tests,
        [("it".to_owned(), PathBuf::from("tests/it/main.rs"))]
    );
    assert!(a.published);
    assert_eq!(a.fields["keywords"], "k");
    assert_eq!(a.fields["categories"], "");
    assert!(!found[1].published);
}
