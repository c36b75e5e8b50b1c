//! The crate map's layer rule (lib.rs), held by a test: every `crate::` path in a module names
//! its own layer or one listed before it, and no two modules use each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers of lib.rs's map, lowest first: the backticked names before each item's colon.
fn layers(lib: &str) -> Vec<Vec<String>> {
    lib.lines()
        .skip_while(|l| !l.starts_with("//! # Map"))
        .filter_map(|l| l.strip_prefix("//! - "))
        .map(|item| {
            let names = item.split(':').next().unwrap_or("");
            names
                .split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

/// The top-level modules that the code (not the comments) of every file under `dir` names
/// with `crate::`.
fn uses(dir: &Path, found: &mut BTreeSet<String>) {
    let files: Vec<_> = if dir.is_dir() {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    } else {
        vec![dir.to_path_buf()]
    };
    for path in files {
        if path.is_dir() {
            uses(&path, found);
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + 7..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a, b::{c, d}}`: the names at the group's own depth.
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            found.insert(ident(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.insert(ident(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                found.insert(ident(rest));
            }
        }
    }
}

#[test]
fn every_module_uses_only_its_layer_and_those_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = layers(&lib);
    let layer_of: BTreeMap<String, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, names)| names.iter().map(move |n| (n.clone(), i)))
        .collect();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect();
    let mapped: BTreeSet<String> = layer_of.keys().cloned().collect();
    assert_eq!(declared, mapped, "lib.rs's modules and its map differ");

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for module in &declared {
        let dir = src.join(module);
        let path = if dir.is_dir() {
            dir
        } else {
            src.join(format!("{module}.rs"))
        };
        let mut found = BTreeSet::new();
        uses(&path, &mut found);
        found.retain(|name| name != module && declared.contains(name));
        for used in &found {
            if layer_of[used] > layer_of[module] {
                wrong.push(format!("{module} uses {used}, a layer above it"));
            }
        }
        graph.insert(module.clone(), found);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Within a layer, modules may use each other, but never in a circle.
    fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in &graph[&m] {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        false
    }
    let circles: Vec<String> = declared
        .iter()
        .filter(|m| reaches(&graph, m, m))
        .cloned()
        .collect();
    assert!(
        circles.is_empty(),
        "modules in an import cycle: {circles:?}"
    );
    assert!(layers.len() > 5, "the map was not read: {layers:?}");
}
