//! The architecture checker (issue 12 point 3): which top-level module of
//! `src/` imports which, no cycles between them, and no forbidden edge.
//!
//! The checker is a pure function from source files to violations, so it is
//! tested here on synthetic trees; `architecture_tree.rs` runs it on the real
//! `src/`. It reads text, not a parsed crate: comments, doc comments, string
//! and character literals are blanked first, then every `crate::` path is
//! expanded (nested `use crate::{a::{b, c}, d}` groups included) and its
//! first segment, when it names a top-level module, is an edge.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::path::Path;

/// Module edges that must never exist, as (importer, imported).
pub const FORBIDDEN: &[(&str, &str)] = &[
    ("vault", "web"),
    ("store", "web"),
    ("store", "portal"),
    ("store", "pickup"),
    ("pickup", "portal"),
    ("portal", "pickup"),
    ("mail", "portal"),
    ("mail", "pickup"),
    ("mail", "web"),
    ("config", "mail"),
    ("web", "portal"),
    ("web", "pickup"),
    ("metrics", "app"),
    ("mail", "app"),
];

/// The lower layers: none of them may import a module in [`TOP`].
pub const BELOW: &[&str] = &[
    "store", "vault", "mail", "config", "clock", "audit", "text", "ids",
];

/// The layers of `docs/architecture.md`, lowest first. A module may import
/// only from lower layers: never upwards, and never sideways (two features,
/// or two leaves, share through a lower layer).
pub const LAYERS: &[&[&str]] = &[
    &[
        "text",
        "ids",
        "paging",
        "filetype",
        "scan",
        "clock",
        "client_net",
        "private_fs",
        "tls",
        "config",
    ],
    &["store"],
    &["vault"],
    &["audit"],
    &["settings", "metrics"],
    &["deliveries", "incoming", "requests", "idempotency"],
    &["mail", "webhooks"],
    &["staff"],
    &["web"],
    &["app"],
    &["flows"],
    &["portal", "pickup", "api"],
    &["server"],
    &["cli"],
];

/// Every (importer, imported) pair [`LAYERS`] rules out.
pub fn layer_rules() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for (i, layer) in LAYERS.iter().enumerate() {
        for from in *layer {
            let sideways = layer.iter().filter(|to| *to != from);
            let upwards = LAYERS[i + 1..].iter().flat_map(|l| l.iter());
            out.extend(sideways.chain(upwards).map(|to| (*from, *to)));
        }
    }
    out
}

/// What wires the application together; only the root and each other use them.
pub const TOP: &[&str] = &["app", "server", "cli"];

/// One source file: its path below `src/` (`pickup/verify.rs`) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.to_owned(),
            text: text.to_owned(),
        }
    }
}

/// One `crate::` path that makes an edge between two top-level modules.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Import {
    /// The file, below `src/`.
    pub file: String,
    /// 1-based line of the path's first segment after `crate::`.
    pub line: usize,
    /// The path as written, groups expanded: `crate::portal::format_time`.
    pub path: String,
}

impl fmt::Display for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src/{}:{}: {}", self.file, self.line, self.path)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `modules[0] → modules[1] → … → modules[0]`; `witnesses[i]` is one
    /// import that makes the edge from `modules[i]` to the next.
    Cycle {
        modules: Vec<String>,
        witnesses: Vec<Import>,
    },
    /// An edge the rules forbid, with every import that makes it.
    Forbidden {
        from: String,
        to: String,
        imports: Vec<Import>,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Cycle { modules, witnesses } => {
                let mut ring = modules.clone();
                ring.extend(modules.first().cloned());
                writeln!(f, "cycle: {}", ring.join(" → "))?;
                for (i, w) in witnesses.iter().enumerate() {
                    let to = &modules[(i + 1) % modules.len()];
                    writeln!(f, "    {} → {to}: {w}", modules[i])?;
                }
                Ok(())
            }
            Violation::Forbidden { from, to, imports } => {
                writeln!(f, "forbidden edge: {from} → {to}")?;
                for i in imports {
                    writeln!(f, "    {i}")?;
                }
                Ok(())
            }
        }
    }
}

/// Every violation, one block each, for a failing test's message.
pub fn report(violations: &[Violation]) -> String {
    violations.iter().map(ToString::to_string).collect()
}

