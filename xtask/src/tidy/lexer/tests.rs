//! Unit tests of the lexer: what counts as code and what is blanked out.

use super::{UnsafeKind, code_only, fn_span, unsafe_sites};

fn kinds(text: &str) -> Vec<(usize, UnsafeKind)> {
    unsafe_sites(text)
        .into_iter()
        .map(|s| (s.line, s.kind))
        .collect()
}

#[test]
fn each_kind_of_unsafe_is_found_on_its_line() {
    let text = concat!(
        "//! T.\n",
        "unsafe fn f() {}\n",
        "fn g() { let _ = unsafe { f() }; }\n",
        "unsafe impl Send for X {}\n",
        "unsafe trait T {}\n",
        "unsafe extern \"C\" { fn h(); }\n",
        "#[unsafe(no_mangle)] fn k() {}\n",
    );
    assert_eq!(
        kinds(text),
        [
            (2, UnsafeKind::Fn),
            (3, UnsafeKind::Block),
            (4, UnsafeKind::Impl),
            (5, UnsafeKind::Trait),
            (6, UnsafeKind::Extern),
            (7, UnsafeKind::Other),
        ]
    );
}

#[test]
fn comments_strings_and_chars_are_not_code() {
    let text = concat!(
        "//! unsafe in module docs\n",
        "/// unsafe in item docs\n",
        "// SAFETY: not unsafe\n",
        "/* unsafe /* nested unsafe */ still unsafe */\n",
        "const A: &str = \"unsafe { \\\" unsafe\";\n",
        "const B: &str = r#\"unsafe \" unsafe\"#;\n",
        "const C: &[u8] = br\"unsafe\";\n",
        "const D: char = '\"'; const E: u8 = b'\\'';\n",
        "fn f<'a>(x: &'a str) -> &'a str { x }\n",
        "fn not_unsafe_fn() {} fn my_unsafe() {}\n",
    );
    assert!(kinds(text).is_empty(), "{:?}", code_only(text));
}

#[test]
fn a_lifetime_does_not_start_a_literal() {
    let text = "fn f<'a>(x: &'a u8) { unsafe { g(x) } }\n";
    assert_eq!(kinds(text), [(1, UnsafeKind::Block)]);
}

#[test]
fn lines_survive_blanking() {
    let text = "/* a\nb */ \"c\nd\"\nunsafe {}\n";
    assert_eq!(kinds(text), [(4, UnsafeKind::Block)]);
    assert_eq!(code_only(text).lines().count(), text.lines().count());
}

#[test]
fn a_function_span_covers_its_signature_and_body() {
    let text = concat!(
        "fn before() { unsafe {} }\n",
        "pub unsafe fn target(x: u8) -> u8 {\n",
        "    if x > 0 { unsafe { g() } } else { 0 }\n",
        "}\n",
        "fn after() { unsafe {} }\n",
    );
    let code = code_only(text);
    let span = fn_span(&code, "target").expect("found");
    let inside: Vec<usize> = unsafe_sites(text)
        .into_iter()
        .filter(|s| span.contains(&s.offset))
        .map(|s| s.line)
        .collect();
    assert_eq!(inside, [2, 3]);
    assert!(fn_span(&code, "missing").is_none());
}
