//! The module layers of `src/`, checked: no module imports from a layer above its
//! own, modules of one layer do not import each other, and the files inside one
//! module do not import each other in a cycle. README.md's *Layout* section
//! describes the same layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["secret", "time", "paths", "error", "net"],
    &["config"],
    &["session", "csrf", "edge"],
    &["telemetry", "metrics"],
    &["store"],
    &["oidc"],
    &["flows"],
    &["state"],
    &["proxy"],
    &["routes"],
    &["app"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("src/{module} is in no layer of tests/it/layers.rs"))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file, as its module path (`["oidc", "login"]`; a `mod.rs`
/// is its directory's module).
fn library_files() -> BTreeMap<Vec<String>, String> {
    fn walk(dir: &Path, module: Vec<String>, out: &mut BTreeMap<Vec<String>, String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if module.is_empty() && name == "bin" {
                    continue; // the binaries use the library from outside
                }
                let mut m = module.clone();
                m.push(name);
                walk(&path, m, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                if module.is_empty() && (name == "main" || name == "lib") {
                    continue;
                }
                let mut m = module.clone();
                if name != "mod" {
                    m.push(name);
                }
                out.insert(m, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), Vec::new(), &mut out);
    out
}

/// Code without comments (doc links are not imports) and without string contents.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `use` trees (`a::{b, c::d}`) into paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return vec![path.trim_end_matches("::*").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| match p.as_str() {
            "self" => prefix.trim_end_matches("::").to_string(),
            _ => format!("{prefix}{p}"),
        })
        .collect()
}

/// The crate paths `text` (the file of module `module`) refers to, as absolute
/// module paths (`super::` resolved).
fn referenced_paths(module: &[String], is_mod_rs: bool, text: &str) -> Vec<Vec<String>> {
    let code = code_only(text);
    let mut raw: Vec<String> = Vec::new();
    // `use` statements (possibly spanning lines).
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let body = stmt
            .strip_prefix("pub use ")
            .or_else(|| stmt.strip_prefix("pub(crate) use "))
            .or_else(|| stmt.strip_prefix("use "))
            .or_else(|| stmt.rsplit_once("\nuse ").map(|(_, b)| b))
            .or_else(|| stmt.rsplit_once("\npub use ").map(|(_, b)| b));
        if let Some(body) = body {
            raw.extend(expand(&body.replace('\n', " ")));
        }
    }
    // Paths written inline: `crate::a::b(...)`, `super::x::Y`.
    for anchor in ["crate::", "super::"] {
        for (i, _) in code.match_indices(anchor) {
            let before = code[..i].chars().last().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            raw.push(path);
        }
    }
    // A `mod.rs` is its directory's module: its `super` is the directory's parent.
    let parent: Vec<String> = if is_mod_rs {
        module[..module.len().saturating_sub(1)].to_vec()
    } else {
        module[..module.len() - 1].to_vec()
    };
    raw.into_iter()
        .filter_map(|p| {
            let segs: Vec<String> = p
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            match segs.first().map(String::as_str) {
                Some("crate") => Some(segs[1..].to_vec()),
                Some("super") => {
                    let mut abs = parent.clone();
                    abs.extend(segs[1..].iter().cloned());
                    Some(abs)
                }
                _ => None,
            }
        })
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn no_module_imports_from_a_layer_above_it_or_beside_it() {
    let mut problems = BTreeSet::new();
    for (module, text) in library_files() {
        let own = &module[0];
        let is_mod = src().join(module.join("/")).join("mod.rs").exists();
        for path in referenced_paths(&module, is_mod, &text) {
            let target = &path[0];
            if target == own {
                continue;
            }
            let (from, to) = (layer_of(own), layer_of(target));
            if to >= from {
                problems.insert(format!(
                    "src/{} uses {} (layer {to}, not below {own}'s layer {from})",
                    module.join("/"),
                    path.join("::")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_files_of_one_module_import_each_other_without_cycles() {
    let files = library_files();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in &files {
        let is_mod = src().join(module.join("/")).join("mod.rs").exists();
        if is_mod {
            continue; // a directory's mod.rs re-exports its children
        }
        for path in referenced_paths(module, false, text) {
            // The longest prefix of `path` that is a file of the same parent module.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| files.contains_key(p));
            if let Some(t) = target {
                let siblings =
                    t.len() == module.len() && t[..t.len() - 1] == module[..module.len() - 1];
                let t_is_mod = src().join(t.join("/")).join("mod.rs").exists();
                if siblings && t != *module && !t_is_mod {
                    edges.entry(module.clone()).or_default().insert(t);
                }
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            return Some(stack[i..].to_vec());
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(cycle) = visit(m, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_imports_and_inline_paths() {
    let m = vec!["oidc".to_string(), "login".to_string()];
    let paths = referenced_paths(
        &m,
        false,
        "use crate::config::{OidcSettings, ServerSettings as S};\n\
         use super::provider::Provider;\n\
         // use crate::routes::X;\n\
         fn f() { crate::session::crypto::random_token(1); }",
    );
    let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert!(
        joined.contains(&"config::OidcSettings".to_string()),
        "{joined:?}"
    );
    assert!(
        joined.contains(&"config::ServerSettings".to_string()),
        "{joined:?}"
    );
    assert!(
        joined.contains(&"oidc::provider::Provider".to_string()),
        "{joined:?}"
    );
    assert!(
        joined.contains(&"session::crypto::random_token".to_string()),
        "{joined:?}"
    );
    assert!(
        !joined.iter().any(|p| p.starts_with("routes")),
        "{joined:?}"
    );
}