/// The top-level module a file belongs to: `foo.rs` and `foo/**` are `foo`;
/// `lib.rs` and `main.rs` are the crate root (`None`).
pub fn module_of(path: &str) -> Option<String> {
    let first = path.split('/').next()?;
    if path.contains('/') {
        return Some(first.to_owned());
    }
    let name = first.strip_suffix(".rs")?;
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Every `crate::` path in `text`, groups expanded, with its line; comments
/// and literals do not count.
pub fn crate_paths(text: &str) -> Vec<(usize, Vec<String>)> {
    let tokens = tokens(&blank_comments_and_literals(text));
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = tokens[i].text == "crate"
            && tokens.get(i + 1).is_some_and(|t| t.text == "::")
            // `a::crate::b` is not a path from the crate root.
            && !(i > 0 && tokens[i - 1].text == "::");
        if starts_path {
            let mut pos = i + 2;
            use_tree(
                &tokens,
                &mut pos,
                &["crate".to_owned()],
                tokens[i + 1].line,
                &mut out,
            );
            i = pos.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// The edges between top-level modules and the imports that make them.
pub fn edges(files: &[SourceFile]) -> BTreeMap<(String, String), Vec<Import>> {
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&f.path)).collect();
    let mut out: BTreeMap<(String, String), Vec<Import>> = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(&file.path) else {
            continue;
        };
        for (line, segments) in crate_paths(&file.text) {
            let Some(to) = segments.get(1) else { continue };
            // Items of the root (`crate::run`) and the module itself are no edge.
            if *to == from || !modules.contains(to) {
                continue;
            }
            out.entry((from.clone(), to.clone()))
                .or_default()
                .push(Import {
                    file: file.path.clone(),
                    line,
                    path: segments.join("::"),
                });
        }
    }
    for imports in out.values_mut() {
        imports.sort();
    }
    out
}

/// Cycles first (one per edge that lies on one, duplicates removed), then
/// forbidden edges, each in a stable order.
pub fn check(files: &[SourceFile], forbidden: &[(&str, &str)]) -> Vec<Violation> {
    let edges = edges(files);
    let mut out = cycles(&edges);
    let below_top = BELOW.iter().flat_map(|b| TOP.iter().map(move |t| (*b, *t)));
    let rules: BTreeSet<(&str, &str)> = forbidden.iter().copied().chain(below_top).collect();
    for ((from, to), imports) in &edges {
        if rules.contains(&(from.as_str(), to.as_str())) {
            out.push(Violation::Forbidden {
                from: from.clone(),
                to: to.clone(),
                imports: imports.clone(),
            });
        }
    }
    out
}

/// Every `*.rs` file below `src`, with paths relative to it, sorted.
pub fn read_tree(src: &Path) -> std::io::Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(src)
                    .map_err(std::io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(SourceFile {
                    path: rel,
                    text: std::fs::read_to_string(&path)?,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

type Edges = BTreeMap<(String, String), Vec<Import>>;

/// For every edge `u → v` on a cycle, the shortest cycle through it
/// (breadth-first from `v` back to `u`); the same ring found from several
/// edges is reported once, rotated to start at its smallest module.
fn cycles(edges: &Edges) -> Vec<Violation> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    let mut out = Vec::new();
    for (u, v) in edges.keys() {
        let Some(back) = shortest_path(&next, v, u) else {
            continue;
        };
        // back runs v … u; the ring is u, v, …, (back without u at its end).
        let mut ring: Vec<String> = vec![u.clone()];
        ring.extend(back[..back.len() - 1].iter().map(|m| (*m).to_owned()));
        let start = ring
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.cmp(b.1))
            .map_or(0, |(i, _)| i);
        ring.rotate_left(start);
        if !seen.insert(ring.clone()) {
            continue;
        }
        let witnesses = (0..ring.len())
            .map(|i| {
                let key = (ring[i].clone(), ring[(i + 1) % ring.len()].clone());
                edges[&key][0].clone()
            })
            .collect();
        out.push(Violation::Cycle {
            modules: ring,
            witnesses,
        });
    }
    out
}

/// The modules on a shortest path `from … to` (both included), if any.
fn shortest_path<'a>(
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    from: &'a str,
    to: &'a str,
) -> Option<Vec<&'a str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut visited = BTreeSet::from([from]);
    while let Some(m) = queue.pop_front() {
        if m == to {
            let mut path = vec![to];
            let mut at = to;
            while let Some(p) = parent.get(at) {
                path.push(p);
                at = p;
            }
            path.reverse();
            return Some(path);
        }
        for n in next.get(m).into_iter().flatten() {
            if visited.insert(n) {
                parent.insert(n, m);
                queue.push_back(n);
            }
        }
    }
    None
}

