//! Maps field paths (`numbers[1].agent`) to where they sit in the YAML source, so that errors
//! found after deserialization still point at file:line:column. Knows nothing of the model.

use std::cell::OnceCell;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, ScanError};

/// A 1-based position in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The start of the file.
    pub const START: Location = Location { line: 1, column: 1 };

    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Location {
            line: m.line().max(1),
            column: m.col() + 1,
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub location: Location,
    /// The parser's explanation.
    pub message: String,
}

/// Positions of every node of a YAML document, by field path.
#[derive(Debug)]
pub struct SourceMap<'a> {
    text: &'a str,
    /// Worked out when first asked for, unless built eagerly: a valid file needs no position,
    /// and for a file of 10,000 numbers this map was most of the time a load took.
    nodes: OnceCell<Nodes>,
}

/// The positions themselves.
#[derive(Debug, Default)]
struct Nodes {
    values: HashMap<String, Location>,
    keys: HashMap<String, Location>,
}

/// Parses `text` and records the position of every node; fails on a YAML syntax error.
fn walk(text: &str) -> Result<Nodes, SyntaxError> {
    let mut walker = Walker::default();
    Parser::new_from_str(text)
        .load(&mut walker, false)
        .map_err(|e: ScanError| SyntaxError {
            location: Location::from_marker(*e.marker()),
            message: e.info().to_owned(),
        })?;
    Ok(walker.map)
}

impl<'a> SourceMap<'a> {
    /// Parses `text` now and records the position of every node; fails on a YAML syntax error.
    pub fn build(text: &'a str) -> Result<SourceMap<'a>, SyntaxError> {
        Ok(SourceMap {
            text,
            nodes: OnceCell::from(walk(text)?),
        })
    }

    /// The map of `text`, parsed the first time a position is asked for. For text another
    /// parser already accepted; should this one refuse it, every position is the file's start.
    pub fn lazy(text: &'a str) -> SourceMap<'a> {
        SourceMap {
            text,
            nodes: OnceCell::new(),
        }
    }

    fn nodes(&self) -> &Nodes {
        self.nodes
            .get_or_init(|| walk(self.text).unwrap_or_default())
    }

    /// Where the value at `path` starts (`""` is the document root).
    pub fn value(&self, path: &str) -> Option<Location> {
        self.nodes().values.get(path).copied()
    }

    /// Where the mapping key naming `path` starts (`None` for sequence items and the root).
    pub fn key(&self, path: &str) -> Option<Location> {
        self.nodes().keys.get(path).copied()
    }

    /// The value at `path`, else that of its closest ancestor present in the file (a field left
    /// to its default is reported at the mapping that would hold it), else the start of the file.
    pub fn nearest(&self, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some(loc) = self.value(p) {
                return loc;
            }
            if p.is_empty() {
                return Location::START;
            }
            p = parent(p);
        }
    }
}

/// The path of the node holding `path`: `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
pub fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

/// `parent` + `.key`, without a leading dot at the root.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
        /// No key seen yet.
        empty: bool,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    map: Nodes,
    /// Depth inside a non-scalar mapping key, which has no path of its own.
    in_complex_key: usize,
}

impl Walker {
    /// Path of the node that starts now, or `None` when it is a mapping key (recorded here).
    fn place(&mut self, ev: &Event, loc: Location) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, key, empty }) => match key.take() {
                Some(k) => Some(join_key(path, &k)),
                None => {
                    if std::mem::take(empty) {
                        // yaml-rust2 marks a block mapping's start after its first key; the
                        // mapping starts where that key does.
                        if let Some(start) = self.map.values.get_mut(path.as_str()) {
                            *start = (*start).min(loc);
                        }
                    }
                    let k = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_owned(),
                    };
                    self.map.keys.entry(join_key(path, &k)).or_insert(loc);
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let loc = Location::from_marker(mark);
        if self.in_complex_key > 0 {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.in_complex_key += 1,
                Event::MappingEnd | Event::SequenceEnd => self.in_complex_key -= 1,
                _ => {}
            }
            return;
        }
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                if let Some(p) = self.place(&ev, loc) {
                    self.map.values.entry(p).or_insert(loc);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => match self.place(&ev, loc) {
                Some(p) => {
                    self.map.values.entry(p.clone()).or_insert(loc);
                    self.stack.push(match ev {
                        Event::MappingStart(..) => Frame::Map {
                            path: p,
                            key: None,
                            empty: true,
                        },
                        _ => Frame::Seq { path: p, next: 0 },
                    });
                }
                None => self.in_complex_key = 1,
            },
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
version: 1
listen:
  webhook: 127.0.0.1:8080
agents:
  echo: { kind: echo, prefix: \"> \" }
numbers:
  - phone_number_id: \"1\"
    agent: echo
  - phone_number_id: \"2\"
    agent: orders
    tags: [a, b]
";

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn values_by_path() {
        let map = SourceMap::build(DOC).unwrap();
        let cases = [
            ("", at(1, 1)),
            ("version", at(1, 10)),
            ("listen", at(3, 3)),
            ("listen.webhook", at(3, 12)),
            ("agents.echo", at(5, 9)),
            ("agents.echo.kind", at(5, 17)),
            ("agents.echo.prefix", at(5, 31)),
            ("numbers", at(7, 3)),
            ("numbers[0]", at(7, 5)),
            ("numbers[0].phone_number_id", at(7, 22)),
            ("numbers[1].agent", at(10, 12)),
            ("numbers[1].tags[1]", at(11, 15)),
            ("numbers[2]", None),
            ("listen.admin", None),
        ];
        for (path, want) in cases {
            assert_eq!(map.value(path), want, "{path}");
        }
    }

    #[test]
    fn keys_by_path() {
        let map = SourceMap::build(DOC).unwrap();
        let cases = [
            ("version", at(1, 1)),
            ("listen.webhook", at(3, 3)),
            ("agents.echo.prefix", at(5, 23)),
            ("numbers[1].agent", at(10, 5)),
            ("numbers[1]", None),
        ];
        for (path, want) in cases {
            assert_eq!(map.key(path), want, "{path}");
        }
    }

    #[test]
    fn nearest_falls_back_to_ancestors() {
        let map = SourceMap::build(DOC).unwrap();
        assert_eq!(Some(map.nearest("listen.admin")), at(3, 3));
        assert_eq!(Some(map.nearest("numbers[1].enabled")), at(9, 5));
        assert_eq!(map.nearest("policies.delivery"), Location::START);
    }

    #[test]
    fn a_lazy_map_answers_as_the_built_one() {
        let (built, lazy) = (SourceMap::build(DOC).unwrap(), SourceMap::lazy(DOC));
        for path in [
            "listen.webhook",
            "numbers[1].agent",
            "numbers[1].enabled",
            "x",
        ] {
            assert_eq!(lazy.value(path), built.value(path), "{path}");
            assert_eq!(lazy.key(path), built.key(path), "{path}");
            assert_eq!(lazy.nearest(path), built.nearest(path), "{path}");
        }
        assert_eq!(SourceMap::lazy("a: [1").nearest("a"), Location::START);
    }

    #[test]
    fn complex_keys_do_not_shift_paths() {
        let map = SourceMap::build("? [a, b]\n: 1\nc: 2\n").unwrap();
        assert_eq!(map.value("c"), at(3, 4));
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = SourceMap::build("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.location.line >= 2, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent("a.b[2]"), "a.b");
        assert_eq!(parent("a.b"), "a");
        assert_eq!(parent("a"), "");
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(join_key("a[0]", "b"), "a[0].b");
    }
}
