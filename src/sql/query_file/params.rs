//! Query parameters: `SET spike_z = '4';` then `${spike_z}` wherever the SQL needs the value —
//! thresholds a payments team tunes without touching the query (ksqlDB's `${name}` spelling).
//! A `SET` of a name that is not an engine setting is a parameter only when the file refers to
//! it, so a misspelt setting is still refused. The value replaces the reference as written
//! (`'4'` → `4`; quote it inside for a string: `SET country = '''FR'''`, or write the reference
//! inside the quotes: `'${country}'`). Values hold no line breaks, so lines keep their numbers
//! (a column after a reference on its line may move by the length difference). The parameters'
//! `SET`s are blanked out (in `run` files and in `replay --query` files alike).

use std::collections::BTreeMap;

use super::{SETTINGS, position, statements, word};
use crate::error::{Error, Result};

/// The `${name}` references of `code`: each name and its byte offset.
fn references(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("${") {
        let at = from + i;
        let rest = &code[at + 2..];
        match rest.find('}') {
            Some(end)
                if rest[..end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && end > 0 =>
            {
                out.push((rest[..end].to_ascii_lowercase(), at));
                from = at + 2 + end + 1;
            }
            _ => from = at + 2,
        }
    }
    out
}

/// The text of one SQL string literal that is all of `v` (`''` inside is a quote), on one line.
fn quoted(v: &str) -> Option<String> {
    let inner = v.strip_prefix('\'')?;
    let mut out = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return chars.next().is_none().then_some(out),
            '\n' | '\r' => return None,
            c => out.push(c),
        }
    }
    None
}

/// The parameters `code` sets and uses, and `text` and `code` with every reference replaced;
/// a reference to a parameter never set is an error at its place.
pub(super) fn substitute(
    text: &str,
    code: &str,
) -> Result<(String, String, BTreeMap<String, String>)> {
    let refs = references(code);
    if refs.is_empty() {
        return Ok((text.to_string(), code.to_string(), BTreeMap::new()));
    }
    let mut params = BTreeMap::new();
    // The parameters' SETs, blanked once read (they are no statements of the query).
    let mut blanks: Vec<std::ops::Range<usize>> = Vec::new();
    for (offset, stmt) in statements(code) {
        let (w1, rest) = word(stmt.trim());
        if !w1.eq_ignore_ascii_case("SET") {
            continue;
        }
        let (k, rest) = word(rest);
        let key = k.to_ascii_lowercase();
        if SETTINGS.contains(&key.as_str()) || !refs.iter().any(|(n, _)| *n == key) {
            continue;
        }
        let v = rest.trim().trim_start_matches('=').trim();
        let v = v
            .strip_prefix("TO ")
            .or_else(|| v.strip_prefix("to "))
            .unwrap_or(v)
            .trim();
        let at = position(code, offset + stmt.len() - stmt.trim_start().len());
        let Some(v) = quoted(v) else {
            return Err(Error::Plan {
                position: at,
                message: format!(
                    "SET {key} needs one quoted value on its line, ending with `;`: SET {key} = '4';"
                ),
            });
        };
        params.insert(key, v);
        // Its `;` too: what is left starts with the query.
        let end = offset + stmt.len();
        let end = if code.as_bytes().get(end) == Some(&b';') {
            end + 1
        } else {
            end
        };
        blanks.push(offset..end);
    }
    // Byte for byte, so offsets hold.
    let blank = |s: &str| -> String {
        let mut out = String::with_capacity(s.len());
        for (i, c) in s.char_indices() {
            if c != '\n' && blanks.iter().any(|r| r.contains(&i)) {
                out.extend(std::iter::repeat_n(' ', c.len_utf8()));
            } else {
                out.push(c);
            }
        }
        out
    };
    let (text, code) = (blank(text), blank(code));
    let refs = references(&code);
    let mut out_text = String::with_capacity(text.len());
    let mut out_code = String::with_capacity(code.len());
    let mut last = 0;
    for (name, at) in &refs {
        if SETTINGS.contains(&name.as_str()) {
            return Err(Error::Plan {
                position: position(&code, *at),
                message: format!(
                    "`{name}` is an engine setting, not a parameter; give the parameter another name"
                ),
            });
        }
        let Some(value) = params.get(name) else {
            return Err(Error::Plan {
                position: position(&code, *at),
                message: format!(
                    "`${{{name}}}` is not set: write SET {name} = '…'; in the file (its value replaces the reference)"
                ),
            });
        };
        let len = name.len() + 3;
        out_text.push_str(&text[last..*at]);
        out_code.push_str(&code[last..*at]);
        out_text.push_str(value);
        out_code.push_str(value);
        last = at + len;
    }
    out_text.push_str(&text[last..]);
    out_code.push_str(&code[last..]);
    Ok((out_text, out_code, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_take_their_set_values_in_place() {
        // A SET missing its `;` does not swallow the next statement.
        let open = "SET z = '4'\nINSERT INTO s SELECT * FROM p WHERE v > ${z} AND c = 'FR';";
        assert!(
            substitute(open, open)
                .unwrap_err()
                .to_string()
                .contains("one quoted value")
        );
        // Inside a string literal too, without padding that would change the string.
        let inside = "SET c = 'FR';\nSELECT 1 WHERE x = '${c}'";
        let (t, _, _) = substitute(inside, inside).unwrap();
        assert!(
            crate::sql::query_file::substitute_parameters(inside)
                .unwrap()
                .ends_with("'FR'")
        );

        assert!(t.ends_with("WHERE x = 'FR'"), "{t}");
        let text = "SET spike_z = '4';\nSET country = '''FR''';\nINSERT INTO s SELECT * FROM p WHERE z > ${spike_z} AND c = ${country};";
        let (t, c, p) = substitute(text, text).unwrap();
        assert_eq!(t, c);
        assert!(t.contains("WHERE z > 4 AND c = 'FR';"), "{t}");
        assert_eq!(p.get("spike_z").map(String::as_str), Some("4"));
        let e = substitute("SELECT ${nope}", "SELECT ${nope}").unwrap_err();
        assert!(e.to_string().contains("`${nope}` is not set"), "{e}");
        assert!(e.to_string().contains("column 8"), "{e}");
        // No reference: nothing to do.
        assert_eq!(substitute("SET x = '1'", "SET x = '1'").unwrap().2.len(), 0);
    }
}
