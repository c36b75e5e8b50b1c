//! `remove` and `rename` on the config's text: an account's sections go or are renamed, no more.
//!
//! The file is read as lines, not parsed and written back: a TOML writer would drop the
//! person's comments and layout. Each result is checked against what a parser sees (the
//! same document with that one account gone or moved), so a file the line reading gets wrong
//! (an account written as an inline table, say) is refused rather than damaged.

use std::ops::Range;

use anyhow::{Result, bail};

/// A table header line: its key path (decoded) and where each key of it is in the line.
struct Header {
    keys: Vec<(String, Range<usize>)>,
}

impl Header {
    fn is_of(&self, name: &str) -> bool {
        self.keys.len() >= 2 && self.keys[0].0 == "accounts" && self.keys[1].0 == name
    }
}

/// One line of the file and what it is.
struct Line<'a> {
    text: &'a str,
    /// The header this line is, when it is one.
    header: Option<Header>,
    /// A comment line (outside any multi-line string).
    comment: bool,
}

/// Where a multi-line string left off at the end of a line.
#[derive(Clone, Copy, PartialEq)]
enum Open {
    None,
    Basic,
    Literal,
}

/// The text without account `name`'s sections (`[accounts.NAME]`, `[accounts.NAME.x]`), each
/// with the comment lines right above its header; the rest byte for byte.
pub fn without_account(text: &str, name: &str) -> Result<String> {
    let lines = read_lines(text);
    let mut out = String::with_capacity(text.len());
    let mut reached_end = false;
    for (region, header) in regions(&lines) {
        let dropped = header.is_some_and(|h| h.is_of(name));
        if !dropped {
            out.extend(lines[region].iter().map(|l| l.text));
        } else {
            reached_end = region.end == lines.len();
        }
    }
    if reached_end {
        // The blank lines that stood before the last section would now end the file.
        let kept = out.trim_end_matches(['\n', '\r', ' ', '\t']).len();
        out.truncate(kept);
        if !out.is_empty() {
            out.push('\n');
        }
    }
    check(text, &out, name, None)?;
    Ok(out)
}

/// The text with account `old`'s section headers naming `new` instead; the rest byte for byte.
pub fn renamed_account(text: &str, old: &str, new: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len() + 64);
    for line in read_lines(text) {
        match &line.header {
            Some(h) if h.is_of(old) => {
                let at = h.keys[1].1.clone();
                out.push_str(&line.text[..at.start]);
                out.push_str(&key_text(new, &line.text[at.clone()]));
                out.push_str(&line.text[at.end..]);
            }
            _ => out.push_str(line.text),
        }
    }
    check(text, &out, old, Some(new))?;
    Ok(out)
}

/// `name` written as a key, in the old key's quotes if it had them (names never hold a quote
/// or a backslash: `validate_account_name`).
fn key_text(name: &str, old: &str) -> String {
    let bare = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    match old.chars().next() {
        Some(q @ ('"' | '\'')) => format!("{q}{name}{q}"),
        _ if bare => name.to_string(),
        _ => format!("\"{name}\""),
    }
}

/// What a parser makes of `before` and `after` must differ only by the account: gone, or
/// moved to `new`. Otherwise the file is written in a way the line reading does not follow.
fn check(before: &str, after: &str, name: &str, new: Option<&str>) -> Result<()> {
    let mut expected: toml::Table = toml::from_str(before)?;
    let accounts = expected.get_mut("accounts").and_then(|a| a.as_table_mut());
    let Some((accounts, account)) = accounts.and_then(|a| a.remove(name).map(|acct| (a, acct)))
    else {
        bail!("there is no account `{name}` in it");
    };
    if let Some(new) = new {
        accounts.insert(new.to_string(), account);
    }
    let same = toml::from_str::<toml::Table>(after)
        .is_ok_and(|got| got == expected || empty_accounts(&got, &expected));
    if !same {
        bail!(
            "account `{name}` is not written as its own [accounts.{name}] section (an inline table or dotted keys?)"
        );
    }
    Ok(())
}

/// The two differ only in an empty `accounts` table being there or not.
fn empty_accounts(a: &toml::Table, b: &toml::Table) -> bool {
    let strip = |t: &toml::Table| {
        let mut t = t.clone();
        if t.get("accounts")
            .and_then(|a| a.as_table())
            .is_some_and(|a| a.is_empty())
        {
            t.remove("accounts");
        }
        t
    };
    strip(a) == strip(b)
}

