//! Architecture checked by a test: within each crate of the engine, the top-level modules import
//! each other without a cycle, so that each can be read (and changed) knowing only the ones below
//! it. A module's imports are the `crate::<module>` paths in its code (doc comments and its test
//! module excluded: a doc link or a test helper is not a dependency).
//!
//! When this fails, it names the cycle. Break it the way the rest of the code does: a type both
//! sides need goes down into the lower module (with a `pub use` where the old path is public), and
//! a part that needs a higher one is handed what it needs instead of importing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name → the modules of the same crate it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The crates whose modules must not import each other in a cycle.
const CRATES: &[&str] = &["engine/core/src", "engine/store/src", "engine/server/src"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the repository").to_owned()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The code of a source file that counts as its imports: no comment lines, nothing from its test
/// module on (`#[cfg(test)]` before `mod`: clippy keeps test modules last; a `#[cfg(test)]` on
/// anything else, inside a macro say, stays code).
fn code_of(text: &str) -> String {
    let mut end = text.len();
    for (at, _) in text.match_indices("#[cfg(test)]") {
        if text[at + "#[cfg(test)]".len()..].trim_start().starts_with("mod ") {
            end = at;
            break;
        }
    }
    text[..end].lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The modules a piece of code imports: `crate::a::...`, and each name in `crate::{a, b::c}`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && is_ident(code.as_bytes()[at - 1]) {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A group: the first segment of each comma-separated path at the group's top level.
            let (mut depth, mut item) = (0, String::new());
            let mut items = Vec::new();
            for ch in group.chars() {
                match ch {
                    '}' if depth == 0 => break,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if ch != ',' || depth > 0 {
                    item.push(ch);
                }
            }
            items.push(item);
            for item in items {
                let name: String = item.trim_start().chars().take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_').collect();
            found.insert(name);
        }
    }
    found.remove("self");
    found
}

/// The module graph of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a path").as_os_str().to_string_lossy().into_owned();
        let module = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let mut text = std::fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        // In a top-level module's own file, `super::` is the crate root.
        if relative.components().count() == 1 {
            text = text.replace("super::", "crate::");
        }
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imports(&code_of(&text)).into_iter().filter(|target| *target != module));
    }
    graph
}

/// A cycle of the graph, as the modules around it (first repeated last), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(node: &str, graph: &Graph, marks: &mut BTreeMap<String, Mark>, path: &mut Vec<String>) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|step| step == node).expect("an open node is on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph.keys().find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn no_crate_has_a_cycle_among_its_modules() {
    for src in CRATES {
        let graph = module_graph(&repository().join(src));
        assert!(graph.len() >= 3, "{src}: found only {:?}: is the path right?", graph.keys());
        if let Some(cycle) = find_cycle(&graph) {
            panic!("{src}: modules import each other in a cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    let code = code_of(
        "use crate::a::Thing;\nuse crate::{b, c::{D, E}, self};\n// crate::commented\n/// [`crate::doc`]\nlet x = crate::f::g();\nnotcrate::h;\n#[cfg(test)]\nfn helper() { crate::i::j() }\n#[cfg(test)]\nmod tests { use crate::test_only; }",
    );
    assert_eq!(imports(&code), BTreeSet::from(["a".to_owned(), "b".into(), "c".into(), "f".into(), "i".into()]));
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default();
    assert_eq!(find_cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
