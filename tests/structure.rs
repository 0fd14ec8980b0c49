//! The house rules that a compiler does not check, read from `src/` as Rust (syn): every file
//! opens with a `//!`, modules form layers (no import circle between top-level modules, nor
//! between the files of one folder), functions fit on a screen, and every invariant in
//! ARCHITECTURE.md names tests that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// The longest function allowed in `src/`, in lines from `fn` to its closing brace.
const MAX_FN_LINES: usize = 120;

/// Longer functions that stay, each with the reason (keep this list short).
const LONG_FN_ALLOWED: &[(&str, &str)] = &[];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, with its module path (`src/store/apply/inbound.rs` →
/// `["store", "apply", "inbound"]`; `mod.rs`, `lib.rs` and `main.rs` name their folder).
fn source_files() -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut dirs = vec![src_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src_dir()).expect("under src");
                let mut module: Vec<String> = rel
                    .with_extension("")
                    .iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                out.push((path, module));
            }
        }
    }
    out.sort();
    out
}

fn parse(path: &Path) -> (String, syn::File) {
    let text = std::fs::read_to_string(path).expect("read source");
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, file)
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

/// The crate paths one file refers to (`crate::…` and `super::…`, resolved), outside
/// `#[cfg(test)]` code: a test may use a higher module as its fixture (the emulator).
struct References {
    /// The module the visitor is in: the file's, plus inline `mod` blocks.
    module: Vec<String>,
    found: BTreeSet<Vec<String>>,
}

impl References {
    fn resolve(&mut self, segments: &[String]) {
        let mut base: Vec<String> = match segments.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("super") => self.module.clone(),
            _ => return,
        };
        let mut rest = segments;
        if rest[0] == "crate" {
            rest = &rest[1..];
        }
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        base.extend(rest.iter().cloned());
        self.found.insert(base);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.resolve(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(prefix, t)),
        }
    }
}

impl<'ast> Visit<'ast> for References {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) {
            return;
        }
        self.module.push(m.ident.to_string());
        syn::visit::visit_item_mod(self, m);
        self.module.pop();
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if !is_cfg_test(&u.attrs) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segments);
        syn::visit::visit_path(self, p);
    }
}

/// Module-to-module edges: between top-level modules, and between the files of one folder
/// (keyed by the folder, e.g. `emulator`).
#[derive(Default)]
struct Graphs {
    top: BTreeMap<String, BTreeSet<String>>,
    folders: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>>,
}

/// The modules declared `#[cfg(test)] mod name;`: their files are test code.
fn test_modules() -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for (path, module) in source_files() {
        for item in parse(&path).1.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && is_cfg_test(&m.attrs)
            {
                out.insert([module.clone(), vec![m.ident.to_string()]].concat());
            }
        }
    }
    out
}

fn import_graphs() -> Graphs {
    let mut graphs = Graphs::default();
    let modules: BTreeSet<Vec<String>> = source_files().into_iter().map(|(_, m)| m).collect();
    let tests = test_modules();
    for (path, module) in source_files() {
        if module.is_empty() {
            continue; // lib.rs and main.rs declare and start everything
        }
        if tests.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let (_, file) = parse(&path);
        let mut refs = References {
            module: module.clone(),
            found: BTreeSet::new(),
        };
        refs.visit_file(&file);
        for target in refs.found {
            add_edge(&mut graphs, &modules, &module, &target);
        }
    }
    graphs
}

fn add_edge(
    graphs: &mut Graphs,
    modules: &BTreeSet<Vec<String>>,
    from: &[String],
    target: &[String],
) {
    let Some(top) = target.first() else { return };
    if top != &from[0] {
        graphs
            .top
            .entry(from[0].clone())
            .or_default()
            .insert(top.clone());
        return;
    }
    // Inside one top-level module: the edge between the two files of the deepest folder that
    // holds both (e.g. `emulator/state.rs` → `emulator/media.rs`).
    let common = from.iter().zip(target).take_while(|(a, b)| a == b).count();
    let (Some(a), Some(b)) = (from.get(common), target.get(common)) else {
        return;
    };
    let folder = from[..common].to_vec();
    if modules.contains(&[folder.clone(), vec![b.clone()]].concat()) {
        graphs
            .folders
            .entry(folder)
            .or_default()
            .entry(a.clone())
            .or_default()
            .insert(b.clone());
    }
}