/// The lines, each with its ending, marked as headers and comments.
fn read_lines(text: &str) -> Vec<Line<'_>> {
    let mut open = Open::None;
    text.split_inclusive('\n')
        .map(|text| {
            let at_start = open;
            open = scan(text, open);
            let trimmed = text.trim_start();
            Line {
                text,
                header: (at_start == Open::None).then(|| header(text)).flatten(),
                comment: at_start == Open::None && trimmed.starts_with('#'),
            }
        })
        .collect()
}

/// The file cut into regions: what comes before the first header (no header), then one per
/// header, from the comment lines right above it to those right above the next one (those
/// that open the file stay with the file).
fn regions<'l>(lines: &'l [Line<'l>]) -> Vec<(Range<usize>, Option<&'l Header>)> {
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.header.is_some())
        .map(|(i, _)| {
            let mut start = i;
            while start > 0 && lines[start - 1].comment {
                start -= 1;
            }
            // Comments that open the file are about the file.
            if start == 0 { i } else { start }
        })
        .collect();
    let headers = lines.iter().filter_map(|l| l.header.as_ref());
    let mut out = vec![(0..starts.first().copied().unwrap_or(lines.len()), None)];
    for (k, h) in headers.enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        out.push((starts[k]..end, Some(h)));
    }
    out
}

/// Where a line leaves multi-line strings, read from where the last one left them.
fn scan(line: &str, mut open: Open) -> Open {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match open {
            Open::Basic => {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i..].starts_with(b"\"\"\"") {
                    open = Open::None;
                    i += 3;
                    continue;
                }
            }
            Open::Literal => {
                if b[i..].starts_with(b"'''") {
                    open = Open::None;
                    i += 3;
                    continue;
                }
            }
            Open::None => match b[i] {
                b'#' => return open,
                b'"' if b[i..].starts_with(b"\"\"\"") => {
                    open = Open::Basic;
                    i += 3;
                    continue;
                }
                b'\'' if b[i..].starts_with(b"'''") => {
                    open = Open::Literal;
                    i += 3;
                    continue;
                }
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                }
                b'\'' => {
                    i += 1;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    open
}

/// The line as a table header (`[a.b]`, `[[a.b]]`, with quoted keys and spaces), or None.
fn header(line: &str) -> Option<Header> {
    let b = line.as_bytes();
    let ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    let mut i = 0;
    ws(&mut i);
    if b.get(i) != Some(&b'[') {
        return None;
    }
    i += 1;
    let array = b.get(i) == Some(&b'[');
    if array {
        i += 1;
    }
    let mut keys = Vec::new();
    loop {
        ws(&mut i);
        let start = i;
        let key = match *b.get(i)? {
            b'"' => {
                let mut key = String::new();
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            let (c, len) = escape(&line[i + 1..])?;
                            key.push(c);
                            i += 1 + len;
                        }
                        _ => {
                            let c = line[i..].chars().next()?;
                            key.push(c);
                            i += c.len_utf8();
                        }
                    }
                }
                i += 1;
                key
            }
            b'\'' => {
                let end = line[i + 1..].find('\'')?;
                let key = line[i + 1..i + 1 + end].to_string();
                i += end + 2;
                key
            }
            _ => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'-')) {
                    i += 1;
                }
                if i == start {
                    return None;
                }
                line[start..i].to_string()
            }
        };
        keys.push((key, start..i));
        ws(&mut i);
        match *b.get(i)? {
            b'.' => i += 1,
            b']' => {
                i += 1;
                if array {
                    if b.get(i) != Some(&b']') {
                        return None;
                    }
                    i += 1;
                }
                break;
            }
            _ => return None,
        }
    }
    ws(&mut i);
    let rest = line[i..].trim_end_matches(['\n', '\r']);
    (rest.is_empty() || rest.starts_with('#')).then_some(Header { keys })
}