#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

/// Identifiers and the punctuation a path needs (`::`, `{`, `}`, `,`, `*`,
/// `;`); anything else is a one-character token that ends a path.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(Token { text: word, line });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                text: "::".to_owned(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Parses one use tree (or code path) at `pos`, below `prefix`, pushing every
/// full path it names. Leaves `pos` after what it read.
fn use_tree(
    tokens: &[Token],
    pos: &mut usize,
    prefix: &[String],
    line: usize,
    out: &mut Vec<(usize, Vec<String>)>,
) {
    let mut path = prefix.to_vec();
    let mut first_line = None;
    while let Some(t) = tokens.get(*pos) {
        if t.text == "{" {
            *pos += 1;
            loop {
                match tokens.get(*pos).map(|t| t.text.as_str()) {
                    None => return,
                    Some("}") => {
                        *pos += 1;
                        return;
                    }
                    Some(",") => *pos += 1,
                    Some(_) => {
                        let before = *pos;
                        use_tree(tokens, pos, &path, t.line, out);
                        if *pos == before {
                            // Something a use tree cannot hold: skip it.
                            *pos += 1;
                        }
                    }
                }
            }
        }
        if t.text == "*" {
            *pos += 1;
            break;
        }
        if !is_identifier(&t.text) {
            break;
        }
        if path.len() == prefix.len() {
            first_line = Some(t.line);
        }
        path.push(t.text.clone());
        *pos += 1;
        if tokens.get(*pos).is_some_and(|t| t.text == "::") {
            *pos += 1;
        } else {
            break;
        }
    }
    if path.len() > prefix.len() {
        // `crate::{self, …}` names the root; `a::{self}` is `a`.
        if path[prefix.len()..] == ["self".to_owned()] {
            path.pop();
        }
        if path.len() > 1 {
            out.push((first_line.unwrap_or(line), path));
        }
    }
    if tokens.get(*pos).is_some_and(|t| t.text == "as") {
        *pos += 2;
    }
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s != "as"
}

