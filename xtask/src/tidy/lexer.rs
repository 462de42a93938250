//! Just enough of Rust's lexical grammar to find code words: comments,
//! string, byte-string, raw-string and character literals are blanked out
//! (newlines kept, so line numbers stay), lifetimes and everything else stay.
//!
//! Used to count the `unsafe` sites of a file without counting the word in
//! a comment (`// SAFETY: ... unsafe ...`), a doc comment or a string.

/// What follows an `unsafe` keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsafeKind {
    /// `unsafe { ... }`.
    Block,
    /// `unsafe fn`.
    Fn,
    /// `unsafe impl`.
    Impl,
    /// `unsafe trait`.
    Trait,
    /// `unsafe extern` (a block or an ABI).
    Extern,
    /// Anything else (an attribute such as `#[unsafe(no_mangle)]`).
    Other,
}

/// One `unsafe` keyword: its line (from 1), its kind, and its byte offset
/// in the blanked text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnsafeSite {
    pub(crate) line: usize,
    pub(crate) kind: UnsafeKind,
    pub(crate) offset: usize,
}

/// `text` with every comment and literal replaced by spaces (newlines kept):
/// the same length in bytes for ASCII, the same lines always.
pub(crate) fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && is_ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    blank(&mut out, '/');
                    blank(&mut out, '*');
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    blank(&mut out, '*');
                    blank(&mut out, '/');
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_start(&chars, i).filter(|_| !prev_ident) {
            // r"..", r#".."#, br"..", cr"..": no escapes, ends at `"` + hashes.
            let hashes = chars[i..i + len].iter().filter(|&&c| c == '#').count();
            for _ in 0..len {
                blank(&mut out, chars[i]);
                i += 1;
            }
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    for _ in 0..=hashes {
                        blank(&mut out, chars[i]);
                        i += 1;
                    }
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                blank(&mut out, d);
                i += 1;
                if d == '\\' && i < chars.len() {
                    blank(&mut out, chars[i]);
                    i += 1;
                } else if d == '"' {
                    break;
                }
            }
        } else if c == '\'' && char_literal_len(&chars, i).is_some() {
            let len = char_literal_len(&chars, i).unwrap_or(1);
            for _ in 0..len {
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Every `unsafe` keyword of `text`, outside comments and literals.
pub(crate) fn unsafe_sites(text: &str) -> Vec<UnsafeSite> {
    let code = code_only(text);
    words(&code)
        .filter(|(_, w)| *w == "unsafe")
        .map(|(offset, w)| {
            let after = code[offset + w.len()..].trim_start();
            let kind = if after.starts_with('{') {
                UnsafeKind::Block
            } else if starts_with_word(after, "fn") {
                UnsafeKind::Fn
            } else if starts_with_word(after, "impl") {
                UnsafeKind::Impl
            } else if starts_with_word(after, "trait") {
                UnsafeKind::Trait
            } else if starts_with_word(after, "extern") {
                UnsafeKind::Extern
            } else {
                UnsafeKind::Other
            };
            let line = code[..offset].matches('\n').count() + 1;
            UnsafeSite { line, kind, offset }
        })
        .collect()
}

/// The byte range of the item `fn name` in `code` (blanked by
/// [`code_only`]): from the start of the line of its signature to the brace
/// that closes its body. `None` when there is no such function.
pub(crate) fn fn_span(code: &str, name: &str) -> Option<std::ops::Range<usize>> {
    let mut found = None;
    let mut previous: Option<&str> = None;
    for (offset, word) in words(code) {
        if previous == Some("fn") && word == name {
            found = Some(offset);
            break;
        }
        previous = Some(word);
    }
    let at = found?;
    let start = code[..at].rfind('\n').map_or(0, |n| n + 1);
    let open = at + code[at..].find('{')?;
    let mut depth = 0usize;
    for (k, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(start..open + k + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The identifier-like words of `code`, with their byte offsets.
fn words(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = code.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = rest.peek() {
            if is_ident(c) {
                break;
            }
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some(&(k, c)) = rest.peek() {
            if !is_ident(c) {
                break;
            }
            end = k + c.len_utf8();
            rest.next();
        }
        Some((start, &code[start..end]))
    })
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.strip_prefix(word)
        .is_some_and(|rest| !rest.starts_with(is_ident))
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// At `i`, the length of a raw string's opening (`r#"` is 3), if one starts.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some(j + 1 - i)
}

/// At a `'`, the length of the character literal starting there, or `None`
/// for a lifetime or label (`'a`, `'static`).
fn char_literal_len(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            // '\n', '\'', '\x41', '\u{1F600}': up to the closing quote.
            let close = (i + 3..chars.len().min(i + 14)).find(|&k| chars[k] == '\'')?;
            Some(close + 1 - i)
        }
        _ => (chars.get(i + 2) == Some(&'\'')).then_some(3),
    }
}

#[cfg(test)]
mod tests;