/// A basic string's escape after its backslash: the character and how many bytes it took.
fn escape(s: &str) -> Option<(char, usize)> {
    let c = s.chars().next()?;
    let simple = match c {
        'b' => '\u{8}',
        't' => '\t',
        'n' => '\n',
        'f' => '\u{c}',
        'r' => '\r',
        'e' => '\u{1b}',
        '"' => '"',
        '\\' => '\\',
        'u' | 'U' => {
            let len = if c == 'u' { 4 } else { 8 };
            let hex = s.get(1..1 + len)?;
            let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
            return Some((c, 1 + len));
        }
        _ => return None,
    };
    Some((simple, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# mailtoken config
refresh_margin = 600

# the office
[accounts.work]
provider = \"microsoft\" # comment with [accounts.home] in it
client_id = \"a\"
notify_command = \"\"\"
[accounts.work2]
\"\"\"

[accounts.work.resources]
graph = [\"https://graph.microsoft.com/User.Read\"]

# my second job
[accounts.work2]
provider = \"google\"
client_id = \"b\"

[ accounts . \"me@home.org\" ]   # quoted
provider = \"google\"
client_id = \"c\"
";

    #[test]
    fn an_account_goes_with_its_sub_tables_and_its_comment() {
        let out = without_account(FILE, "work").unwrap();
        assert_eq!(
            out,
            "\
# mailtoken config
refresh_margin = 600

# my second job
[accounts.work2]
provider = \"google\"
client_id = \"b\"

[ accounts . \"me@home.org\" ]   # quoted
provider = \"google\"
client_id = \"c\"
"
        );
    }

    #[test]
    fn a_name_that_is_a_prefix_of_another_takes_only_its_own() {
        let out = without_account(FILE, "work2").unwrap();
        assert!(out.contains("[accounts.work]\n") && out.contains("[accounts.work.resources]"));
        assert!(!out.contains("my second job") && !out.contains("client_id = \"b\""));
        assert!(out.contains("\"\"\"\n[accounts.work2]\n\"\"\""), "{out}");
    }

    #[test]
    fn the_last_account_goes_with_the_blank_lines_before_it_and_no_newline_at_the_end() {
        let text = "[accounts.a]\nclient_id = \"x\"\nprovider = \"google\"\n\n\n['accounts'.\"me@home.org\"]\nprovider = \"google\"\nclient_id = \"c\"";
        assert_eq!(
            without_account(text, "me@home.org").unwrap(),
            "[accounts.a]\nclient_id = \"x\"\nprovider = \"google\"\n"
        );
        let only = "[accounts.a]\nprovider = \"google\"\nclient_id = \"x\"\n";
        assert_eq!(without_account(only, "a").unwrap(), "");
        let commented = format!("# mailtoken\n{only}");
        assert_eq!(without_account(&commented, "a").unwrap(), "# mailtoken\n");
    }

    #[test]
    fn renaming_changes_the_headers_only() {
        let out = renamed_account(FILE, "work", "office").unwrap();
        assert_eq!(
            out,
            FILE.replace("[accounts.work]\n", "[accounts.office]\n")
                .replace("[accounts.work.resources]", "[accounts.office.resources]")
        );
        let out = renamed_account(FILE, "me@home.org", "home").unwrap();
        assert!(
            out.contains("[ accounts . \"home\" ]   # quoted\n"),
            "{out}"
        );
        let out = renamed_account(FILE, "work2", "x.y").unwrap();
        assert!(out.contains("[accounts.\"x.y\"]\n"), "{out}");
        assert!(out.contains("\"\"\"\n[accounts.work2]\n\"\"\""), "{out}");
    }

    #[test]
    fn accounts_written_another_way_are_refused_unchanged() {
        for text in [
            "[accounts]\nwork = { provider = \"google\", client_id = \"a\" }\n",
            "[accounts]\nwork.provider = \"google\"\nwork.client_id = \"a\"\n",
        ] {
            let e = without_account(text, "work").unwrap_err().to_string();
            assert!(e.contains("not written as its own"), "{e}");
            assert!(renamed_account(text, "work", "x").is_err());
        }
        assert!(without_account(FILE, "nobody").is_err());
    }

    #[test]
    fn headers_are_read_as_toml_writes_them() {
        let keys =
            |l: &str| header(l).map(|h| h.keys.into_iter().map(|(k, _)| k).collect::<Vec<_>>());
        assert_eq!(keys("[a.b]\n").unwrap(), ["a", "b"]);
        assert_eq!(keys("[[a . 'b.c' ]] # x\r\n").unwrap(), ["a", "b.c"]);
        assert_eq!(keys("[a.\"\\u0040x\"]").unwrap(), ["a", "@x"]);
        assert!(keys("[\"a\", \"b\"],").is_none());
        assert!(keys("[a.b] x").is_none());
        assert!(keys("a = [1]").is_none());
        assert!(keys("[[a]").is_none());
    }
}