/// `text` with every comment (line, block, doc), string, raw string, byte
/// string and character literal replaced by spaces; newlines are kept so
/// lines still count.
pub fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, cs: &[char]| {
        for c in cs {
            out.push(if *c == '\n' { '\n' } else { ' ' });
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && next == Some('/') {
            let end = chars[i..]
                .iter()
                .position(|c| *c == '\n')
                .map_or(chars.len(), |p| i + p);
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            let end = j.min(chars.len());
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if !prev_ident && let Some(end) = raw_string_end(&chars, i) {
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '\''
            && let Some(end) = char_literal_end(&chars, i)
        {
            blank(&mut out, &chars[i..end]);
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// End (exclusive) of a raw string literal (`r"…"`, `r#"…"#`, `br#"…"#`)
/// starting at `i`, if one does.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if chars.get(j) == Some(&'b') || chars.get(j) == Some(&'c') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take_while(|c| **c == '#').count() >= hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

/// End (exclusive) of a character literal at `i` (`'x'`, `'\n'`, `'\u{1F600}'`);
/// `None` for a lifetime or label (`'a`, `'static`).
fn char_literal_end(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            // Skip the escaped character: `'\''` closes on its last quote.
            let close = chars.get(i + 3..)?.iter().position(|c| *c == '\'')?;
            Some(i + 3 + close + 1)
        }
        _ if chars.get(i + 2) == Some(&'\'') => Some(i + 3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_layers_forbid_upward_and_sideways_imports() {
        let rules = super::layer_rules();
        for forbidden in [
            ("pickup", "portal"),
            ("portal", "pickup"),
            ("store", "web"),
            ("store", "vault"),
            ("mail", "app"),
            ("text", "ids"),
            ("config", "mail"),
        ] {
            assert!(rules.contains(&forbidden), "{forbidden:?}");
        }
        for allowed in [
            ("portal", "app"),
            ("mail", "deliveries"),
            ("vault", "store"),
        ] {
            assert!(!rules.contains(&allowed), "{allowed:?}");
        }
        let named: Vec<&str> = super::LAYERS
            .iter()
            .flat_map(|l| l.iter().copied())
            .collect();
        let unique: std::collections::BTreeSet<&&str> = named.iter().collect();
        assert_eq!(unique.len(), named.len(), "a module in two layers");
    }

    use super::*;

    fn paths(text: &str) -> Vec<String> {
        crate_paths(text)
            .into_iter()
            .map(|(_, p)| p.join("::"))
            .collect()
    }

    #[test]
    fn modules_are_the_first_path_component() {
        assert_eq!(module_of("pickup.rs").as_deref(), Some("pickup"));
        assert_eq!(module_of("pickup/verify.rs").as_deref(), Some("pickup"));
        assert_eq!(module_of("vault/a/b.rs").as_deref(), Some("vault"));
        assert_eq!(module_of("lib.rs"), None);
        assert_eq!(module_of("main.rs"), None);
    }

    #[test]
    fn nested_use_groups_are_expanded() {
        let text = "use crate::{a::{b, c::{d, e as f}}, g, self};\n\
                    use crate::h::*;\n\
                    use crate::i::{self as j, k};\n";
        assert_eq!(
            paths(text),
            [
                "crate::a::b",
                "crate::a::c::d",
                "crate::a::c::e",
                "crate::g",
                "crate::h",
                "crate::i",
                "crate::i::k",
            ]
        );
    }

    #[test]
    fn paths_in_code_count_with_their_line() {
        let text = "fn f() {\n    let x = crate::portal::format_time(1);\n    \
                    crate::web::Error::<T>::new(x)\n}\n\
                    pub(crate) fn g() {}\n";
        let found = crate_paths(text);
        assert_eq!(
            found,
            [
                (
                    2,
                    vec!["crate".into(), "portal".into(), "format_time".into()]
                ),
                (3, vec!["crate".into(), "web".into(), "Error".into()]),
            ]
        );
    }

    #[test]
    fn comments_doc_comments_and_literals_do_not_count() {
        let text = r###"
//! Uses [`crate::portal`] in a doc comment.
/// And `crate::web::x` here.
// use crate::mail;
/* use crate::app; /* nested crate::cli */
   still a comment crate::server */
fn f() -> &'static str {
    let _c = '"';
    let _q = '\'';
    let _s = "use crate::config;";
    let _r = r#"crate::clock "quoted" "#;
    let _b = b"crate::db";
    'outer: loop { break 'outer; }
    crate::vault::seal()
}
"###;
        assert_eq!(paths(text), ["crate::vault::seal"]);
        assert_eq!(
            crate_paths(text)[0].0,
            14,
            "lines survive the blanking of multi-line comments"
        );
    }

    #[test]
    fn a_multi_line_group_gives_each_import_its_own_line() {
        let text = "use crate::{\n    mail::outbox,\n    portal::{format_time, sent},\n};\n";
        let found = crate_paths(text);
        assert_eq!(found[0].0, 2);
        assert_eq!(found[1].0, 3);
        assert_eq!(found[2].1.join("::"), "crate::portal::sent");
    }

    #[test]
    fn a_clean_layered_tree_passes() {
        let files = [
            SourceFile::new("lib.rs", "pub mod app; pub mod pickup; pub mod web;"),
            SourceFile::new("app.rs", "use crate::pickup; use crate::web::Error;"),
            SourceFile::new("pickup.rs", "pub mod verify;"),
            SourceFile::new(
                "pickup/verify.rs",
                "use crate::web::ClientIp; use super::x;",
            ),
            SourceFile::new(
                "web.rs",
                "use crate::clock::Clock; pub fn run() { crate::run() }",
            ),
            SourceFile::new("clock.rs", ""),
        ];
        assert_eq!(check(&files, FORBIDDEN), []);
    }

    #[test]
    fn a_use_of_portal_in_pickup_is_reported_with_its_file_and_import() {
        let files = [
            SourceFile::new("pickup.rs", "pub mod verify;"),
            SourceFile::new(
                "pickup/verify.rs",
                "use std::sync::Arc;\n\nuse crate::portal::compose::normalise_fact;\n",
            ),
            SourceFile::new("portal.rs", "pub fn format_time() {}"),
        ];
        let found = check(&files, FORBIDDEN);
        assert_eq!(
            found,
            [Violation::Forbidden {
                from: "pickup".into(),
                to: "portal".into(),
                imports: vec![Import {
                    file: "pickup/verify.rs".into(),
                    line: 3,
                    path: "crate::portal::compose::normalise_fact".into(),
                }],
            }]
        );
        let text = report(&found);
        assert!(text.contains("forbidden edge: pickup → portal"), "{text}");
        assert!(
            text.contains("src/pickup/verify.rs:3: crate::portal::compose::normalise_fact"),
            "{text}"
        );
    }

    #[test]
    fn nothing_below_may_import_app_server_or_cli() {
        let files = [
            SourceFile::new("store.rs", "fn f(a: &crate::app::App) {}"),
            SourceFile::new("clock.rs", "use crate::{cli::Args, server};"),
            SourceFile::new("app.rs", ""),
            SourceFile::new("cli.rs", ""),
            SourceFile::new("server.rs", ""),
        ];
        let edges: Vec<(String, String)> = check(&files, &[])
            .into_iter()
            .map(|v| match v {
                Violation::Forbidden { from, to, .. } => (from, to),
                other => panic!("expected only forbidden edges, got {other}"),
            })
            .collect();
        assert_eq!(
            edges,
            [
                ("clock".to_owned(), "cli".to_owned()),
                ("clock".to_owned(), "server".to_owned()),
                ("store".to_owned(), "app".to_owned()),
            ]
        );
    }

    #[test]
    fn a_three_module_cycle_is_reported_with_one_import_per_edge() {
        let files = [
            SourceFile::new("a.rs", "pub mod inner;"),
            SourceFile::new("a/inner.rs", "\nuse crate::b::B;\n"),
            SourceFile::new("b.rs", "pub fn f() { crate::c::g() }"),
            SourceFile::new("c.rs", "use crate::{clock, a::{self, inner::X}};"),
            SourceFile::new("clock.rs", ""),
        ];
        let found = check(&files, &[]);
        assert_eq!(found.len(), 1, "{}", report(&found));
        let Violation::Cycle { modules, witnesses } = &found[0] else {
            panic!("expected a cycle: {}", report(&found));
        };
        assert_eq!(modules, &["a", "b", "c"]);
        assert_eq!(
            witnesses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            [
                "src/a/inner.rs:2: crate::b::B",
                "src/b.rs:1: crate::c::g",
                "src/c.rs:1: crate::a",
            ]
        );
        let text = report(&found);
        assert!(text.starts_with("cycle: a → b → c → a\n"), "{text}");
        assert!(text.contains("    c → a: src/c.rs:1: crate::a"), "{text}");
    }

    #[test]
    fn every_edge_of_a_tangle_is_on_some_reported_cycle() {
        // a ⇄ b and b → c → a: two rings share the edge a → b.
        let files = [
            SourceFile::new("a.rs", "use crate::b;"),
            SourceFile::new("b.rs", "use crate::{a, c};"),
            SourceFile::new("c.rs", "use crate::a;"),
        ];
        let rings: Vec<Vec<String>> = check(&files, &[])
            .into_iter()
            .filter_map(|v| match v {
                Violation::Cycle { modules, .. } => Some(modules),
                Violation::Forbidden { .. } => None,
            })
            .collect();
        assert_eq!(rings, [vec!["a", "b"], vec!["a", "b", "c"]]);
    }

    #[test]
    fn read_tree_names_files_relative_to_src() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("pickup")).expect("mkdir");
        std::fs::write(dir.path().join("lib.rs"), "pub mod pickup;").expect("write");
        std::fs::write(dir.path().join("pickup/verify.rs"), "use crate::portal::x;")
            .expect("write");
        std::fs::write(dir.path().join("pickup/notes.txt"), "crate::web").expect("write");
        let files = read_tree(dir.path()).expect("read tree");
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["lib.rs", "pickup/verify.rs"]);
    }
}