/// The strongly connected components with more than one member (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(lw));
                } else if self.stack.contains(&w.as_str()) {
                    let iw = self.index[w.as_str()];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|x| *x == v).expect("on stack");
                let component: Vec<String> = self.stack.drain(at..).map(str::to_owned).collect();
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

fn describe(graph: &BTreeMap<String, BTreeSet<String>>, circle: &[String]) -> String {
    let mut edges = Vec::new();
    for a in circle {
        for b in graph.get(a).into_iter().flatten() {
            if circle.contains(b) {
                edges.push(format!("{a} → {b}"));
            }
        }
    }
    edges.join(", ")
}

#[test]
fn no_import_circle_between_top_level_modules_or_inside_a_folder() {
    let graphs = import_graphs();
    let mut problems = Vec::new();
    for circle in circles(&graphs.top) {
        problems.push(format!("src/: {}", describe(&graphs.top, &circle)));
    }
    for (folder, graph) in &graphs.folders {
        for circle in circles(graph) {
            problems.push(format!(
                "src/{}/: {}",
                folder.join("/"),
                describe(graph, &circle)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "import circles (move the shared piece down, or give one side a small interface):\n{}",
        problems.join("\n")
    );
}

/// Every function with a body, as (name, first line, last line).
#[derive(Default)]
struct Functions(Vec<(String, usize, usize)>);

impl Functions {
    fn add(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        self.0.push((name.to_string(), start, end));
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.add(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        self.add(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.add(&f.sig.ident, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

#[test]
fn every_function_in_src_fits_on_a_screen() {
    let mut long = Vec::new();
    for (path, _) in source_files() {
        let (_, file) = parse(&path);
        let mut fns = Functions::default();
        fns.visit_file(&file);
        let rel = path
            .strip_prefix(src_dir())
            .expect("under src")
            .display()
            .to_string();
        for (name, start, end) in fns.0 {
            let lines = end - start + 1;
            let allowed = LONG_FN_ALLOWED
                .iter()
                .any(|(n, _)| *n == format!("{rel}::{name}"));
            if lines > MAX_FN_LINES && !allowed {
                long.push(format!("src/{rel}:{start} {name}: {lines} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions longer than {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn every_source_file_opens_with_a_module_comment() {
    let missing: Vec<String> = source_files()
        .into_iter()
        .filter(|(path, _)| {
            let (text, _) = parse(path);
            !text.starts_with("//!")
        })
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` saying what they own:\n{}",
        missing.join("\n")
    );
}

/// Every `fn` name defined in `tests/` and `src/`.
fn defined_functions() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = BTreeSet::new();
    let mut dirs = vec![root.join("tests"), root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut fns = Functions::default();
                fns.visit_file(&parse(&path).1);
                names.extend(fns.0.into_iter().map(|(n, _, _)| n));
            }
        }
    }
    names
}

/// The rows of ARCHITECTURE.md's invariant table: (invariant, the tests its last column names
/// as `file::test` in backquotes).
fn invariant_rows() -> Vec<(String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md");
    let text = std::fs::read_to_string(path).expect("ARCHITECTURE.md at the repository root");
    let section = text
        .split("## Invariants")
        .nth(1)
        .expect("ARCHITECTURE.md has an `## Invariants` section");
    section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with('|') && !l.starts_with("|--") && !l.starts_with("| #"))
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
            let tests = cells
                .last()
                .expect("a row has cells")
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            (cells.get(1).unwrap_or(&"").trim().to_owned(), tests)
        })
        .collect()
}

#[test]
fn every_invariant_in_architecture_md_names_tests_that_exist() {
    let defined = defined_functions();
    let rows = invariant_rows();
    assert!(
        rows.len() >= 12,
        "the invariant table lists {} rows",
        rows.len()
    );
    let mut problems = Vec::new();
    for (invariant, tests) in &rows {
        if tests.is_empty() {
            problems.push(format!("{invariant}: names no test"));
        }
        for test in tests {
            let name = test.rsplit("::").next().unwrap_or(test);
            if !defined.contains(name) {
                problems.push(format!("{invariant}: no test named {test}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
